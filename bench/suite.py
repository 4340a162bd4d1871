"""`python3 -m bench.suite [--smoke] [--only NAME[,NAME]] [--no-readme]`: run the benchmarks, report.

Benchmarks (names for --only): `new-conn` and `keep-conn` (smtp-source acceptance, see
`acceptance`), `idle` (idle connections, see `idle`), `large` (one big message, see `large`),
`client` (Python SMTP clients sending to smtp-sink, see `client`), `end-to-end` (accepted and
relayed to smtp-sink until the queue is empty, see `endtoend`), `dkim` (signing, see `signing`).
Targets (also names for --only): `mailwright`, `postfix`, `aiosmtpd`, `smtp-sink`.  Naming only
targets runs every benchmark against them; naming only benchmarks runs them against every target.

Every target is started fresh for every benchmark and stopped afterwards.  The results go to
bench/results/<UTC timestamp>.json and bench/results/latest.md (a smoke run writes
bench/results/smoke/latest.{json,md}, ignored by git), the table is printed, and unless
--no-readme or --smoke the README section between the bench markers is replaced, and with it the
table of every suite run in docs/performance.md (`bench.history`).

Exit status: 0 when every measurement that ran succeeded (a peer that cannot run here, like a
second Postfix instance without root, is reported with the reason and does not fail the run),
1 otherwise, 2 for bad arguments.

Not responsible for: installing the peers (bench/run does).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import acceptance, client, endtoend, history, idle, large, postfix_instance, report, signing
from bench.targets import REPO, STARTERS, Target, start_postfix_relay
from mailwright.build_info import build_kind

BENCHMARKS = ["new-conn", "keep-conn", "idle", "large", "client", "end-to-end", "dkim"]
# Postfix is left out of idle (one smtpd process per connection, default_process_limit = 100) and
# large (not asked for); smtp-sink stores nothing and is only the load generator's ceiling.
PER_BENCHMARK = {
    "new-conn": list(STARTERS),
    "keep-conn": list(STARTERS),
    "idle": ["mailwright", "aiosmtpd"],
    "large": ["mailwright", "aiosmtpd"],
    "client": ["smtp-sink"],  # the server the clients send to
    "end-to-end": ["postfix"],  # mailwright joins when it delivers
    "dkim": [],  # no server: dkimpy signs in this process (mailwright joins when it signs)
}
NOT_YET_MEASURABLE = [
    "end-to-end (accept, queue, deliver to smtp-sink): mailwright has no delivery yet "
    "(accepted mail waits in the queue); the end-to-end table gives Postfix's figure it will be "
    "measured against",
    "client library throughput against smtp-sink: mailwright's asyncio client library is not built "
    "yet (only the sans-IO client engine exists); the client table gives the peers it will be "
    "measured against",
    "DKIM signing rate: mailwright does not sign yet; the DKIM table gives dkimpy's figures it will "
    "be measured against",
]
POSTFIX_IDLE = (
    "Postfix idle connections: smtpd is one process per connection and default_process_limit is 100, "
    "so 10,000 idle connections would measure a configuration, not Postfix"
)


@dataclass(frozen=True)
class Params:
    messages: int
    sessions: int
    per_conn: int
    probe_count: int
    idle_connections: int
    greeting_samples: int
    large_bytes: int
    client_messages: int
    signatures: int
    timeout: float
    repeat: int  # acceptance and end-to-end runs per target (and mode), each on a fresh target; medians


FULL = Params(10_000, 20, 100, 200, 10_000, 50, 50_000_000, 1_000, 1_000, 300.0, 5)
SMOKE = Params(400, 20, 10, 20, 200, 10, 2_000_000, 50, 20, 60.0, 1)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return {
        "nproc": _cmd(["nproc"]) or str(os.cpu_count()),
        "free": _cmd(["free", "-b"]),
        "cpu_model": cpu,
        "mem_total_gib": mem_kib / 1024 / 1024,
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    commit = _cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])
    modified = ", src modified" if dirty else ""
    return {
        "python": platform.python_version(),
        # bench/run's venv links to the interpreter it was made from: name that one.
        "python_path": os.path.realpath(sys.executable),
        "uvloop": dist("uvloop"),
        "postfix": postfix_instance.version(),
        "aiosmtpd": dist("aiosmtpd"),
        "aiosmtplib": dist("aiosmtplib"),
        "dkimpy": dist("dkimpy"),
        "mailwright": f"{dist('mailwright')} ({commit or 'no git'}{modified}, {build_kind()})",
    }


def _cmd(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    return ""


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], list[str]]:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny counts (< 60 s), for the test suite")
    ap.add_argument("--only", default="", help=f"comma-separated names from {BENCHMARKS + list(STARTERS)}")
    ap.add_argument("--no-readme", action="store_true", help="do not touch README.md or docs/performance.md")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in BENCHMARKS and n not in STARTERS]
    if unknown:
        ap.error(f"unknown name(s) for --only: {', '.join(unknown)}")
    benches = [b for b in BENCHMARKS if b in names] or BENCHMARKS
    targets = [t for t in STARTERS if t in names] or list(STARTERS)
    return args, benches, targets


def _measure(
    res: dict[str, Any],
    name: str,
    fn: Callable[[Any], dict[str, Any]],
    starter: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    label: str | None = None,
) -> dict[str, Any] | None:
    """Start a fresh `name` (with `starter`, or its usual starter), run `fn` on it, stop it; None
    when the target cannot run here.  `label` names it in the notes when it is not set up as usual."""
    start = time.monotonic()
    print(f"  {label or name} ...", end="", flush=True)
    try:
        with (starter or STARTERS[name])() as target:
            res.setdefault("targets", {})[label or name] = target.detail
            entry = fn(target)
    except postfix_instance.PostfixUnavailable as exc:
        res["unavailable"]["postfix"] = f"no private Postfix instance: {exc}"
        print(f" unavailable: {exc}")
        return None
    except Exception as exc:
        entry = {"target": name, "error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()
    figure = entry.get("error") or ", ".join(
        [f"{k}={v:.1f}" for k, v in entry.items() if k in _HEADLINE and isinstance(v, float)]
        + [f"{mode} msg_per_s={m['msg_per_s']:.1f}" for mode, m in entry.get("modes", {}).items()]
    )
    print(f" {figure} ({time.monotonic() - start:.1f} s)", flush=True)
    return entry


_HEADLINE = {"msg_per_s", "latency_p50_ms", "latency_p99_ms", "rss_kib", "greeting_p99_ms", "mb_per_s"}


def _acceptance(params: Params, mode: str) -> Callable[[Target], dict[str, Any]]:
    def measure(target: Target) -> dict[str, Any]:
        p = params
        return acceptance.run(target, mode, p.messages, p.sessions, p.per_conn, p.probe_count, p.timeout)

    return measure


def run(params: Params, benches: list[str], targets: list[str], smoke: bool) -> dict[str, Any]:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    res: dict[str, Any] = {
        "timestamp": stamp,
        "smoke": smoke,
        "machine": machine(),
        "versions": versions(),
        "parameters": asdict(params),
        "acceptance": {},
        "unavailable": {},
        "not_yet_measurable": NOT_YET_MEASURABLE,
    }
    res["parameters"]["nofile_limit"] = idle.raise_nofile(params.idle_connections + 2000)
    for bench in benches:
        chosen = [t for t in PER_BENCHMARK[bench] if t in targets]
        if bench in ("new-conn", "keep-conn"):
            runs: dict[str, list[dict[str, Any]]] = {}
            # Round robin over the targets, so a slow spell of the machine hits them all alike.
            for rep in range(params.repeat):
                print(f"{bench} ({rep + 1}/{params.repeat}):", flush=True)
                for name in chosen:
                    if name == "postfix" and "postfix" in res["unavailable"]:
                        continue
                    entry = _measure(res, name, _acceptance(params, bench))
                    if entry is not None:
                        runs.setdefault(name, []).append(entry)
            res["acceptance"][bench] = {name: acceptance.combine(r) for name, r in runs.items()}
        elif bench == "dkim":
            print(f"{bench}:", flush=True)
            try:
                res["dkim"] = {"dkimpy": signing.run(params.signatures)}
            except Exception as exc:
                res["dkim"] = {"dkimpy": {"error": f"{type(exc).__name__}: {exc}"}}
                traceback.print_exc()
            rates = res["dkim"]["dkimpy"].get("algorithms", {})
            said = ", ".join(f"{a}={r['sig_per_s']:.1f}/s" for a, r in rates.items())
            print(f"  dkimpy {said}", flush=True)
        elif bench == "end-to-end":
            relayed: list[dict[str, Any]] = []
            for rep in range(params.repeat):
                print(f"{bench} ({rep + 1}/{params.repeat}):", flush=True)
                if "postfix" in chosen and "postfix" not in res["unavailable"]:
                    relay = functools.partial(
                        endtoend.run, total=params.messages, sessions=params.sessions, timeout=params.timeout
                    )
                    entry = _measure(res, "postfix", relay, start_postfix_relay, "postfix (end-to-end)")
                    if entry is not None:
                        relayed.append(entry)
            if relayed:
                res["end-to-end"] = {"postfix": endtoend.combine(relayed)}
        else:
            print(f"{bench}:", flush=True)
            where = res.setdefault(bench, {})
            for name in chosen:
                if bench == "idle":
                    entry = _measure(
                        res,
                        name,
                        lambda t: idle.run(
                            t, params.idle_connections, params.greeting_samples, params.timeout
                        ),
                    )
                elif bench == "client":
                    n, limit = params.client_messages, params.timeout
                    entry = _measure(res, name, functools.partial(client.run, count=n, timeout=limit))
                else:
                    entry = _measure(res, name, lambda t: large.run(t, params.large_bytes, params.timeout))
                if entry is not None:
                    where[name] = entry
            if bench == "idle" and "postfix" in targets:
                res["unavailable"]["postfix (idle)"] = POSTFIX_IDLE
    return res


def main(argv: list[str] | None = None) -> int:
    args, benches, targets = parse(argv)
    params = SMOKE if args.smoke else FULL
    started = time.monotonic()
    res = run(params, benches, targets, args.smoke)
    res["wall_seconds"] = time.monotonic() - started
    md = report.markdown(res)
    results = REPO / "bench" / "results"
    if args.smoke:
        report.write_json(res, results / "smoke" / "latest.json")
        (results / "smoke" / "latest.md").write_text(md)
    else:
        name = res["timestamp"].replace(":", "").replace("-", "")
        report.write_json(res, results / f"{name}.json")
        (results / "latest.md").write_text(md)
        if not args.no_readme:
            report.update_readme(REPO / "README.md", md)
            history.update_doc()
    print()
    print(md)
    print(f"total {res['wall_seconds']:.0f} s")
    return 1 if report.has_errors(res) else 0


if __name__ == "__main__":
    sys.exit(main())
