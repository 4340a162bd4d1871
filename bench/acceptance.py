"""The acceptance benchmark: Postfix's smtp-source against one target, with the latency probe beside it.

Two modes, both `-l 1024` (1 KB payload) from `sessions` parallel sessions:
- "new-conn": one run of `smtp-source -s S -m N`: a new connection for every message;
- "keep-conn": N / (S * per_conn) runs of `smtp-source -s S -m S*per_conn -d`: `-d` keeps each
  session's connection, and the sessions share the message count, so each connection carries
  about `per_conn` messages (smtp-source has no flag for messages per connection).
Throughput is messages sent / summed wall time of the smtp-source runs.  While they run, the probe
process (`bench.probe`) does up to `probe_count` whole transactions one after another, each timed;
it stops when smtp-source has finished, so fast targets give fewer samples (reported).

`combine` folds repeated runs (each on a fresh target) into one entry: the median msg/s, and the
latency percentiles over all probe samples of all runs together.

Afterwards the target's store is counted when it has one: every smtp-source message and every
probe transaction that got its 250 must be there.

Around the smtp-source runs, `bench.cpu` reads the server's CPU time (reported per message it
handled, probe transactions included) and how the machine's cores spent the time: a target that
leaves CPU time idle is limited by something else (`bench.cpu` says what).

Not responsible for: starting the target (the suite does, fresh for each mode) or formatting.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import MachineCPU, tree_cpu_seconds
from bench.targets import RCPT, REPO, SENDER, Target

SMTP_SOURCE = "/usr/sbin/smtp-source"
# A run's own figures, which `combine` replaces with totals or medians (or leaves in "runs").
_PER_RUN = (
    "probe_durations_ms", "stored", "stored_expected",
    "server_cpu_seconds", "server_cpu_us_per_msg", "machine_cpu",
)  # fmt: skip


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def smtp_source_argv(port: int, sessions: int, count: int, keep: bool) -> list[str]:
    argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", "1024"]
    argv += ["-f", SENDER, "-t", RCPT, "-M", "client.bench.test"]
    if keep:
        argv.append("-d")
    return [*argv, f"127.0.0.1:{port}"]


def run(
    target: Target,
    mode: str,
    total: int,
    sessions: int,
    per_conn: int,
    probe_count: int,
    timeout: float,
) -> dict[str, Any]:
    """Run one mode against a started target; return raw figures (an "error" key on failure)."""
    if mode == "new-conn":
        runs = [smtp_source_argv(target.port, sessions, total, keep=False)]
    else:
        chunk = sessions * per_conn
        if total % chunk:
            raise ValueError(f"total {total} is not a multiple of sessions*per_conn {chunk}")
        runs = [smtp_source_argv(target.port, sessions, chunk, keep=True)] * (total // chunk)
    result: dict[str, Any] = {
        "target": target.name,
        "mode": mode,
        "messages": total,
        "sessions": sessions,
        "smtp_source_runs": len(runs),
        "argv": runs[0],
    }
    with tempfile.TemporaryDirectory(prefix="mailwright-bench-probe-") as tmp:
        stop_file, ready_file = Path(tmp) / "stop", Path(tmp) / "ready"
        probe = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.probe", "--port", str(target.port), "--rcpt", RCPT),
                *("--count", str(probe_count), "--deadline", str(timeout)),
                *("--stop-file", str(stop_file), "--ready-file", str(ready_file)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        seconds = 0.0
        errors: list[str] = []
        try:
            # Python's start-up must not eat the first part of a short run.
            ready_by = time.monotonic() + 30
            while not ready_file.exists() and probe.poll() is None and time.monotonic() < ready_by:
                time.sleep(0.01)
            pid = target.pid
            server_cpu = tree_cpu_seconds(pid) if pid is not None else None
            machine = MachineCPU()
            for argv in runs:
                start = time.perf_counter()
                try:
                    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
                except subprocess.TimeoutExpired:
                    errors.append(f"smtp-source timed out after {timeout:.0f}s")
                    break
                seconds += time.perf_counter() - start
                if res.returncode != 0:
                    errors.append(f"smtp-source exit {res.returncode}: {res.stderr.strip()[-500:]}")
                    break
                if res.stderr.strip():
                    result.setdefault("warnings", []).append(res.stderr.strip()[-300:])
            result["machine_cpu"] = machine.split()
            if pid is not None and server_cpu is not None:
                result["server_cpu_seconds"] = tree_cpu_seconds(pid) - server_cpu
        finally:
            stop_file.touch()
            try:
                out, err = probe.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                probe.kill()
                out, err = probe.communicate(timeout=10)
    result["seconds"] = seconds
    if probe.returncode == 0:
        probe_data = json.loads(out)
        durations: list[float] = probe_data["durations"]
        result["probe_errors"] = probe_data["errors"][:5]
        result["probe_error_count"] = len(probe_data["errors"])
    else:
        durations = []
        errors.append(f"probe failed: {err.decode(errors='replace')[-500:]}")
        result["probe_error_count"] = 0
    result["probe_samples"] = len(durations)
    result["latency_p50_ms"] = _ms(percentile(durations, 50))
    result["latency_p99_ms"] = _ms(percentile(durations, 99))
    result["probe_durations_ms"] = [round(d * 1000, 3) for d in durations]
    if errors:
        result["error"] = "; ".join(errors)
        return result
    result["msg_per_s"] = total / seconds
    if "server_cpu_seconds" in result:
        result["server_cpu_us_per_msg"] = result["server_cpu_seconds"] / (total + len(durations)) * 1e6
    if target.stored is not None:
        expected = total + len(durations)
        stored = target.stored()
        result["stored"] = stored
        result["stored_expected"] = expected
        # A probe transaction that failed after its 250 (at QUIT) may be stored too.
        if not expected <= stored <= expected + result["probe_error_count"]:
            result["error"] = f"{target.name} stored {stored} messages, expected {expected}"
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry from repeated runs: median msg/s, percentiles over all probe samples pooled."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "runs": runs}
    rates = sorted(r["msg_per_s"] for r in runs)
    cpu = [r["server_cpu_us_per_msg"] for r in runs if "server_cpu_us_per_msg" in r]
    shares = [r["machine_cpu"] for r in runs if "machine_cpu" in r]
    durations = [d / 1000 for r in runs for d in r["probe_durations_ms"]]
    out = {k: v for k, v in runs[0].items() if k not in _PER_RUN}
    out.update(
        msg_per_s=statistics.median(rates),
        msg_per_s_runs=[r["msg_per_s"] for r in runs],
        latency_p50_ms=_ms(percentile(durations, 50)),
        latency_p99_ms=_ms(percentile(durations, 99)),
        probe_samples=len(durations),
        probe_error_count=sum(r["probe_error_count"] for r in runs),
        runs=[{k: v for k, v in r.items() if k != "probe_durations_ms"} for r in runs],
        probe_durations_ms=[d for r in runs for d in r["probe_durations_ms"]],
    )
    if len(cpu) == len(runs):
        out["server_cpu_us_per_msg"] = statistics.median(cpu)
    if len(shares) == len(runs):
        out["machine_cpu"] = {k: statistics.median(s[k] for s in shares) for k in shares[0]}
        out["machine_idle_pct"] = out["machine_cpu"]["idle"] * 100
    if all("stored" in r for r in runs):
        out["stored"] = sum(r["stored"] for r in runs)
        out["stored_expected"] = sum(r["stored_expected"] for r in runs)
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
