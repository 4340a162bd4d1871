"""The aiosmtpd peer: an aiosmtpd SMTP server whose handler stores nothing, as its own process.

`python3 -m bench.aiosmtpd_peer --port P [--loop uvloop|asyncio]` listens on 127.0.0.1:P and
answers "250 OK" to every DATA without keeping the message (so it measures aiosmtpd's protocol
handling only: no disk, no fsync).  The event loop is uvloop by default, like mailwright's, so the
comparison is between the servers' code, not between event loops.

Settings that differ from aiosmtpd's defaults, and why: `hostname` is given (the default calls
socket.getfqdn() for every connection, a DNS lookup); `data_size_limit` is 64 MiB (the default,
32 MiB, would refuse the 50 MB message benchmark).  aiosmtpd enforces no per-command call limit
by default (command_call_limit=None), so 100 messages per connection are accepted.

Not responsible for: TLS, AUTH or storing mail.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from aiosmtpd.smtp import SMTP


class NullHandler:
    """Accept every message and drop it."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = NullHandler()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.bench.test", data_size_limit=64 * 1024 * 1024),
        host="127.0.0.1",
        port=port,
        backlog=1024,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python3 -m bench.aiosmtpd_peer")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = ap.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.port))
    else:
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
