"""Header cleanup on the way into the queue: Received, and Message-ID/Date for submissions.

Streams: the `Received:` trace header (RFC 5321 4.4, RFC 3848 protocol names) is written
before the first body byte; the header section is then held only until its end (the
first empty line) so that a submission missing `Message-ID:` or `Date:` gets them added
(RFC 6409 8.2, 8.3) just before that empty line.  The held part is bounded by
`MAX_HEADER_HOLD`; a header section larger than that is passed through untouched (nothing
is added) rather than held in memory.

Not responsible for: DKIM signing, header validation or rewriting of addresses.
"""

from __future__ import annotations

import re

MAX_HEADER_HOLD = 256 * 1024
_HAS_MSGID = re.compile(rb"(?:^|\r\n)message-id[ \t]*:", re.IGNORECASE)
_HAS_DATE = re.compile(rb"(?:^|\r\n)date[ \t]*:", re.IGNORECASE)


def protocol_name(*, extended: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """RFC 3848 / RFC 6531 3.7.3 'with' keyword."""
    if not extended:
        return "SMTP"
    name = ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth else "")
    return name


class HeaderCleanup:
    """feed() bytes of the message as received; returns the bytes to store."""

    def __init__(self, received: bytes, *, add_message_id: bytes | None, add_date: bytes | None) -> None:
        self._prefix = received
        self._msgid = add_message_id
        self._date = add_date
        self._held = bytearray()
        self._holding = add_message_id is not None or add_date is not None

    def feed(self, data: bytes) -> bytes:
        out = self._prefix
        self._prefix = b""
        if not self._holding:
            return out + data if out else data
        self._held += data
        end = self._header_end()
        if end >= 0:
            return out + self._release(end)
        if len(self._held) > MAX_HEADER_HOLD:
            self._holding = False
            passed = bytes(self._held)
            self._held.clear()
            return out + passed
        return out

    def finish(self) -> bytes:
        """The message ended; returns whatever is still held (headers-only messages)."""
        out = self._prefix
        self._prefix = b""
        if not self._holding:
            return out
        return out + self._release(len(self._held))

    def _header_end(self) -> int:
        """Offset where the empty line starts, or -1."""
        if self._held[:2] == b"\r\n":
            return 0
        i = self._held.find(b"\r\n\r\n")
        return i + 2 if i >= 0 else -1

    def _release(self, end: int) -> bytes:
        self._holding = False
        headers = bytes(self._held[:end])
        rest = bytes(self._held[end:])
        self._held.clear()
        if headers and not headers.endswith(b"\r\n"):
            headers += b"\r\n"
        extra = b""
        if self._msgid is not None and _HAS_MSGID.search(headers) is None:
            extra += self._msgid
        if self._date is not None and _HAS_DATE.search(headers) is None:
            extra += self._date
        return headers + extra + rest
