"""Regression tests for bugs an independent review of the server found (one test per finding).

Each test asserts the correct behaviour; all failed before their fixes.  Most drive the sans-IO
engine in memory (the Harness of tests/protocol/test_server.py) or a single module; the
net-level ones drive `SMTPSession` with a fake transport, and one runs a real server
(tests/spawn.py).

Not responsible for: re-testing behaviour the module test suites already cover.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "protocol"))

from test_server import Harness

import spawn
from mailwright.limits.auth_failures import AuthFailureLimiter
from mailwright.limits.connections import ConnectionLimits
from mailwright.net.server import (
    AuthBackend,
    ListenerRuntime,
    ServerContext,
    SMTPSession,
)
from mailwright.policy.cleanup import HeaderCleanup
from mailwright.policy.relay import RelayPolicy
from mailwright.protocol import events as ev
from mailwright.protocol.address import parse_path
from mailwright.protocol.server import MAX_PENDING, ServerConnection, ServerSettings

# -- engine: protocol/server.py ---------------------------------------------------------------


def _in_rcpt(h: Harness) -> None:
    h.send(b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n")


def test_bdat_with_unicode_digit_size_does_not_raise() -> None:
    """protocol/server.py:467/472 — `str.isdigit()` accepts '²', `int('²')` raises ValueError.

    Expected: a syntax error (now 521 5.5.4, which ends the session: the chunk that follows cannot
    be delimited).  Actual: ValueError escapes `next_event()` (the net server turns it into 451 +
    close + a logged traceback, for any peer)."""
    h = Harness()
    _in_rcpt(h)
    replies = h.send("BDAT \u00b2 LAST\r\n".encode())
    assert replies and replies[-1].startswith("521 5.5.4"), replies
    assert h.conn.closed


def test_bdat_size_accepts_only_ascii_digits() -> None:
    """protocol/server.py:467 — '٣' (ARABIC-INDIC THREE) passes isdigit() and int() gives 3.

    RFC 3030 chunk-size is 1*DIGIT (ASCII).  Expected: a syntax error (now 521 5.5.4, closing).
    Actual: a 3-octet chunk is read."""
    h = Harness()
    _in_rcpt(h)
    replies = h.send("BDAT \u0663 LAST\r\nabc".encode())
    assert replies and replies[0].startswith("521 5.5.4"), replies


def test_error_limit_421_in_data_really_closes() -> None:
    """protocol/server.py:538 — `_step_data` sets state READY *after* `_error()` closed the
    session on the 20th error, so the session is resurrected after its 421.

    Expected: 421, closed, nothing more answered.  Actual: still open, NOOP answered 250."""
    h = Harness()
    h.send(b"EHLO c.test\r\n")
    for _ in range(19):
        h.send(b"FOO\r\n")
    h.send(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n")
    replies = h.send(b"bare\nlf\r\n.\r\n")
    assert replies[-1].startswith("421 4.7.0"), replies
    assert any(isinstance(e, ev.Closing) for e in h.events)
    assert h.conn.closed
    assert h.send(b"NOOP\r\n") == []


def test_failed_bdat_in_rcpt_state_announces_transaction_reset() -> None:
    """protocol/server.py:507-513 — a refused BDAT outside the BDAT state (HELO session, so
    CHUNKING not negotiated) resets the engine's transaction (state READY, recipients 0) but
    emits no TransactionReset, which events.py promises "for a failed BDAT".  A caller keeping
    the envelope (net.server keeps self.recipients) is left out of step.  Low: net.server's MAIL
    handler happens to drop it before the next transaction."""
    h = Harness()
    h.send(b"HELO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n")
    replies = h.send(b"BDAT 3 LAST\r\nabc")
    assert replies[-1].startswith("503"), replies
    if h.conn.recipient_count == 0:  # the engine dropped the transaction...
        assert any(isinstance(e, ev.TransactionReset) for e in h.events)  # ...so must say so


# -- relay: policy/relay.py ---------------------------------------------------------------------


def test_relay_domain_normalisation_uses_same_idna_as_addresses() -> None:
    """policy/relay.py:64 — configured domains go through the stdlib IDNA 2003 codec
    ("faß.de" -> "fass.de") while addresses use IDNA 2008/UTS 46 ("faß.de" -> "xn--fa-hia.de").

    Result: with relay_domains = ["faß.de"], an unauthenticated client may relay to fass.de
    (a different domain, not configured), and mail for faß.de itself is refused."""
    policy = RelayPolicy(["example.test"], ["fa\u00df.de"])
    other, _ = parse_path("<victim@fass.de>", utf8=True, allow_null=False)
    ours, _ = parse_path("<user@fa\u00df.de>", utf8=True, allow_null=False)
    assert other is not None and ours is not None
    assert policy.check_recipient(other, authenticated=False) is not None  # relay hole
    assert policy.check_recipient(ours, authenticated=False) is None  # our own domain


def test_bare_postmaster_accepted_when_hostname_is_not_a_local_domain() -> None:
    """protocol/server.py:451 + policy/relay.py — "<Postmaster>" (RFC 5321 4.1.1.3/4.5.1: MUST
    be accepted) becomes postmaster@<hostname>; with hostname mx.example.test serving
    local_domains = ["example.test"] the relay check refuses it with 554 5.7.1."""
    settings = ServerSettings(hostname="mx.example.test")
    conn = ServerConnection(settings)
    policy = RelayPolicy(["example.test"], hostname="mx.example.test")  # as app.py wires it
    conn.receive_data(b"EHLO c.test\r\n")
    assert isinstance(conn.next_event(), ev.Hello)
    conn.accept()
    conn.receive_data(b"MAIL FROM:<a@c.test>\r\n")
    assert isinstance(conn.next_event(), ev.Mail)
    conn.accept()
    conn.receive_data(b"RCPT TO:<Postmaster>\r\n")
    rcpt = conn.next_event()
    assert isinstance(rcpt, ev.Rcpt)
    assert policy.check_recipient(rcpt.recipient, authenticated=False) is None


# -- header cleanup: policy/cleanup.py ----------------------------------------------------------


def test_cleanup_with_bare_lf_body_does_not_append_headers_after_body() -> None:
    """policy/cleanup.py:78 — the header end is searched only at CRLF.  BDAT bodies are not
    line-checked (by design), so a submission sent with LF line ends is taken as one endless
    header section: Message-ID/Date are appended *after the body*, and an existing Message-ID
    ("\\nMessage-ID:") is not seen, so a second one is added."""
    c = HeaderCleanup(b"Received: x\r\n", add_message_id=b"Message-ID: <new@h>\r\n", add_date=b"Date: d\r\n")
    out = c.feed(b"Subject: hi\nMessage-ID: <orig@x>\n\nbody line\n") + c.finish()
    assert b"Message-ID: <new@h>" not in out, out  # it has one already
    assert out.index(b"Date: d") < out.index(b"body line"), out  # header, not trailer


# -- net/server.py ----------------------------------------------------------------------------


class _FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def test_input_buffer_bounded_while_a_task_is_running() -> None:
    """net/server.py:172-179 — while a task runs (AUTH verify/failure delay up to 5 s, a queue
    commit) `data_received` appends to the engine's buffer and never calls `_update_reading`,
    so reading is not paused and a peer can push without limit (memory DoS).

    Expected: reading paused once MAX_PENDING octets are held.  Actual: 8 MiB held, not paused."""

    async def scenario() -> tuple[int, bool]:
        gate = asyncio.Event()

        async def verify(cred: Any, listener: str) -> bool:
            await gate.wait()  # a slow scrypt / a busy thread pool
            return False

        settings = ServerSettings(
            hostname="mx.test", auth_mechanisms=("PLAIN",), allow_plaintext_auth=True, auth_required=True
        )
        ctx = ServerContext(
            store=None,  # type: ignore[arg-type]  # not reached: no message is sent
            relay=RelayPolicy(["mx.test"]),
            auth=AuthBackend(verify, lambda u, s: True, AuthFailureLimiter(), False, lambda u: "stamp"),
            limits=ConnectionLimits(10, 10),
            command_timeout=300,
            data_timeout=300,
        )
        session = SMTPSession(ctx, ListenerRuntime("sub", "submission", settings, None, False))
        transport = _FakeTransport()
        session.connection_made(transport)  # type: ignore[arg-type]
        session.data_received(b"EHLO c.test\r\n")
        token = base64.b64encode(b"\0alice\0wrong").decode()
        session.data_received(f"AUTH PLAIN {token}\r\n".encode())
        await asyncio.sleep(0)
        assert session.task is not None
        for _ in range(128):  # 8 MiB while the password check runs
            if transport.paused:
                break
            session.data_received(b"NOOP\r\n" * (64 * 1024 // 6))
        assert session.conn is not None
        held = len(session.conn._in)
        gate.set()
        session.connection_lost(None)
        return held, transport.paused

    held, paused = asyncio.run(scenario())
    assert paused, f"reading never paused; {held} octets held"
    assert held <= MAX_PENDING + 64 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = spawn.make_server(tmp_path / "srv")
    srv.start()
    yield srv
    srv.stop()


def test_half_closed_client_still_gets_250_and_221(server: spawn.SpawnedServer) -> None:
    """net/server.py (no eof_received) — a client that pipelines a whole transaction plus QUIT
    and then shuts down its sending side (printf ... | nc, many scripts) is cut off: asyncio's
    default eof_received closes the transport, connection_lost cancels the commit wait, so the
    message IS queued but the client never gets its "250 queued as" (nor 221) and will retry:
    a duplicate.  Expected: the replies owed are sent, then the server closes."""
    with socket.create_connection(("127.0.0.1", server.ports["mx"]), timeout=10) as s:
        s.recv(1024)  # 220
        s.sendall(
            b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n"
            b"Subject: half-close\r\n\r\nhello\r\n.\r\nQUIT\r\n"
        )
        s.shutdown(socket.SHUT_WR)
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    deadline = time.monotonic() + 5
    while not server.queued() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.queued()) == 1  # the message was queued...
    assert b"queued as" in got, got  # ...so the client must be told
    assert b"221" in got, got


# -- areas checked and found correct (passing guards) ------------------------------------------


def test_checked_ok_rset_and_ehlo_between_bdat_chunks_reset_everything() -> None:
    h = Harness()
    _in_rcpt(h)
    assert h.send(b"BDAT 3\r\nabc") == ["250 2.0.0 3 octets received"]
    assert h.send(b"RSET\r\n") == ["250 2.0.0 Reset OK"]
    assert any(isinstance(e, ev.TransactionReset) for e in h.events)
    assert h.send(b"BDAT 1 LAST\r\nx")[0].startswith("503")
    _in_rcpt(h)
    h.send(b"BDAT 2\r\nab")
    replies = h.send(b"EHLO c.test\r\nRCPT TO:<b@mx.test>\r\n")
    assert replies[0].startswith("250-") and replies[-1].startswith("503")
    assert h.conn.recipient_count == 0 and h.messages == []
