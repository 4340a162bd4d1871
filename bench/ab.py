"""Interleaved A/B of two mailwright builds under the acceptance load (new connection per message).

    python3 -m bench.ab --other /path/to/venv/bin/python [--pairs 7] [--messages 10000]

"this" is the mailwright installed for the running interpreter; "other" is the one installed for
`--other`, for example a venv into which an older commit was installed from a `git worktree`.
Each pair starts a fresh server of each build (fresh state directory, SQLite queue, fsync, the
default master + workers), runs `smtp-source -s 20 -m N -l 1024` against it, checks that all N
messages were stored, and reads the CPU time of the server's processes from /proc; the order
alternates from pair to pair, so a host that speeds up or slows down during the run favours
neither build.  It prints every run and the medians: msg/s and server CPU µs per message.

Why a separate tool: single runs vary by ±15 % on the machines we measure on, so a change to
the server is judged by several interleaved pairs, not by two suites hours apart.

Not part of `bash bench/run`, and not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench.acceptance import smtp_source_argv
from bench.cpu import tree_cpu_seconds
from bench.targets import start_mailwright


def one_run(python: str, messages: int, sessions: int) -> tuple[float, float]:
    """(msg/s, server CPU µs per message) for one fresh server of the build behind `python`."""
    with start_mailwright(python) as target:
        assert target.pid is not None and target.stored is not None
        cpu0, t0 = tree_cpu_seconds(target.pid), time.monotonic()
        subprocess.run(smtp_source_argv(target.port, sessions, messages, keep=False), check=True, timeout=600)
        elapsed, cpu = time.monotonic() - t0, tree_cpu_seconds(target.pid) - cpu0
        stored = target.stored()
        if stored != messages:
            raise SystemExit(f"{python}: {stored} of {messages} messages stored")
    return messages / elapsed, cpu / messages * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m bench.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="interpreter with the other build installed")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--sessions", type=int, default=20)
    args = ap.parse_args(argv)
    builds = {"this": sys.executable, "other": args.other}
    rates: dict[str, list[float]] = {name: [] for name in builds}
    cpus: dict[str, list[float]] = {name: [] for name in builds}
    for pair in range(args.pairs):
        order = list(builds) if pair % 2 == 0 else list(reversed(builds))
        for name in order:
            rate, cpu = one_run(builds[name], args.messages, args.sessions)
            rates[name].append(rate)
            cpus[name].append(cpu)
            line = f"pair {pair + 1}, {name:5}: {rate:7,.0f} msg/s, server CPU {cpu:4.0f} µs/message"
            print(line, flush=True)
    ahead = sum(a > b for a, b in zip(rates["this"], rates["other"], strict=True))
    for name in builds:
        print(
            f"{name:5} median: {statistics.median(rates[name]):7,.0f} msg/s, "
            f"server CPU {statistics.median(cpus[name]):4.0f} µs/message"
        )
    print(f"this build ahead in {ahead} of {args.pairs} pairs")


if __name__ == "__main__":
    main()
