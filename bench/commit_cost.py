"""The queue committer alone: CPU per message against the number of messages per transaction.

    python3 -m bench.commit_cost [--batches 1,3,10,20] [--messages 6000] [--rounds 1] [--dir DIR]

For each batch size, a fresh SQLite queue (in a temporary directory under `--dir`, by default
the system's, where the suite's servers keep theirs; `synchronous=FULL`, the shipped schema)
takes `--messages` messages of 1 KB with one recipient, in transactions of that many messages,
through `BatchCommitter.commit` exactly as the master drives it (bodies handed over inline, as a
worker hands them). It prints the process's user and system CPU per message (`getrusage`, after
300 warm-up messages), wall time per message and the number of transactions. Rounds interleave
the batch sizes.

Why: the committer's cost has a large part per transaction (the WAL frames, the four statements)
and a part per message (the parameters, one b-tree insert per table and index), and what the
master pays depends on how many messages share a commit (about three at full load on two cores).
CPU, not wall time, is the yardstick: the fsync's spread swamps wall-time differences between
schemas, but a host whose cores are all busy pays for the CPU. To compare two builds, run this
with each build's interpreter (for example one installed from a `git worktree` into a venv).

Not part of `bash bench/run`, and not a test.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench.smtp_client import message
from bench.targets import RCPT, SENDER
from mailwright.queue.committer import Job
from mailwright.queue.model import Envelope, Recipient
from mailwright.queue.spool import HandedOverBody
from mailwright.queue.sqlite import SQLiteQueueStore

WARM_UP = 300
BODY = message(1024, SENDER, RCPT, "commit-cost")  # built as the suite's probe builds its 1 KB messages


def one_size(batch: int, messages: int, parent: str | None) -> tuple[float, float, float, int]:
    """(user µs, system µs, wall µs) per message and the transactions, for one fresh queue."""
    root = Path(tempfile.mkdtemp(prefix="mailwright-commit-cost-", dir=parent))
    store = SQLiteQueueStore(root, writer_thread=False)
    try:
        committer = store.committer
        env = Envelope(
            SENDER,
            (Recipient(RCPT),),
            client_ip="127.0.0.1",
            helo="client.bench.test",
            received_at=time.time(),
        )

        def commit(count: int) -> int:
            done = 0
            while done < count:
                jobs = [
                    Job(HandedOverBody(store.spool, len(BODY), BODY, None), env, None) for _ in range(batch)
                ]
                for _, queue_id, error in committer.commit(jobs):
                    if error is not None or queue_id is None:
                        raise SystemExit(f"commit failed: {error}")
                done += batch
            return done

        commit(WARM_UP)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        transactions = committer.stats.transactions
        done = commit(messages)
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
        return (
            (after.ru_utime - before.ru_utime) / done * 1e6,
            (after.ru_stime - before.ru_stime) / done * 1e6,
            wall / done * 1e6,
            committer.stats.transactions - transactions,
        )
    finally:
        store.close_writer_role()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,3,10,20", help="messages per transaction, comma-separated")
    parser.add_argument("--messages", type=int, default=6000, help="messages per batch size and round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where the queues go (default: the system's temp dir)")
    args = parser.parse_args()
    sizes = [int(part) for part in args.batches.split(",")]
    if not sizes or min(sizes) < 1 or args.messages < 1 or args.rounds < 1:
        parser.error("batch sizes, --messages and --rounds must be positive")
    for round_no in range(1, args.rounds + 1):
        for batch in sizes:
            user, system, wall, transactions = one_size(batch, args.messages, args.dir)
            print(
                f"round {round_no}, batch {batch:3d}: CPU {user + system:6.1f} µs/message"
                f" (user {user:5.1f}, system {system:5.1f}), wall {wall:6.1f} µs/message,"
                f" {transactions} transactions",
                flush=True,
            )


if __name__ == "__main__":
    main()
