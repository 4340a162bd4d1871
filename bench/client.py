"""The client benchmark: N messages of 1 KB sent to smtp-sink by the Python SMTP clients people use.

Each client sends the same `EmailMessage` (1 KB body) N times, one after another, the way an
application usually does:
- `aiosmtplib.send(...)` once per message: a new connection (connect, EHLO, MAIL, RCPT, DATA,
  QUIT) for every message, the usual call in asyncio code;
- aiosmtplib with one `SMTP` connection reused for all messages (`send_message` each time);
- `smtplib.SMTP(...)` as a context manager per message, the usual blocking code (Django opens a
  connection per `send_mail` the same way);
- smtplib with one connection reused.
Throughput is messages / wall time of the whole loop; every message must be accepted (smtp-sink
answers 250 to everything), or the run is an error.

mailwright's own client (`mailwright send`'s library, pooled) joins this table when it exists:
the issue's target is at least 5x `aiosmtplib.send` per message, and faster than aiosmtplib when
both reuse one connection. Until then these are the figures that target is measured against.

Not responsible for: starting smtp-sink (the suite does), or the server side of anything.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from bench.targets import RCPT, SENDER, Target

MODES = {
    "aiosmtplib-per-message": "aiosmtplib, `aiosmtplib.send()` per message (a connection each)",
    "aiosmtplib-reused": "aiosmtplib, one connection reused",
    "smtplib-per-message": "smtplib, `with smtplib.SMTP()` per message (a connection each)",
    "smtplib-reused": "smtplib, one connection reused",
}


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = RCPT
    msg["Subject"] = "client benchmark"
    msg.set_content(("0123456789abcdefghijklmnopqrstuvwxyz" * 2 + "\n") * 14)  # ~1 KB
    return msg


def _aiosmtplib_per_message(port: int, msg: EmailMessage, count: int, timeout: float) -> None:
    async def go() -> None:
        for _ in range(count):
            await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=timeout, start_tls=False)

    asyncio.run(go())


def _aiosmtplib_reused(port: int, msg: EmailMessage, count: int, timeout: float) -> None:
    async def go() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=timeout, start_tls=False) as smtp:
            for _ in range(count):
                await smtp.send_message(msg)

    asyncio.run(go())


def _smtplib_per_message(port: int, msg: EmailMessage, count: int, timeout: float) -> None:
    for _ in range(count):
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as smtp:
            smtp.send_message(msg)


def _smtplib_reused(port: int, msg: EmailMessage, count: int, timeout: float) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as smtp:
        for _ in range(count):
            smtp.send_message(msg)


SENDERS: dict[str, Callable[[int, EmailMessage, int, float], None]] = {
    "aiosmtplib-per-message": _aiosmtplib_per_message,
    "aiosmtplib-reused": _aiosmtplib_reused,
    "smtplib-per-message": _smtplib_per_message,
    "smtplib-reused": _smtplib_reused,
}


def run(target: Target, count: int, timeout: float) -> dict[str, Any]:
    """Every client mode against the started sink; {"modes": {mode: figures}, "messages": count}.
    A client error (a refusal raises in both libraries) makes the whole entry an error."""
    msg = message()
    modes: dict[str, Any] = {}
    for mode, send in SENDERS.items():
        start = time.perf_counter()
        send(target.port, msg, count, timeout)
        seconds = time.perf_counter() - start
        modes[mode] = {"msg_per_s": count / seconds, "seconds": seconds}
    return {"target": target.name, "messages": count, "modes": modes}
