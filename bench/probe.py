"""The latency probe: sequential whole SMTP transactions while a load generator runs, as a process.

`python3 -m bench.probe --port P --count N --stop-file F --deadline S [--ready-file R]` performs
up to N transactions (connect, EHLO, MAIL, RCPT, DATA with a 1 KB message, 250, QUIT, 221), one
after the other, each on a new connection; it stops early when the file F appears (the load
generator has finished) or after S seconds.  It touches R (if given) just before its first
transaction, so the caller can start the load generator only once the probe is ready.  It prints
one JSON object: {"durations": [seconds...], "errors": ["..."]}.

It runs as its own process so its timing is not disturbed by the suite's own work.

Not responsible for: percentiles (the suite computes them) or generating load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.smtp_client import message, transaction


def main() -> None:
    ap = argparse.ArgumentParser(prog="python3 -m bench.probe")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--ready-file", help="touched once the probe is about to start")
    ap.add_argument("--deadline", type=float, default=300.0)
    ap.add_argument("--sender", default="probe@client.bench.test")
    ap.add_argument("--rcpt", required=True)
    args = ap.parse_args()
    durations: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + args.deadline
    i = 0
    if args.ready_file:
        Path(args.ready_file).touch()
    while i < args.count and time.monotonic() < end and not os.path.exists(args.stop_file):
        body = message(1024, args.sender, args.rcpt, f"probe.{os.getpid()}.{i}")
        try:
            durations.append(transaction(args.host, args.port, args.sender, args.rcpt, body))
        except (OSError, RuntimeError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)  # a refused connection must not turn into a busy loop
        i += 1
    print(json.dumps({"durations": durations, "errors": errors}))


if __name__ == "__main__":
    main()
