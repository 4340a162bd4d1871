"""The log lines a session writes for operators: one per accepted message (keyed by queue id), one
per refused MAIL or RCPT ("NOQUEUE: reject:", as Postfix writes it).

A unit test of `net.server.SMTPSession` alone: a stand-in transport records what would be sent,
and a stand-in store hands out commit futures the test resolves itself, so the order of "commit
done" and "client gone" can be chosen (real servers and clients are in tests/interop).
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
from mailwright.protocol.reply import R, SMTPError
from mailwright.protocol.server import ServerSettings
from mailwright.queue.model import Envelope

BODY = b"Subject: hello\r\n\r\nbody\r\n.\r\n"
TRANSACTION = [
    b"EHLO client.example\r\n",
    b"MAIL FROM:<alice@sender.example>\r\n",
    b"RCPT TO:<bob@mx.test>\r\n",
    b"RCPT TO:<carol@mx.test>\r\n",
    b"DATA\r\n",
    BODY,
]


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


class Writer:
    def __init__(self) -> None:
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)


class Store:
    def __init__(self) -> None:
        self.commits: list[tuple[asyncio.Future[str], Envelope, int]] = []

    def open_message(self) -> Writer:
        return Writer()

    def commit(self, writer: Writer, envelope: Envelope) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.commits.append((future, envelope, writer.size))
        return future

    def abort(self, writer: Writer) -> None:
        pass


async def _session(store: Store, chunks: list[bytes] = TRANSACTION) -> tuple[SMTPSession, Transport]:
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
        data_timeout=60,
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


def test_an_accepted_message_gets_one_line_keyed_by_its_queue_id(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> tuple[list[bytes], int]:
        store = Store()
        session, transport = await _session(store)
        ((future, _, size),) = store.commits
        future.set_result("1ABCDEFGHJKMNPQR")
        await asyncio.sleep(0)
        session.data_received(b"QUIT\r\n")
        return transport.sent, size

    with caplog.at_level(logging.INFO, logger="mailwright.smtpd"):
        sent, size = asyncio.run(run())
    assert b"250 2.0.0 OK queued as 1ABCDEFGHJKMNPQR\r\n" in b"".join(sent)
    assert size > len(BODY) - 5, "the stored size counts the Received header too"
    assert _lines(caplog) == [
        f"1ABCDEFGHJKMNPQR: from=<alice@sender.example>, size={size}, nrcpt=2,"
        " client=client.example[127.0.0.7], listener=mx:25"
    ]


def test_a_client_gone_before_the_reply_still_gets_its_message_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> asyncio.Future[str]:
        store = Store()
        session, _ = await _session(store)
        ((future, _, _),) = store.commits
        session.connection_lost(ConnectionResetError())
        assert not future.cancelled(), "the commit goes on: the message may already be stored"
        future.set_result("1ABCDEFGHJKMNPQS")
        await asyncio.sleep(0)
        return future

    with caplog.at_level(logging.INFO, logger="mailwright.smtpd"):
        asyncio.run(run())
    (line,) = _lines(caplog)
    assert line.startswith("1ABCDEFGHJKMNPQS: from=<alice@sender.example>,")
    assert line.endswith(" (client disconnected before the reply)")


def test_a_failed_commit_logs_no_acceptance(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> list[bytes]:
        store = Store()
        _, transport = await _session(store)
        ((future, _, _),) = store.commits
        future.set_exception(SMTPError(R.STORAGE_FULL))
        await asyncio.sleep(0)
        return transport.sent

    with caplog.at_level(logging.INFO, logger="mailwright.smtpd"):
        sent = asyncio.run(run())
    assert b"452 4.3.1 " in b"".join(sent)
    assert _lines(caplog) == []


def test_a_refused_recipient_gets_a_noqueue_line(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> list[bytes]:
        store = Store()
        chunks = [b"EHLO client.example\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<someone@example.org>\r\n"]
        _, transport = await _session(store, chunks)
        assert store.commits == []
        return transport.sent

    with caplog.at_level(logging.INFO, logger="mailwright.smtpd"):
        sent = asyncio.run(run())
    assert b"554 5.7.1 Relay access denied\r\n" in b"".join(sent)
    assert _lines(caplog) == [
        "NOQUEUE: reject: RCPT from client.example[127.0.0.7]: 554 5.7.1 Relay access denied;"
        " from=<> to=<someone@example.org> listener=mx:25"
    ]
