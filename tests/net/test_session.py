"""Unit tests of `net.server.SMTPSession` alone: a stand-in transport records what is sent and a
stand-in store takes nothing (real servers and clients are in tests/interop and tests/e2e).

- The log line a session writes for operators when it refuses a sender or a recipient
  ("NOQUEUE: reject:", as Postfix writes it).  The line per accepted message is the queue
  writer's (tests/queue/test_sqlite_store.py, and through a real server
  tests/interop/test_smtplib.py).
- Idle time-outs (RFC 5321 4.5.3.2) as the sweeper (`ServerContext.expire`) applies them, driven
  with chosen clock readings; tests/e2e/test_timeouts.py measures them in real time.
- Reading stops with the 220 to STARTTLS, so the client's handshake stays in the socket for TLS.
- IPv6 peers as no loopback socket can produce them (a zone, an IPv4-mapped address, two
  addresses of one /64): what the Received header, the log and the caps make of them;
  tests/e2e/test_ipv6.py serves real clients over ::1.
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
    def __init__(self, peer: tuple[Any, ...] = ("127.0.0.7", 50000)) -> None:
        self.sent: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.unread = 0  # octets written that the peer has not taken (the write buffer's size)
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.unread

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
    store: Store,
    chunks: list[bytes],
    transport: Transport | None = None,
    *,
    tls: bool = False,
    limits: ConnectionLimits | None = None,
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
        limits=limits or ConnectionLimits(10, 10),
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


def test_between_bdat_chunks_the_command_time_out_runs() -> None:
    # The client owes a command there (RFC 5321 4.5.3.2.7), and data_timeout is the shorter by
    # default: it cut such a client off after 3 minutes where 5 are asked.
    async def run() -> None:
        chunks = [b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@mx.test>\r\nBDAT 4\r\n", b"hi"]
        session, transport = await _session(BodyStore(), chunks)
        ctx = session.ctx
        ctx.expire(100.0)  # inside the chunk: data_timeout from the last octets
        assert session.deadline == 400.0
        session.data_received(b"\r\n")  # the chunk ends, and is answered
        assert transport.sent[-1] == b"250 2.0.0 4 octets received\r\n"
        ctx.expire(101.0)
        assert session.deadline == 161.0

    asyncio.run(run())


def test_the_octets_of_a_refused_chunk_are_progress() -> None:
    # The recipient was refused, so the chunk will be too; the client must send it all the same
    # (RFC 3030 2), and was cut off by the time-out on the way instead of getting the 554.
    async def run() -> None:
        chunks = [b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@elsewhere.test>\r\nBDAT 6 LAST\r\n"]
        session, transport = await _session(Store(), chunks)
        ctx = session.ctx
        ctx.expire(100.0)
        session.data_received(b"hi")
        ctx.expire(399.0)
        assert not transport.closing and session.deadline == 699.0
        session.data_received(b"..\r\n")
        assert transport.sent[-1] == b"554 5.5.1 No valid recipients\r\n"

    asyncio.run(run())


def test_a_peer_that_reads_no_reply_is_cut_off_at_the_time_out() -> None:
    # close() waits for the write buffer to drain: the connection, and its place under the caps,
    # were held for ever by a client that never reads.
    async def run() -> None:
        session, transport = await _session(Store(), [b"EHLO client.example\r\n"])
        transport.unread = 1 << 20
        session.ctx.expire(100.0)
        session.ctx.expire(160.5)
        assert transport.aborted and transport.sent[-1].startswith(b"421 4.4.2 ")
        quiet, reading = await _session(Store(), [b"EHLO client.example\r\n"])
        quiet.ctx.expire(100.0)
        quiet.ctx.expire(160.5)
        assert reading.closing and not reading.aborted  # the 421 reaches a client that reads

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


class RecordingStore(CommitStore):
    """Keeps what the session writes of each message (the Received header first)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def open_message(self) -> Any:
        store = self

        class Recording:
            def write(self, data: bytes) -> None:
                store.written.append(data)

        return Recording()


_MESSAGE = [
    b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
]


@pytest.mark.parametrize(
    ("peer", "literal"),
    [
        (("2001:db8::25", 50000, 0, 0), b"[IPv6:2001:db8::25]"),
        # A link-local peer: the zone names this host's interface and has no place in a literal.
        (("fe80::1%eth0", 50000, 0, 2), b"[IPv6:fe80::1]"),
        # An IPv4 client on a socket that takes both families is an IPv4 client (as in Postfix).
        (("::ffff:192.0.2.7", 50000, 0, 0), b"[192.0.2.7]"),
        (("::ffff:0:192.0.2.7", 50000, 0, 0), b"[IPv6:::ffff:0:192.0.2.7]"),  # IPv4-translated: IPv6
        (("192.0.2.7", 50000), b"[192.0.2.7]"),
    ],
)
def test_the_received_header_writes_the_peer_as_an_address_literal(
    peer: tuple[Any, ...], literal: bytes
) -> None:
    # RFC 5321 4.4: TCP-info is an address literal, "[IPv6:...]" for IPv6 (Postfix writes
    # "(localhost [IPv6:::1])"); it was "([2001:db8::25])", and a zone went in as it came.
    async def run() -> RecordingStore:
        store = RecordingStore()
        await _session(store, _MESSAGE, Transport(peer))
        assert len(store.pending) == 1
        return store

    store = asyncio.run(run())
    received = b"".join(store.written).split(b"\r\n")[0]
    assert received == b"Received: from client.example (" + literal + b")"


@pytest.mark.parametrize(
    ("peer", "shown"),
    [(("fe80::1%eth0", 50000, 0, 2), "fe80::1"), (("::ffff:192.0.2.7", 50000, 0, 0), "192.0.2.7")],
)
def test_a_refusal_is_logged_and_a_message_stored_with_the_plain_address(
    peer: tuple[Any, ...], shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> list[Any]:
        store = RecordingStore()
        chunks = [b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<x@example.org>\r\n"]
        chunks.append(b"RCPT TO:<bob@mx.test>\r\nDATA\r\nhi\r\n.\r\n")
        envelopes: list[Any] = []
        commit = store.commit

        def keep(writer: Any, envelope: Any) -> Any:
            envelopes.append(envelope)
            return commit(writer, envelope)

        store.commit = keep  # type: ignore[method-assign]
        await _session(store, chunks, Transport(peer))
        return envelopes

    with caplog.at_level(logging.INFO, logger="mailwright.smtpd"):
        envelopes = asyncio.run(run())
    assert [e.client_ip for e in envelopes] == [shown]
    assert _lines(caplog) == [
        f"NOQUEUE: reject: RCPT from client.example[{shown}]: 554 5.7.1 Relay access denied;"
        " from=<> to=<x@example.org> listener=mx:25"
    ]


def test_two_addresses_of_one_ipv6_network_share_the_per_ip_cap() -> None:
    # Counted by the exact address, one host's /64 gave it per_ip places 2^64 times over.
    async def run() -> list[bytes]:
        limits = ConnectionLimits(100, 2)
        firsts = []
        for peer in ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::3"):
            _, transport = await _session(Store(), [], Transport((peer, 50000, 0, 0)), limits=limits)
            firsts.append(transport.sent[0][:9])
        # Another /64 and an IPv4 client are counted apart.
        for peer in ("2001:db8:1:3::1", "192.0.2.1"):
            _, transport = await _session(Store(), [], Transport((peer, 50000, 0, 0)), limits=limits)
            firsts.append(transport.sent[0][:9])
        return firsts

    assert asyncio.run(run()) == [b"220 mx.te", b"220 mx.te", b"421 4.7.0", b"220 mx.te", b"220 mx.te"]
