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
    MAILBOX_LINE,
    MAX_HEADER_HOLD,
    MAX_LINE,
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
    (
        "quoted-mbox",
        b">From a@b.test\r\nSubject: x\r\n\r\nb\r\n",
        b"X-Mailbox-Line: >From a@b.test\r\nSubject: x\r\n" + MSGID + DATE + b"\r\nb\r\n",
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


def test_mx_adds_only_received_and_holds_no_more_than_the_undecided_line() -> None:
    c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None)
    assert c.feed(b"Subject") == RECEIVED  # a field, or a line that ends the header section?
    assert c.feed(b": x\r\nX-A") == b"Subject: x\r\n"  # a field: stored, "X-A" still open
    assert c.feed(b": y\r\n\r\nbo") == b"X-A: y\r\n\r\nbo"
    assert c.feed(b"dy\r\n") == b"dy\r\n"
    assert c.finish() == b""


MX_CASES = [
    # (name, input, stored after the Received field) on a listener that adds no field
    ("plain", b"Subject: x\r\n\r\nb\r\n", b"Subject: x\r\n\r\nb\r\n"),
    ("empty", b"", b""),
    ("headers-only", b"Subject: x", b"Subject: x"),
    ("body-first", b"\r\nb\r\n", b"\r\nb\r\n"),
    # Postfix's smtpd: a first line that begins with white space continued our Received field.
    ("space-first", b" x\r\nSubject: y\r\n\r\nb\r\n", b"\r\n x\r\nSubject: y\r\n\r\nb\r\n"),
    ("tab-first", b"\tx\r\n\r\nb\r\n", b"\r\n\tx\r\n\r\nb\r\n"),
    # Postfix's cleanup: the first line that is no field ends the section; the empty line is supplied.
    ("no-empty-line", b"Subject: x\r\nbody\r\n", b"Subject: x\r\n\r\nbody\r\n"),
    ("no-colon-first", b"hello\r\nSubject: x\r\n", b"\r\nhello\r\nSubject: x\r\n"),
    ("folded", b"Subject: x\r\n y\r\n\tz\r\nbody\r\n", b"Subject: x\r\n y\r\n\tz\r\n\r\nbody\r\n"),
    ("lf-only", b"Subject: x\nbody\n", b"Subject: x\n\r\nbody\n"),
    ("later-from", b"Subject: x\r\nFrom a b\r\n\r\nb\r\n", b"Subject: x\r\n\r\nFrom a b\r\n\r\nb\r\n"),
    # Every mbox separator before the first other line, ">From " too, as Postfix's smtpd renames them.
    (
        "separators",
        b"From a\r\n>From b\r\n>>From c\r\nSubject: x\r\n\r\nFrom d\r\n",
        b"X-Mailbox-Line: From a\r\nX-Mailbox-Line: >From b\r\nX-Mailbox-Line: >>From c\r\n"
        b"Subject: x\r\n\r\nFrom d\r\n",
    ),
    ("separator-then-space", b"From a\r\n x\r\n", b"X-Mailbox-Line: From a\r\n\r\n x\r\n"),
    ("not-a-separator", b">Fro x\r\nSubject: x\r\n", b"\r\n>Fro x\r\nSubject: x\r\n"),
    ("only-quotes", b">>>", b"\r\n>>>"),
]


@pytest.mark.parametrize(("name", "message", "expected"), MX_CASES, ids=[c[0] for c in MX_CASES])
@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_every_listener_ends_the_header_section_as_postfix_does(
    name: str, message: bytes, expected: bytes, step: int
) -> None:
    c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None)
    out = b"".join(c.feed(message[i : i + step]) for i in range(0, len(message), step)) + c.finish()
    assert out == RECEIVED + expected


LINES = st.sampled_from(
    [b"Subject: x\r\n", b" y\r\n", b"\r\n", b"\n", b"From a\r\n", b">From b\n", b"body\r\n",
     b"Message-ID: <a@b>\r\n", b"Date: d\r\n", b"X:", b"\r", b"Fr", b"om ", b"\x00", b"\xc3\xa9"]
)  # fmt: skip


@given(st.lists(LINES, max_size=12), st.lists(st.integers(1, 40), max_size=12), st.booleans())
def test_what_is_stored_does_not_depend_on_how_the_bytes_were_cut(
    parts: list[bytes], cuts: list[int], adding: bool
) -> None:
    message = b"".join(parts)
    fields = (
        {"add_message_id": MSGID, "add_date": DATE} if adding else {"add_message_id": None, "add_date": None}
    )
    whole = HeaderCleanup(RECEIVED, **fields)
    expected = whole.feed(message) + whole.finish()
    c = HeaderCleanup(RECEIVED, **fields)
    out, pos = b"", 0
    for n in cuts:
        out += c.feed(message[pos : pos + n])
        pos += n
    out += c.feed(message[pos:]) + c.finish()
    assert out == expected


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


def mbox_line(length: int) -> bytes:
    """An mbox separator line of `length` octets before its CRLF."""
    head = b"From " + b"s" * (length - 37) + b"@b.test"
    line = head + b" Mon Dec  7 10:00:00 2026"
    assert len(line) == length
    return line


@pytest.mark.parametrize("step", [1, 7, 999, 1001, 5000])
@pytest.mark.parametrize("length", [40, 998 - len(MAILBOX_LINE), 999 - len(MAILBOX_LINE), 998])
def test_a_renamed_mbox_line_stays_within_998_octets(step: int, length: int) -> None:
    """RFC 5322 2.1.1: a separator line DATA took (at most 998 octets) grew by the field's name;
    past 998 it is folded after "From", and unfolding gives back the line as it came."""
    line = mbox_line(length)
    message = line + b"\r\nSubject: x\r\n\r\nFrom body\r\n"
    c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None)
    out = b"".join(c.feed(message[i : i + step]) for i in range(0, len(message), step)) + c.finish()
    assert max(len(x) for x in out.split(b"\r\n")) <= MAX_LINE - 2, length
    folded = len(MAILBOX_LINE) + length > MAX_LINE - 2
    renamed = MAILBOX_LINE + (line[:4] + b"\r\n" + line[4:] if folded else line)
    assert out == RECEIVED + renamed + message[len(line) :]
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["X-Mailbox-Line"] == line.decode() and parsed["Subject"] == "x"
    assert not parsed.defects


def test_an_unended_mbox_line_is_held_no_longer_than_a_line() -> None:
    """BDAT does not check line lengths: a separator line with no line end in sight is decided
    (and folded) once it is longer than any line DATA takes, not held to the end."""
    c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None)
    assert c.feed(b"From " + b"x" * (MAX_LINE - 6)) == RECEIVED
    assert c.feed(b"y") == MAILBOX_LINE + b"From\r\n " + b"x" * (MAX_LINE - 6) + b"y"
    assert c.feed(b"z" * 5000 + b"\r\n\r\nb\r\n") == b"z" * 5000 + b"\r\n\r\nb\r\n"
    assert c.finish() == b""


@pytest.mark.parametrize("message", [b"From x", b"From " + b"x" * 990])
def test_a_message_that_is_only_an_mbox_line_is_renamed_at_its_end(message: bytes) -> None:
    c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None)
    out = c.feed(message) + c.finish()
    assert out.startswith(RECEIVED + MAILBOX_LINE + b"From")
    assert max(len(x) for x in out.split(b"\r\n")) <= MAX_LINE - 2
    assert email.message_from_bytes(out, policy=email.policy.default)["X-Mailbox-Line"] == message.decode()


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


@pytest.mark.parametrize("adding", [True, False], ids=["submission", "mx"])
@pytest.mark.parametrize("step", [1, 7, 100_000])
def test_the_clients_received_fields_are_counted_once_each(adding: bool, step: int) -> None:
    # Any case and obsolete white space before the colon; not a Received inside another field, a
    # continuation or the body; the separator renamed by us and our own Received are not counted.
    head = (
        b"From a@b.test Mon Dec  7 10:00:00 2026\r\n"
        + b"Received: from a by b; Mon, 7 Dec 2026 10:00:00 +0000\r\n" * 3
        + b"RECEIVED : from c\r\n\tby d; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
        + b"X-Note: Received: not a field\r\n received: a continuation\r\n"
        + b"rEcEiVeD:\r\n"
    )
    message = head + b"\r\nReceived: in the body\r\n"
    extra = MSGID if adding else None
    c = HeaderCleanup(RECEIVED, add_message_id=extra, add_date=None)
    out = b"".join(c.feed(message[i : i + step]) for i in range(0, len(message), step)) + c.finish()
    assert c.hops == 5
    assert out.startswith(RECEIVED) and out.endswith(b"\r\nReceived: in the body\r\n")


def test_hops_count_past_the_hold_bound() -> None:
    # A header section too large to hold is passed through as it comes: counted all the same.
    field = b"Received: from a by b; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    message = field * (MAX_HEADER_HOLD // len(field) + 10) + b"\r\nbody\r\n"
    c = HeaderCleanup(RECEIVED, add_message_id=MSGID, add_date=None)
    c.feed(message)
    c.finish()
    assert c.hops == MAX_HEADER_HOLD // len(field) + 10


@pytest.mark.parametrize("step", [1, 5, 100_000])
def test_submission_drops_bcc_fields_and_nothing_else(step: int) -> None:
    # RFC 5322 3.6.3/3.6.6: Bcc and Resent-Bcc, any case, with their continuation lines; a field
    # whose name only ends in "bcc", a Bcc in the body and MX's copy are left alone.
    head = (
        b"Bcc: a@b.test\r\nFrom: f@b.test\r\nBCC : c@b.test,\r\n\td@b.test\r\n"
        b"X-Bcc: kept\r\nresent-bcc:\r\nSubject: s\r\n"
    )
    message = head + b"\r\nBcc: in the body\r\n"
    kept = b"From: f@b.test\r\nX-Bcc: kept\r\nSubject: s\r\n"

    def run_with(drop: bool) -> bytes:
        c = HeaderCleanup(RECEIVED, add_message_id=None, add_date=None, drop_bcc=drop)
        return b"".join(c.feed(message[i : i + step]) for i in range(0, len(message), step)) + c.finish()

    assert run_with(True) == RECEIVED + kept + b"\r\nBcc: in the body\r\n"
    assert run_with(False) == RECEIVED + message
