"""Header cleanup: Received first, Message-ID/Date added inside the header section, streaming."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailwright.policy.cleanup import MAX_HEADER_HOLD, HeaderCleanup, protocol_name

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


def test_protocol_names_rfc3848() -> None:
    assert protocol_name(extended=False, tls=True, auth=True, utf8=False) == "SMTP"
    assert protocol_name(extended=True, tls=True, auth=True, utf8=False) == "ESMTPSA"
    assert protocol_name(extended=True, tls=False, auth=False, utf8=True) == "UTF8SMTP"
