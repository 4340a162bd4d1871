"""Unit tests of `net.server.SMTPSession` alone: a stand-in transport records what is sent and a
stand-in store takes nothing (real servers and clients are in tests/interop and tests/e2e).

- The log line a session writes for operators when it refuses a sender or a recipient
  ("NOQUEUE: reject:", as Postfix writes it).  The line per accepted message is the queue
  writer's (tests/queue/test_sqlite_store.py, and through a real server
  tests/interop/test_smtplib.py).
- Idle time-outs (RFC 5321 4.5.3.2) as the sweeper (`ServerContext.expire`) applies them, driven
  with chosen clock readings; tests/e2e/test_timeouts.py measures them in real time.
- Reading stops with the 220 to STARTTLS, so the client's handshake stays in the socket for TLS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

from mailwright.limits.auth_failures import AuthFailureLimiter
from mailwright.limits.connections import ConnectionLimits
from mailwright.net.server import AuthBackend, ListenerRuntime, ServerContext, SMTPSession
from mailwright.policy.relay import RelayPolicy
from mailwright.protocol.reply import R, Reply, SMTPError
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


async def _session(
    store: Store, chunks: list[bytes], transport: Transport | None = None, *, tls: bool = False
) -> tuple[SMTPSession, Transport]:
    ctx = ServerContext(
        store=store,
        relay=RelayPolicy(("mx.test",), (), hostname="mx.test"),
        auth=AuthBackend(
            verify=lambda credentials, listener: asyncio.sleep(0, False),
            owns=lambda user, sender: True,
            limiter=AuthFailureLimiter(max_failures=5, window=60, lockout=60),
            sender_must_be_owned=False,
            stamp=lambda user: "stamp",
        ),
        limits=ConnectionLimits(10, 10),
        command_timeout=60,
        data_timeout=300,
    )
    listener = ListenerRuntime(
        name="mx:25", role="mx", settings=ServerSettings(hostname="mx.test", tls_available=tls),
        tls_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) if tls else None, add_missing_headers=False,
    )  # fmt: skip
    session = SMTPSession(ctx, listener)
    transport = transport or Transport()
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


class ReadingTransport(Transport):
    """Records whether it was reading, as a real transport delivers bytes only then."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class CommitStore(BodyStore):
    """Commits when the test resolves the future it hands out."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[str]] = []

    def commit(self, writer: Any, envelope: Any) -> Any:
        self.pending.append(asyncio.get_running_loop().create_future())
        return self.pending[-1]


@pytest.mark.parametrize("behind_a_message", [True, False])
def test_reading_stops_with_the_220_to_starttls(behind_a_message: bool) -> None:
    # Found by tests/e2e/test_wire_fuzz.py: a STARTTLS pipelined behind a message is answered
    # from the commit's callback, and the task that starts TLS runs a loop turn later. A
    # ClientHello that arrived in between was read into the engine, which drops what arrives
    # while it waits for the handshake: the handshake never completed (15 to 19 in 20 such
    # sessions against the prefork server hung until the client gave up).
    async def run() -> None:
        store, transport = CommitStore(), ReadingTransport()
        message = b"MAIL FROM:<>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\nhi\r\n.\r\n" if behind_a_message else b""
        chunk = b"EHLO client.example\r\n" + message + b"STARTTLS\r\n"
        session, _ = await _session(store, [chunk], transport, tls=True)
        if behind_a_message:
            assert len(store.pending) == 1 and b"220 2.0.0" not in b"".join(transport.sent)
            store.pending[0].set_result("QUEUEID")
            await asyncio.sleep(0)  # the commit's callback: 250 for the message, then 220
        assert transport.sent[-1].endswith(b"220 2.0.0 Ready to start TLS\r\n"), transport.sent
        assert session.task is not None and not session.task.done()  # start_tls has not run yet
        assert not transport.reading, "still reading after the 220: the ClientHello would be lost"
        session.connection_lost(None)  # the stand-in transport cannot start TLS

    asyncio.run(run())


class RefusingStore(Store):
    """Refuses to open a message, as a closing store or a worker that lost its master does."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    def open_message(self) -> Any:
        raise SMTPError(self.reply)


@pytest.mark.parametrize("command", [b"DATA\r\nhi\r\n.\r\n", b"BDAT 4 LAST\r\nhi\r\n"])
def test_a_store_that_refuses_to_open_a_message_is_answered_at_the_end_of_the_body(
    command: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # It was a traceback in the log ("session from ... failed") and a 451 that cut the session.
    async def run() -> Transport:
        chunks = [b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@mx.test>\r\n" + command + b"NOOP\r\n"]
        _, transport = await _session(RefusingStore(R.LOCAL_ERROR), chunks)
        return transport

    with caplog.at_level(logging.INFO):
        transport = asyncio.run(run())
    replies = b"".join(transport.sent).split(b"\r\n")
    assert replies[-3:] == [b"451 4.3.0 Local error in processing, try again later", b"250 2.0.0 OK", b""]
    assert not transport.closing
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_store_that_is_shutting_down_when_data_starts_gets_421_and_the_close() -> None:
    async def run() -> Transport:
        chunks = [b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n", b"hi\r\n.\r\n"]
        _, transport = await _session(RefusingStore(R.SHUTTING_DOWN), chunks)
        return transport

    transport = asyncio.run(run())
    assert b"".join(transport.sent).endswith(
        b"354 End data with <CR><LF>.<CR><LF>\r\n421 4.3.2 Service shutting down, closing connection\r\n"
    )
    assert transport.closing
