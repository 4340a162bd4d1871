"""Unit tests of `net.server.SMTPSession` alone: a stand-in transport records what is sent and a
stand-in store takes nothing (real servers and clients are in tests/interop and tests/e2e).

- The log line a session writes for operators when it refuses a sender or a recipient
  ("NOQUEUE: reject:", as Postfix writes it).  The line per accepted message is the queue
  writer's (tests/queue/test_sqlite_store.py, and through a real server
  tests/interop/test_smtplib.py).
- Idle time-outs (RFC 5321 4.5.3.2) as the sweeper (`ServerContext.expire`) applies them, driven
  with chosen clock readings; tests/e2e/test_timeouts.py measures them in real time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mailwright.limits.auth_failures import AuthFailureLimiter
from mailwright.limits.connections import ConnectionLimits
from mailwright.net.server import AuthBackend, ListenerRuntime, ServerContext, SMTPSession
from mailwright.policy.relay import RelayPolicy
from mailwright.protocol.server import ServerSettings


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.7", 50000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Store:
    """Takes no message: a refused recipient never opens one."""

    def open_message(self) -> Any:
        raise AssertionError("no message may be opened")

    def commit(self, writer: Any, envelope: Any) -> Any:
        raise AssertionError("nothing may be committed")

    def abort(self, writer: Any) -> None:
        pass


async def _session(store: Store, chunks: list[bytes]) -> tuple[SMTPSession, Transport]:
    ctx = ServerContext(
        store=store,
        relay=RelayPolicy(("mx.test",), (), hostname="mx.test"),
        auth=AuthBackend(
            verify=lambda credentials, listener: asyncio.sleep(0, False),
            owns=lambda user, sender: True,
            limiter=AuthFailureLimiter(max_failures=5, window=60, lockout=60),
            sender_must_be_owned=False,
        ),
        limits=ConnectionLimits(10, 10),
        command_timeout=60,
        data_timeout=300,
    )
    listener = ListenerRuntime(
        name="mx:25", role="mx", settings=ServerSettings(hostname="mx.test"), tls_context=None,
        add_missing_headers=False,
    )  # fmt: skip
    session, transport = SMTPSession(ctx, listener), Transport()
    session.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        session.data_received(chunk)
    return session, transport


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mailwright.smtpd"]


def test_a_refused_recipient_gets_a_noqueue_line(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> list[bytes]:
        store = Store()
        chunks = [b"EHLO client.example\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<someone@example.org>\r\n"]
        _, transport = await _session(store, chunks)
        return transport.sent

    with caplog.at_level(logging.INFO, logger="mailwright.smtpd"):
        sent = asyncio.run(run())
    assert b"554 5.7.1 Relay access denied\r\n" in b"".join(sent)
    assert _lines(caplog) == [
        "NOQUEUE: reject: RCPT from client.example[127.0.0.7]: 554 5.7.1 Relay access denied;"
        " from=<> to=<someone@example.org> listener=mx:25"
    ]


class Writer:
    def write(self, data: bytes) -> None:
        pass


class BodyStore(Store):
    """Opens a message (its body goes nowhere) but commits none."""

    def open_message(self) -> Any:
        return Writer()


def test_a_time_out_runs_from_our_last_reply_and_never_fires_early() -> None:
    async def run() -> None:
        session, transport = await _session(Store(), [b"EHLO client.example\r\n"])
        ctx = session.ctx
        ctx.expire(100.0)  # the first sweep after the EHLO's reply starts its command_timeout
        assert session.deadline == 160.0
        ctx.expire(159.9)
        assert not transport.closing
        session.data_received(b"NOOP\r\n")
        ctx.expire(161.0)  # past the old deadline, but a reply went out since: it moves instead
        assert not transport.closing and session.deadline == 221.0
        session.data_received(b"NOO")  # bytes of a line that never ends are no activity
        ctx.expire(220.9)
        assert not transport.closing
        ctx.expire(221.1)
        assert transport.closing
        assert transport.sent[-1].startswith(b"421 4.4.2 "), transport.sent

    asyncio.run(run())


def test_inside_data_the_data_time_out_runs_from_the_last_bytes() -> None:
    async def run() -> None:
        chunks = [b"EHLO client.example\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<bob@mx.test>\r\n", b"DATA\r\n"]
        session, transport = await _session(BodyStore(), chunks)
        assert transport.sent[-1].startswith(b"354 ")
        ctx = session.ctx
        ctx.expire(100.0)  # after the 354: data_timeout, not command_timeout
        assert session.deadline == 400.0
        session.data_received(b"Subject: slow\r\n")  # no reply, but inside DATA any bytes count
        ctx.expire(399.0)
        assert session.deadline == 699.0
        ctx.expire(699.5)
        assert transport.closing and transport.sent[-1].startswith(b"421 4.4.2 ")

    asyncio.run(run())
