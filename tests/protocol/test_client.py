"""Tests for the sans-IO SMTP client engine (protocol.client).

Golden exchanges feed server bytes and compare what the engine writes; misuse and hostile
replies must raise the right error; hypothesis feeds arbitrary bytes.  The last section
talks to a real server (aiosmtpd, when installed) over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.protocol.client import (
    ClientConnection,
    LocalProtocolError,
    RemoteProtocolError,
    ReplyEvent,
)
from mailwright.protocol.reply import Reply

GREETING = b"220 mx.test ESMTP ready\r\n"
EHLO_FULL = (
    b"250-mx.test Hello client.test\r\n"
    b"250-PIPELINING\r\n"
    b"250-CHUNKING\r\n"
    b"250-SIZE 1000000\r\n"
    b"250-STARTTLS\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250 8BITMIME\r\n"
)
EHLO_PLAIN = b"250-mx.test\r\n250 8BITMIME\r\n"


def feed(conn: ClientConnection, data: bytes) -> list[ReplyEvent]:
    """The server sends `data`; return every event the client can now produce."""
    conn.receive_data(data)
    events = []
    while (ev := conn.next_event()) is not None:
        events.append(ev)
    return events


def greeted(ehlo_reply: bytes = EHLO_FULL) -> ClientConnection:
    conn = ClientConnection("client.test")
    assert [e.command for e in feed(conn, GREETING)] == ["GREETING"]
    conn.ehlo()
    assert conn.data_to_send() == b"EHLO client.test\r\n"
    [ev] = feed(conn, ehlo_reply)
    assert ev.command == "EHLO" and ev.reply.code == 250
    return conn


def in_transaction(ehlo_reply: bytes = EHLO_FULL) -> ClientConnection:
    conn = greeted(ehlo_reply)
    conn.mail("a@example.org")
    conn.data_to_send()
    feed(conn, b"250 2.1.0 ok\r\n")
    conn.rcpt("b@example.net")
    conn.data_to_send()
    feed(conn, b"250 2.1.5 ok\r\n")
    return conn


# -- golden exchanges -------------------------------------------------------------------


def test_full_session_starttls_auth_data() -> None:
    conn = ClientConnection("client.test")
    assert conn.data_to_send() == b""
    [ev] = feed(conn, GREETING)
    assert ev == ReplyEvent("GREETING", Reply(220, None, "mx.test ESMTP ready"))

    conn.ehlo()
    assert conn.data_to_send() == b"EHLO client.test\r\n"
    [ev] = feed(conn, b"250-mx.test\r\n250-STARTTLS\r\n250 SIZE 2048\r\n")
    assert conn.extensions is not None and conn.extensions.has("STARTTLS")
    assert conn.extensions.size == 2048

    conn.starttls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    [ev] = feed(conn, b"220 2.0.0 go ahead\r\n")
    assert ev.command == "STARTTLS" and ev.reply.enhanced == "2.0.0"
    with pytest.raises(LocalProtocolError):
        conn.ehlo()  # not before the handshake
    conn.tls_started()
    assert conn.tls and conn.extensions is None
    with pytest.raises(LocalProtocolError, match="EHLO"):
        conn.mail("a@example.org")  # knowledge from before TLS is gone

    conn.ehlo()
    assert conn.data_to_send() == b"EHLO client.test\r\n"
    feed(conn, b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n")
    assert conn.extensions is not None and conn.extensions.auth_mechanisms == {"PLAIN", "LOGIN"}

    conn.auth("plain", b"\x00user\x00pass")
    assert conn.data_to_send() == b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"
    [ev] = feed(conn, b"235 2.7.0 Authentication successful\r\n")
    assert ev.command == "AUTH" and conn.authenticated

    conn.mail("alice@example.org", "BODY=8BITMIME")
    assert conn.data_to_send() == b"MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n"
    [ev] = feed(conn, b"250 2.1.0 Sender OK\r\n")
    assert ev.command == "MAIL"
    conn.rcpt("bob@example.net")
    assert conn.data_to_send() == b"RCPT TO:<bob@example.net>\r\n"
    [ev] = feed(conn, b"250 2.1.5 Recipient OK\r\n")
    assert ev.command == "RCPT"
    conn.data()
    assert conn.data_to_send() == b"DATA\r\n"
    [ev] = feed(conn, b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert ev.command == "DATA" and conn.in_body
    conn.body(b"Subject: hi\r\n\r\n.leading dot\n")
    conn.body(b"last line")
    conn.end_data()
    assert conn.data_to_send() == b"Subject: hi\r\n\r\n..leading dot\r\nlast line\r\n.\r\n"
    [ev] = feed(conn, b"250 2.0.0 queued as 123\r\n")
    assert ev.command == "DATA-END" and ev.reply.text == "queued as 123"

    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    assert not conn.closed
    [ev] = feed(conn, b"221 2.0.0 Bye\r\n")
    assert ev.command == "QUIT" and conn.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.noop()


def test_pipelined_mail_rcpt_rcpt_data_in_one_write() -> None:
    conn = greeted()
    conn.mail("a@example.org", "SIZE=1000")
    conn.rcpt("b@example.net")
    conn.rcpt("c@example.net", "NOTIFY=NEVER")
    conn.data()
    assert conn.awaiting == ("MAIL", "RCPT", "RCPT", "DATA")
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@example.org> SIZE=1000\r\n"
        b"RCPT TO:<b@example.net>\r\n"
        b"RCPT TO:<c@example.net> NOTIFY=NEVER\r\n"
        b"DATA\r\n"
    )
    assert conn.data_to_send() == b""
    events = feed(conn, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown user\r\n354 go\r\n")
    assert [(e.command, e.reply.code) for e in events] == [
        ("MAIL", 250),
        ("RCPT", 250),
        ("RCPT", 550),
        ("DATA", 354),
    ]
    assert events[2].reply.enhanced == "5.1.1"
    conn.body(b"x\r\n")
    conn.end_data()
    # With PIPELINING the next transaction may follow the terminator in the same write.
    conn.mail("")
    conn.rcpt("d@example.net")
    assert conn.data_to_send() == b"x\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@example.net>\r\n"
    events = feed(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n")
    assert [e.command for e in events] == ["DATA-END", "MAIL", "RCPT"]


def test_bdat_last() -> None:
    conn = in_transaction()
    conn.bdat(b"Subject: x\r\n\r\n.dot stays\r\n")
    conn.bdat(b"", last=True)
    conn.quit()
    assert conn.data_to_send() == b"BDAT 26\r\nSubject: x\r\n\r\n.dot stays\r\nBDAT 0 LAST\r\nQUIT\r\n"
    events = feed(conn, b"250 2.0.0 26 octets\r\n250 2.0.0 queued\r\n221 bye\r\n")
    assert [e.command for e in events] == ["BDAT", "BDAT", "QUIT"]
    assert conn.closed


def test_bdat_single_last_chunk_then_new_transaction() -> None:
    conn = in_transaction()
    conn.bdat(b"hello\r\n", last=True)
    assert conn.data_to_send() == b"BDAT 7 LAST\r\nhello\r\n"
    with pytest.raises(LocalProtocolError):
        conn.bdat(b"more")  # the transaction ended with LAST
    conn.mail("x@example.org")
    assert conn.data_to_send() == b"MAIL FROM:<x@example.org>\r\n"


def test_bdat_needs_chunking() -> None:
    conn = in_transaction(EHLO_PLAIN)
    with pytest.raises(LocalProtocolError, match="CHUNKING"):
        conn.bdat(b"x", last=True)
    assert conn.data_to_send() == b""


def test_failed_bdat_forbids_more_chunks_until_rset() -> None:
    conn = in_transaction()
    conn.bdat(b"abc")
    conn.data_to_send()
    [ev] = feed(conn, b"552 5.3.4 too big\r\n")
    assert ev.command == "BDAT"
    with pytest.raises(LocalProtocolError, match="refused"):
        conn.bdat(b"def", last=True)
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org")
    conn.rset()
    conn.mail("a@example.org")
    assert conn.data_to_send() == b"RSET\r\nMAIL FROM:<a@example.org>\r\n"


@pytest.mark.parametrize(
    "reply",
    [
        EHLO_FULL,
        b"250-mx.test\r\n250-2.0.0 not-a-keyword\r\n250 AUTH=PLAIN\r\n",
        b"550-5.7.1 line one\r\n550-5.7.1 line two\r\n550 5.7.1 line three\r\n",
    ],
)
def test_multiline_reply_split_at_every_byte(reply: bytes) -> None:
    expected = feed(greeted_before_ehlo_reply(), reply)
    assert len(expected) == 1
    for i in range(1, len(reply)):
        conn = greeted_before_ehlo_reply()
        assert feed(conn, reply[:i]) == []
        assert feed(conn, reply[i:]) == expected, i
    conn = greeted_before_ehlo_reply()
    events = [ev for b in reply for ev in feed(conn, bytes([b]))]
    assert events == expected


def greeted_before_ehlo_reply() -> ClientConnection:
    conn = ClientConnection("client.test")
    feed(conn, GREETING)
    conn.ehlo()
    conn.data_to_send()
    return conn


def test_failed_ehlo_falls_back_to_helo() -> None:
    conn = greeted_before_ehlo_reply()
    [ev] = feed(conn, b"502 5.5.1 EHLO not implemented\r\n")
    assert ev.command == "EHLO" and conn.extensions is None
    with pytest.raises(LocalProtocolError, match="EHLO or HELO"):
        conn.mail("a@example.org")
    conn.helo()
    assert conn.data_to_send() == b"HELO client.test\r\n"
    feed(conn, b"250 mx.test\r\n")
    conn.mail("a@example.org")
    assert conn.data_to_send() == b"MAIL FROM:<a@example.org>\r\n"


def test_multiline_reply_lifts_enhanced_codes() -> None:
    conn = greeted_before_ehlo_reply()
    [ev] = feed(conn, b"550-5.7.1 line one\r\n550 5.7.1 line two\r\n")
    assert ev.reply == Reply(550, "5.7.1", ("line one", "line two"))
    assert conn.extensions is None


def test_vrfy_noop_rset_helo() -> None:
    conn = ClientConnection("[192.0.2.1]")
    feed(conn, GREETING)
    conn.helo()
    assert conn.data_to_send() == b"HELO [192.0.2.1]\r\n"
    feed(conn, b"250 mx.test\r\n")
    assert conn.extensions is None  # HELO advertises nothing
    conn.vrfy("postmaster")
    assert conn.data_to_send() == b"VRFY postmaster\r\n"
    [ev] = feed(conn, b"252 2.5.0 cannot verify\r\n")
    assert ev.command == "VRFY"
    conn.noop()
    assert conn.data_to_send() == b"NOOP\r\n"
    assert feed(conn, b"250 ok\r\n")[0].command == "NOOP"
    conn.rset()
    assert conn.data_to_send() == b"RSET\r\n"
    assert feed(conn, b"250 ok\r\n")[0].command == "RSET"


# -- auth -------------------------------------------------------------------------------


def test_auth_login_challenges() -> None:
    conn = greeted()
    conn.auth("LOGIN", None)
    assert conn.data_to_send() == b"AUTH LOGIN\r\n"
    [ev] = feed(conn, b"334 VXNlcm5hbWU6\r\n")
    assert conn.auth_challenge(ev.reply) == b"Username:"
    with pytest.raises(LocalProtocolError, match="334"):
        conn.noop()  # the challenge must be answered first
    conn.auth_response(b"user")
    assert conn.data_to_send() == b"dXNlcg==\r\n"
    [ev] = feed(conn, b"334 UGFzc3dvcmQ6\r\n")
    assert conn.auth_challenge(ev.reply) == b"Password:"
    conn.auth_response(b"")
    assert conn.data_to_send() == b"\r\n"  # an empty response is an empty line
    [ev] = feed(conn, b"535 5.7.8 bad credentials\r\n")
    assert ev.command == "AUTH" and not conn.authenticated
    with pytest.raises(LocalProtocolError):
        conn.auth_response(b"x")


def test_auth_empty_initial_response_and_cancel() -> None:
    conn = greeted()
    conn.auth("EXTERNAL", b"")
    assert conn.data_to_send() == b"AUTH EXTERNAL =\r\n"
    [ev] = feed(conn, b"334 \r\n")
    assert conn.auth_challenge(ev.reply) == b""
    conn.auth_cancel()
    assert conn.data_to_send() == b"*\r\n"
    [ev] = feed(conn, b"501 5.7.0 cancelled\r\n")
    assert ev.command == "AUTH"
    conn.noop()


def test_auth_challenge_errors() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError):
        conn.auth_challenge(Reply(250, None, "x"))
    with pytest.raises(RemoteProtocolError, match="base64"):
        conn.auth_challenge(Reply(334, None, "not base64!"))


def test_auth_sequence_rules() -> None:
    conn = in_transaction()
    with pytest.raises(LocalProtocolError, match="transaction"):
        conn.auth("PLAIN", b"\x00u\x00p")
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="SASL"):
        conn.auth("PLAIN LOGIN", None)
    conn.auth("PLAIN", b"\x00u\x00p")
    conn.data_to_send()
    feed(conn, b"235 ok\r\n")
    with pytest.raises(LocalProtocolError, match="already"):
        conn.auth("PLAIN", b"\x00u\x00p")


def test_auth_line_limit_is_12288() -> None:
    conn = greeted()
    # "AUTH PLAIN " (11) + base64 + CRLF (2): 9198 raw bytes -> 12264 base64 chars.
    conn.auth("PLAIN", b"x" * 9198)
    assert len(conn.data_to_send()) == 11 + 12264 + 2
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="12288"):
        conn.auth("PLAIN", b"x" * 9300)
    assert conn.data_to_send() == b""


# -- misuse -----------------------------------------------------------------------------


def test_sequence_errors() -> None:
    conn = ClientConnection("client.test")
    with pytest.raises(LocalProtocolError, match="GREETING"):
        conn.ehlo()  # before the greeting
    feed(conn, GREETING)
    with pytest.raises(LocalProtocolError, match="EHLO or HELO"):
        conn.mail("a@example.org")
    conn.ehlo()
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.mail("a@example.org")  # EHLO reply still outstanding
    assert conn.data_to_send() == b"EHLO client.test\r\n"
    feed(conn, EHLO_FULL)
    with pytest.raises(LocalProtocolError, match="MAIL"):
        conn.rcpt("b@example.net")
    with pytest.raises(LocalProtocolError, match="RCPT"):
        conn.data()
    with pytest.raises(LocalProtocolError, match="354"):
        conn.body(b"x")
    with pytest.raises(LocalProtocolError, match="354"):
        conn.end_data()
    with pytest.raises(LocalProtocolError, match="220"):
        conn.tls_started()
    conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError, match="open"):
        conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError, match="RCPT"):
        conn.data()
    with pytest.raises(LocalProtocolError, match="transaction"):
        conn.starttls()
    conn.rcpt("b@example.net")
    conn.data()
    for call in (conn.noop, conn.rset, conn.quit, lambda: conn.rcpt("c@example.net")):
        with pytest.raises(LocalProtocolError, match="after DATA"):
            call()  # DATA must end a pipelined group
    assert conn.data_to_send() == b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
    feed(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    for call in (conn.noop, conn.rset, conn.quit, conn.ehlo):
        with pytest.raises(LocalProtocolError, match="body"):
            call()
    with pytest.raises(LocalProtocolError, match="DATA"):
        conn.bdat(b"x", last=True)


def test_no_pipelining_without_advertisement() -> None:
    conn = in_transaction(EHLO_PLAIN)
    conn.rcpt("c@example.net")
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.data()
    assert conn.data_to_send() == b"RCPT TO:<c@example.net>\r\n"
    feed(conn, b"250 ok\r\n")
    conn.data()
    assert conn.data_to_send() == b"DATA\r\n"


@pytest.mark.parametrize("verb", ["EHLO", "NOOP", "STARTTLS", "QUIT", "VRFY"])
def test_must_be_last_commands_end_a_pipelined_group(verb: str) -> None:
    conn = greeted()
    {"EHLO": conn.ehlo, "NOOP": conn.noop, "STARTTLS": conn.starttls, "QUIT": conn.quit}.get(
        verb, lambda: conn.vrfy("x")
    )()
    with pytest.raises(LocalProtocolError):
        conn.rset()


def test_rset_and_mail_may_be_pipelined() -> None:
    conn = greeted()
    conn.rset()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.noop()
    assert conn.awaiting == ("RSET", "MAIL", "RCPT", "NOOP")


def test_starttls_twice_and_injection_after_220() -> None:
    conn = greeted()
    conn.starttls()
    conn.data_to_send()
    # A man in the middle appends a plaintext reply behind the 220 (CVE-2011-0411 style).
    [ev] = feed(conn, b"220 go ahead\r\n250 injected\r\n")
    assert ev.command == "STARTTLS"
    with pytest.raises(RemoteProtocolError, match="plaintext"):
        conn.tls_started()
    assert conn.closed

    conn = greeted()
    conn.starttls()
    feed(conn, b"220 go ahead\r\n")
    conn.tls_started()
    conn.ehlo()
    feed(conn, EHLO_FULL)
    with pytest.raises(LocalProtocolError, match="already"):
        conn.starttls()


def test_refused_starttls_stays_plaintext() -> None:
    conn = greeted()
    conn.starttls()
    [ev] = feed(conn, b"454 4.7.0 TLS not available\r\n")
    assert ev.reply.code == 454
    with pytest.raises(LocalProtocolError):
        conn.tls_started()
    conn.mail("a@example.org")
    assert not conn.tls


@pytest.mark.parametrize(
    ("call", "name", "needs_mail"),
    [
        (lambda c: c.mail("a@example.org\r\nRCPT TO:<evil@x>"), "sender", False),
        (lambda c: c.mail("a@example.org", "SIZE=1\nRSET"), "params", False),
        (lambda c: c.mail("a\x00@example.org"), "sender", False),
        (lambda c: c.rcpt("b@example.net\r"), "recipient", True),
        (lambda c: c.rcpt("b@example.net", "NOTIFY=NEVER\x00"), "params", True),
        (lambda c: c.vrfy("x\nQUIT"), "arg", False),
        (lambda c: c.auth("PLAIN\r\nQUIT", None), "mechanism", False),
    ],
)
def test_cr_lf_nul_in_arguments_refused_before_writing(call: Any, name: str, needs_mail: bool) -> None:
    conn = greeted(EHLO_PLAIN)  # no PIPELINING: a stray queued command would also show
    if needs_mail:
        conn.mail("a@example.org")
        conn.data_to_send()
        feed(conn, b"250 ok\r\n")
    before = conn.awaiting
    with pytest.raises(LocalProtocolError, match=name):
        call(conn)
    assert conn.data_to_send() == b""
    assert conn.awaiting == before


@pytest.mark.parametrize("host", ["client.test\r\n", "client\x00", "client test", ""])
def test_bad_local_hostname(host: str) -> None:
    with pytest.raises(LocalProtocolError, match="local_hostname"):
        ClientConnection(host)


def test_command_line_limit_is_512() -> None:
    conn = greeted()
    local = "a" * (512 - len("MAIL FROM:<@x>\r\n"))
    conn.mail(f"{local}@x")
    assert len(conn.data_to_send()) == 512
    conn.rset()
    feed(conn, b"250 ok\r\n250 ok\r\n")
    conn.data_to_send()
    with pytest.raises(LocalProtocolError, match="512"):
        conn.mail(f"{local}a@x")
    assert conn.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        conn.rcpt("b@example.net")  # the refused MAIL left no transaction behind


# -- transaction tracking under pipelining ----------------------------------------------


def test_failed_mail_ends_the_transaction() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.data()
    events = feed(conn, b"550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n")
    assert [e.command for e in events] == ["MAIL", "RCPT", "DATA"]
    assert not conn.in_body
    conn.mail("other@example.org")  # no RSET needed: the server has no transaction


def test_failed_data_after_good_mail_keeps_the_transaction() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.data()
    feed(conn, b"250 ok\r\n550 no such user\r\n554 5.5.1 no valid recipients\r\n")
    conn.rcpt("c@example.net")  # the server still holds MAIL FROM
    assert conn.data_to_send().endswith(b"RCPT TO:<c@example.net>\r\n")


def test_late_reply_does_not_disturb_newer_transaction() -> None:
    conn = greeted()
    conn.mail("first@example.org")
    conn.rcpt("b@example.net")
    conn.bdat(b"x", last=True)
    conn.mail("second@example.org")
    conn.data_to_send()
    # The first MAIL fails; its failure must not end the second transaction.
    events = feed(conn, b"550 no\r\n503 no\r\n503 no\r\n250 ok\r\n")
    assert [e.command for e in events] == ["MAIL", "RCPT", "BDAT", "MAIL"]
    conn.rcpt("c@example.net")


def test_ehlo_resets_transaction() -> None:
    conn = in_transaction()
    conn.ehlo()
    assert conn.extensions is None
    feed(conn, EHLO_FULL)
    with pytest.raises(LocalProtocolError):
        conn.rcpt("c@example.net")


# -- hostile or broken replies ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"abc hello\r\n", "malformed"),
        (b"22 short\r\n", "malformed"),
        (b"2200 x\r\n", "malformed"),
        (b"220_x\r\n", "malformed"),
        (b"150 one-fifty\r\n", "outside"),
        (b"220-mx\r\n221 mx\r\n", "changed code"),
        (b"220 ok\nmore\r\n", "bare"),
        (b"220 ok\rmore\r\n", "bare"),
        (b"354 not a greeting\r\n", "GREETING"),
        (b"220 " + b"x" * 70000, "max_reply_bytes"),
        (b"220-" + b"x" * 100 + b"\r\n", None),
    ],
)
def test_garbage_replies(data: bytes, match: str | None) -> None:
    conn = ClientConnection("client.test", max_reply_bytes=64 * 1024)
    if match is None:
        # Many continuation lines: the limit is on the whole reply, not on each line.
        conn.receive_data(data * 700)
        with pytest.raises(RemoteProtocolError, match="longer"):
            conn.next_event()
    else:
        conn.receive_data(data)
        with pytest.raises(RemoteProtocolError, match=match):
            conn.next_event()
    assert conn.closed
    assert conn.next_event() is None


def test_many_pipelined_replies_in_one_read_are_not_a_long_reply() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    for i in range(3000):
        conn.rcpt(f"user{i}@example.net")
    events = feed(conn, b"250 2.1.0 ok\r\n" + b"250 2.1.5 recipient ok\r\n" * 3000)
    assert len(events) == 3001


def test_reply_with_nothing_outstanding() -> None:
    conn = greeted()
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        feed(conn, b"250 surprise\r\n")


def test_reply_class_must_fit_command() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    with pytest.raises(RemoteProtocolError, match="MAIL"):
        feed(conn, b"354 go on\r\n")
    conn = greeted()
    conn.starttls()
    with pytest.raises(RemoteProtocolError, match="STARTTLS"):
        feed(conn, b"250 ok\r\n")


def test_unsolicited_421_is_reported_and_closes() -> None:
    conn = greeted()
    [ev] = feed(conn, b"421 4.4.2 idle timeout\r\n")
    assert ev == ReplyEvent("UNSOLICITED", Reply(421, "4.4.2", "idle timeout"))
    assert conn.closed


def test_421_in_the_middle_of_a_pipeline_closes() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    events = feed(conn, b"421 4.3.2 shutting down\r\n250 ignored\r\n")
    assert [(e.command, e.reply.code) for e in events] == [("MAIL", 421)]
    assert conn.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.rset()


def test_greeting_554_then_quit() -> None:
    conn = ClientConnection("client.test")
    [ev] = feed(conn, b"554 5.7.1 go away\r\n")
    assert ev.command == "GREETING" and ev.reply.is_permanent
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    feed(conn, b"221 bye\r\n")
    assert conn.closed


def test_eof_with_replies_owed_is_an_error() -> None:
    conn = greeted()
    conn.noop()
    conn.receive_data(b"25")
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="NOOP"):
        conn.next_event()
    assert conn.closed


def test_eof_during_body_is_an_error() -> None:
    conn = in_transaction()
    conn.data()
    feed(conn, b"354 go\r\n")
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="DATA"):
        conn.next_event()


def test_clean_eof() -> None:
    conn = greeted()
    conn.quit()
    conn.receive_data(b"")
    assert conn.next_event() is None  # a server may close without its 221
    assert conn.closed
    conn = greeted()
    assert feed(conn, b"") == []
    assert conn.closed


# -- hypothesis -------------------------------------------------------------------------


def _drain(conn: ClientConnection) -> None:
    for _ in range(10_000):
        if conn.next_event() is None:
            return
    raise AssertionError("next_event never returned None")


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80), max_size=8), st.booleans())
def test_arbitrary_bytes_raise_only_remote_errors(chunks: list[bytes], pipelined: bool) -> None:
    conn = ClientConnection("client.test", max_reply_bytes=600)
    if pipelined:
        feed(conn, GREETING)
        conn.ehlo()
        feed(conn, EHLO_FULL)
        conn.mail("a@example.org")
        conn.rcpt("b@example.net")
        conn.rcpt("c@example.net")
        conn.data()
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            _drain(conn)
        conn.receive_data(b"")
        _drain(conn)
    except RemoteProtocolError:
        assert conn.closed


_reply_lines = st.lists(st.from_regex(r"[ -~]{0,30}", fullmatch=True), min_size=1, max_size=5)


@settings(max_examples=200)
@given(st.integers(200, 599), _reply_lines, st.lists(st.integers(0, 400), max_size=5))
def test_rendered_replies_parse_back(code: int, lines: list[str], cuts: list[int]) -> None:
    reply = Reply(code, None, tuple(lines))
    wire = reply.to_bytes()
    conn = greeted()
    conn.auth("PLAIN", None)  # AUTH accepts every class: 2yz, 3yz, 4yz, 5yz
    events: list[ReplyEvent] = []
    prev = 0
    for cut in [*sorted(c for c in cuts if c < len(wire)), len(wire)]:
        if cut > prev:
            events += feed(conn, wire[prev:cut])
        prev = cut
    [ev] = events
    assert ev.command == "AUTH"
    assert ev.reply.code == code
    if ev.reply.enhanced is None:
        assert ev.reply.to_bytes() == wire
    else:  # the first line happened to start with an enhanced code, which was lifted
        assert lines[0].startswith(ev.reply.enhanced)


# -- against a real server --------------------------------------------------------------

try:
    import aiosmtpd.smtp as aiosmtpd_smtp
except ImportError:  # pragma: no cover - depends on the environment
    aiosmtpd_smtp = None

needs_aiosmtpd = pytest.mark.skipif(aiosmtpd_smtp is None, reason="aiosmtpd is not installed")


class _Driver:
    """A minimal asyncio driver for ClientConnection, written for these tests only."""

    def __init__(self, conn: ClientConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.conn, self.reader, self.writer = conn, reader, writer

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def event(self) -> ReplyEvent:
        await self.flush()
        while (ev := self.conn.next_event()) is None:
            data = await asyncio.wait_for(self.reader.read(65536), timeout=5)
            self.conn.receive_data(data)
            if not data and (ev := self.conn.next_event()) is None:
                raise AssertionError("server closed the connection")
        return ev


class _Handler:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 stored"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult

    ok = auth_data.login == b"user" and auth_data.password == b"secret"
    # handled=False makes aiosmtpd send its 535 itself on failure.
    return AuthResult(success=ok, handled=False)


async def _serve(handler: _Handler, tls_context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: aiosmtpd_smtp.SMTP(
            handler,
            hostname="mx.test",
            tls_context=tls_context,
            authenticator=_authenticator,
            auth_require_tls=tls_context is not None,
        ),
        "127.0.0.1",
        0,
    )
    return server, server.sockets[0].getsockname()[1]


async def _connect(port: int) -> _Driver:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return _Driver(ClientConnection("client.test"), reader, writer)


@needs_aiosmtpd
def test_real_server_plain_session() -> None:
    async def main() -> None:
        handler = _Handler()
        server, port = await _serve(handler)
        async with server:
            d = await _connect(port)
            assert (await d.event()).reply.code == 220
            d.conn.ehlo()
            ev = await d.event()
            assert ev.command == "EHLO" and d.conn.extensions is not None
            assert d.conn.extensions.has("8BITMIME") and d.conn.extensions.size
            d.conn.mail("alice@example.org")
            assert (await d.event()).reply.code == 250
            for rcpt in ("bob@example.net", "carol@example.net"):
                d.conn.rcpt(rcpt)
                assert (await d.event()).reply.code == 250
            d.conn.data()
            assert (await d.event()).reply.code == 354
            d.conn.body(b"Subject: dots\r\n\r\n.one\n..two\r\n.")
            d.conn.body(b"\r\nend")
            d.conn.end_data()
            ev = await d.event()
            assert (ev.command, ev.reply.code, ev.reply.text) == ("DATA-END", 250, "stored")
            d.conn.vrfy("bob")
            assert (await d.event()).command == "VRFY"
            d.conn.quit()
            assert (await d.event()).reply.code == 221
            assert d.conn.closed
            d.writer.close()
        assert handler.messages == [
            (
                "alice@example.org",
                ["bob@example.net", "carol@example.net"],
                b"Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n",
            )
        ]

    asyncio.run(main())


@needs_aiosmtpd
def test_real_server_starttls_and_auth() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def session(port: int, mechanism: str) -> bool:
        d = await _connect(port)
        await d.event()
        d.conn.ehlo()
        await d.event()
        assert d.conn.extensions is not None and d.conn.extensions.has("STARTTLS")
        assert not d.conn.extensions.has("AUTH")  # aiosmtpd offers AUTH only under TLS
        d.conn.starttls()
        assert (await d.event()).reply.code == 220
        await d.writer.start_tls(client_ctx, server_hostname="mx.test")
        d.conn.tls_started()
        d.conn.ehlo()
        await d.event()
        assert d.conn.extensions is not None
        assert {"PLAIN", "LOGIN"} <= d.conn.extensions.auth_mechanisms
        if mechanism == "PLAIN":
            d.conn.auth("PLAIN", b"\x00user\x00secret")
        else:
            d.conn.auth("LOGIN", None)
            for answer in (b"user", b"wrong"):
                ev = await d.event()
                assert ev.reply.code == 334
                assert d.conn.auth_challenge(ev.reply) in (b"User Name\x00", b"Password\x00", b"")
                d.conn.auth_response(answer)
        ev = await d.event()
        assert ev.command == "AUTH"
        d.conn.mail("alice@example.org")
        assert (await d.event()).reply.code == 250
        d.conn.quit()
        await d.event()
        d.writer.close()
        return d.conn.authenticated

    async def main() -> None:
        server, port = await _serve(_Handler(), server_ctx)
        async with server:
            assert await session(port, "PLAIN") is True
            assert await session(port, "LOGIN") is False

    asyncio.run(main())


def test_engine_to_engine_round_trip_via_base64() -> None:
    # auth_challenge is the inverse of what a server puts in a 334.
    conn = greeted()
    text = base64.b64encode(b"\x00\xffchallenge").decode()
    assert conn.auth_challenge(Reply(334, None, text)) == b"\x00\xffchallenge"
