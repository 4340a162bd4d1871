"""Header cleanup: Received first, Message-ID/Date added inside the header section, streaming.

Also what the Received header may carry of the client's HELO name (`trace_name`) and of the
server's own name (`header_host`), and the mbox separator renamed X-Mailbox-Line. The same
through a real server: tests/e2e/test_stored_headers.py.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.policy.cleanup import (
    MAX_HEADER_HOLD,
    HeaderCleanup,
    header_host,
    protocol_name,
    trace_name,
)

RECEIVED = b"Received: from c.test by mx.test; Mon, 30 Nov 2026 08:00:00 +0000\r\n"
MSGID = b"Message-ID: <1@mx.test>\r\n"
DATE = b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n"


def run(message: bytes, step: int) -> bytes:
    c = HeaderCleanup(RECEIVED, add_message_id=MSGID, add_date=DATE)
    out = b"".join(c.feed(message[i : i + step]) for i in range(0, len(message), step))
    return out + c.finish()


CASES = [
    # (name, input, expected after the Received line)
    ("normal", b"Subject: x\r\n\r\nbody\r\n", b"Subject: x\r\n" + MSGID + DATE + b"\r\nbody\r\n"),
    (
        "present",
        b"Message-Id: <a@b>\r\nDATE: now\r\n\r\nb\r\n",
        b"Message-Id: <a@b>\r\nDATE: now\r\n\r\nb\r\n",
    ),
    ("no-headers", b"hello world\r\nsecond\r\n", MSGID + DATE + b"\r\nhello world\r\nsecond\r\n"),
    (
        "no-separator",
        b"Subject: x\r\n continued\r\nno blank line\r\n",
        b"Subject: x\r\n continued\r\n" + MSGID + DATE + b"\r\nno blank line\r\n",
    ),
    ("headers-only", b"Subject: only\r\n", b"Subject: only\r\n" + MSGID + DATE),
    ("empty", b"", MSGID + DATE),
    ("leading-space", b" not a continuation\r\n", MSGID + DATE + b"\r\n not a continuation\r\n"),
    # An mbox separator first: as in Postfix's cleanup, a field, so the fields after it stay fields.
    (
        "mbox-from",
        b"From a@b.test Mon Dec  7 10:00:00 2026\r\nSubject: x\r\n\r\nb\r\n",
        b"X-Mailbox-Line: From a@b.test Mon Dec  7 10:00:00 2026\r\nSubject: x\r\n"
        + MSGID
        + DATE
        + b"\r\nb\r\n",
    ),
    ("almost-mbox", b"Fro", MSGID + DATE + b"\r\nFro"),
    ("not-mbox", b"From: a@b.test\r\n\r\nb\r\n", b"From: a@b.test\r\n" + MSGID + DATE + b"\r\nb\r\n"),
]


@pytest.mark.parametrize(("name", "message", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_added_headers_land_in_the_header_section(
    name: str, message: bytes, expected: bytes, step: int
) -> None:
    out = run(message, step)
    assert out == RECEIVED + expected
    parsed = email.message_from_bytes(out, policy=email.policy.compat32)
    assert parsed["Message-ID"] is not None and parsed["Date"] is not None
    assert not parsed.defects


def test_mx_adds_only_received_and_streams() -> None:
    c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None)
    assert c.feed(b"Subject") == RECEIVED + b"Subject"
    assert c.feed(b": x\r\n") == b": x\r\n"
    assert c.finish() == b""


def test_huge_header_section_passes_through_unchanged() -> None:
    c = HeaderCleanup(RECEIVED, add_message_id=MSGID, add_date=DATE)
    big = b"X-Long: " + b"a" * 1000 + b"\r\n"
    out = b"".join(c.feed(big) for _ in range(MAX_HEADER_HOLD // len(big) + 2))
    assert out.startswith(RECEIVED) and MSGID not in out
    assert c.finish() == b""


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_an_mbox_separator_becomes_a_field_on_mx_too(step: int) -> None:
    message = b"From a@b.test Mon Dec  7 10:00:00 2026\r\nSubject: x\r\n\r\nFrom here\r\n"
    c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None)
    out = b"".join(c.feed(message[i : i + step]) for i in range(0, len(message), step)) + c.finish()
    assert out == RECEIVED + b"X-Mailbox-Line: " + message  # "From " later in the body stays


@pytest.mark.parametrize("cut", [1, 4096, 65536])
def test_a_header_section_over_the_hold_passes_through_however_it_is_cut(cut: int) -> None:
    """The outcome was the chunking's: one large chunk holding the section's end got the fields
    added past MAX_HEADER_HOLD, smaller ones passed it through."""
    pad = b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"p" * 60) for i in range(MAX_HEADER_HOLD // 70))
    message = pad + b"Subject: x\r\n\r\nb\r\n"
    assert len(pad) > MAX_HEADER_HOLD
    for chunks in ([message], [message[i : i + cut] for i in range(0, len(message), cut)]):
        c = HeaderCleanup(RECEIVED, add_message_id=MSGID, add_date=DATE)
        assert b"".join(c.feed(chunk) for chunk in chunks) + c.finish() == RECEIVED + message


def test_a_header_section_just_under_the_hold_gets_the_fields() -> None:
    head = b"X-A: " + b"a" * (MAX_HEADER_HOLD - 7) + b"\r\n"
    assert len(head) == MAX_HEADER_HOLD
    assert run(head + b"\r\nb\r\n", len(head) + 10) == RECEIVED + head + MSGID + DATE + b"\r\nb\r\n"


TRACE_CASES = [
    # (HELO name, SMTPUTF8 message, as the Received header's `from` clause carries it)
    ("mail.example.org", False, "mail.example.org"),
    ("a;b", False, "a?b"),
    ("x(y)z", False, "x?y?z"),
    ('a\\b"c', False, "a?b?c"),
    ("<a@b>:,", False, "?a?b???"),
    ("x[1.2.3.4]", False, "x?1.2.3.4?"),
    ("[1.2.3.4]", False, "[1.2.3.4]"),
    ("[IPv6:2001:db8::1]", False, "[IPv6:2001:db8::1]"),
    ("[1.2.3.4;(]", False, "?1.2.3.4???"),
    ("[300.1.1.1]", False, "?300.1.1.1?"),
    ("b\u00fccher.example", False, "xn--bcher-kva.example"),
    ("B\u00dcCHER.example", False, "xn--bcher-kva.example"),
    ("\u00fc;x", False, "??x"),
    ("\u00fc" * 100, False, "?" * 100),  # a label over 63 octets: no A-label
    ("b\u00fccher.example", True, "b\u00fccher.example"),
    ("\u00fc;(x", True, "\u00fc??x"),
]


@pytest.mark.parametrize(("helo", "utf8", "expected"), TRACE_CASES)
def test_trace_name(helo: str, utf8: bool, expected: str) -> None:
    assert trace_name(helo, utf8=utf8) == expected


ATEXT_DOT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~.")


@given(
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn")),
        min_size=1,
        max_size=80,
    )
)
def test_trace_name_is_atoms_or_a_literal_and_7bit_without_smtputf8(helo: str) -> None:
    for utf8 in (False, True):
        name = trace_name(helo, utf8=utf8)
        assert name and (utf8 or name.isascii())
        literal = name.startswith("[") and name == helo
        assert literal or all(ch in ATEXT_DOT or (utf8 and not ch.isascii()) for ch in name), name
        assert len(name) <= max(len(helo), 253)


def test_header_host_is_ascii() -> None:
    assert header_host("mx.example.org") == "mx.example.org"
    assert header_host("m\u00e4il.example.org") == "xn--mil-qla.example.org"


def test_protocol_names_rfc3848() -> None:
    assert protocol_name(extended=False, tls=True, auth=True, utf8=False) == "SMTP"
    assert protocol_name(extended=True, tls=True, auth=True, utf8=False) == "ESMTPSA"
    assert protocol_name(extended=True, tls=False, auth=False, utf8=True) == "UTF8SMTP"
