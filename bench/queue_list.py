"""The operator's queue listing: `mailwright queue list` beside Postfix's `postqueue -p` (mailq).

Two parts, each printed as a table:
1. Same load, both servers: each started fresh (`bench.targets`), filled by `smtp-source`
   (20 sessions, `--messages` of 1 KB, Postfix holding them), then listed `--repeat` times with
   output to /dev/null. Wall time per listing (median) and the listing process's peak RSS. Postfix's
   `postqueue -p` only relays what its `showq` daemon reads from the queue directories, so its
   RSS is the client's alone; the times compare like for like.
2. A large queue, mailwright alone: `--large` messages of two recipients each written straight into
   a queue database of the current schema (filling Postfix's queue through SMTP to that size would
   take minutes), then listed by this interpreter's mailwright and, with `--other PYTHON`, by
   another build's (as `bench.ab`): the figure that shows whether memory grows with the queue.

Every listing must report the number of messages it was given ("-- N KB in M messages." or
Postfix's "-- N Kbytes in M Requests."), or the run fails: a listing that stops early is no result.

Not a test and not part of `bench/run`'s table: run it by hand (`python3 -m bench.queue_list`).
Not responsible for: starting the servers (`bench.targets`) or the acceptance figures.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.acceptance import smtp_source_argv
from bench.targets import Target, start_mailwright, start_postfix
from mailwright.queue.model import next_queue_number
from mailwright.queue.sqlite import SQLiteQueueStore

GNU_TIME = "/usr/bin/time"  # Debian's package `time`
_COUNT = re.compile(rb"-- \d+ K(?:B|bytes) in (\d+) (?:message|Request)s?\.")


def listing(argv: list[str]) -> tuple[float, int, int]:
    """Run one listing with its output counted and dropped: (seconds, peak RSS KiB, messages listed).

    The peak comes from GNU time, whose child is forked from a process of ~2 MB: a child forked
    from this one would count this process's memory as its own (Linux carries the RSS before
    `exec` into `ru_maxrss`), a floor of some 40 MB under every figure."""
    with tempfile.NamedTemporaryFile(prefix="mailwright-bench-rss-") as rss:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        tail = b""
        while chunk := proc.stdout.read(1 << 16):
            tail = (tail + chunk)[-4096:]
        err = proc.communicate()[1]
        seconds = time.perf_counter() - start
        peak = Path(rss.name).read_text().strip().splitlines()
    found = _COUNT.search(tail)
    if proc.returncode != 0 or found is None or not peak or not peak[-1].isdigit():
        raise RuntimeError(f"{argv[0]} ... exit {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    return seconds, int(peak[-1]), int(found.group(1))


def measure(argv: list[str], expect: int, repeat: int) -> dict[str, float]:
    runs = [listing(argv) for _ in range(repeat)]
    for _, _, listed in runs:
        if listed != expect:
            raise RuntimeError(f"{argv[0]} ... listed {listed} messages, {expect} are queued")
    return {
        "seconds": statistics.median(r[0] for r in runs),
        "rss_mib": max(r[1] for r in runs) / 1024,
    }


def fill(target: Target, messages: int) -> None:
    assert target.stored is not None
    argv = smtp_source_argv(target.port, 20, messages, keep=False)
    res = subprocess.run(argv, capture_output=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"smtp-source against {target.name}: {res.stderr.decode(errors='replace')[-300:]}")
    deadline = time.monotonic() + 120
    while (stored := target.stored()) < messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target.name} holds {stored} of {messages} messages")
        time.sleep(0.5)


def same_load(messages: int, repeat: int) -> list[tuple[str, dict[str, float]]]:
    rows = []
    for start in (start_mailwright, start_postfix):
        with start() as target:
            assert target.list_queue is not None
            fill(target, messages)
            rows.append((target.name, measure(target.list_queue, messages, repeat)))
    return rows


def large_queue(directory: Path, messages: int) -> None:
    """`messages` queued messages of two recipients each, as the writer stores them."""

    async def make_schema() -> None:
        await SQLiteQueueStore(directory).close()

    asyncio.run(make_schema())
    db = sqlite3.connect(directory / "queue.db")
    try:
        number, now, body = 0, time.time() - messages / 1000, b"x" * 1024
        with db:
            for k in range(messages):
                number = next_queue_number(number, now + k / 1000)
                db.execute(
                    "INSERT INTO messages (id, sender, mail_params, client_ip, helo, tls, received_at, size,"
                    " body) VALUES (?, ?, 'BODY=8BITMIME', '127.0.0.1', 'client.bench.test', 1, ?, ?, ?)",
                    (number, f"sender{k}@client.bench.test", now + k / 1000, len(body), body),
                )
                db.executemany(
                    "INSERT INTO recipients (message_id, idx, address) VALUES (?, ?, ?)",
                    [(number, i, f"rcpt{i}-{k}@bench.test") for i in range(2)],
                )
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.queue_list", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="same-load part (default 20,000)")
    parser.add_argument("--large", type=int, default=200_000, help="large-queue part (default 200,000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--other", default=None, metavar="PYTHON", help="also list with this build")
    args = parser.parse_args(argv)
    if not Path(GNU_TIME).exists():
        print(f"{GNU_TIME} is missing: apt-get install time", file=sys.stderr)
        return 1

    print(f"1. {args.messages:,} messages queued by smtp-source, listed {args.repeat} times (median):")
    rows = same_load(args.messages, args.repeat)
    for name, m in rows:
        print(f"   {name:<10} {m['seconds']:7.2f} s  {m['rss_mib']:7.1f} MiB peak RSS of the listing process")
    (_, mw), (_, pf) = rows
    print(f"   time ratio Postfix / mailwright: {pf['seconds'] / mw['seconds']:.2f}")

    print(f"2. {args.large:,} messages of two recipients, mailwright alone:")
    with tempfile.TemporaryDirectory(prefix="mailwright-bench-list-") as tmp:
        directory = Path(tmp)
        large_queue(directory, args.large)
        for python in [sys.executable, *([args.other] if args.other else [])]:
            cmd = [python, "-m", "mailwright.cli.queue_cmd", "list", "--queue-dir", str(directory)]
            m = measure(cmd, args.large, args.repeat)
            print(f"   {python:<40} {m['seconds']:7.2f} s  {m['rss_mib']:7.1f} MiB peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
