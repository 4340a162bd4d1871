"""Header cleanup on the way into the queue: Received, and Message-ID/Date for submissions.

Streams: the `Received:` trace header (RFC 5321 4.4, RFC 3848 protocol names) is written
before the first body byte; the header section is then held only until its end (the
first empty line, or the first line that is not a header field) so that a submission
missing `Message-ID:` or `Date:` gets them added (RFC 6409 8.2, 8.3) at that end, with the
empty line RFC 5322 requires when the body began without one.  The held part is bounded by
`MAX_HEADER_HOLD`; a header section larger than that is passed through untouched (nothing
is added) rather than held in memory.

Not responsible for: DKIM signing, header validation or rewriting of addresses.
"""

from __future__ import annotations

import re
from typing import Final

MAX_HEADER_HOLD: Final = 256 * 1024
_HAS_MSGID: Final = re.compile(rb"(?:^|\n)message-id[ \t]*:", re.IGNORECASE)
_HAS_DATE: Final = re.compile(rb"(?:^|\n)date[ \t]*:", re.IGNORECASE)
_FIELD: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")  # field-name, optional obsolete WSP, colon


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
        self._scan = 0  # offset of the first held line not yet classified
        self._holding = add_message_id is not None or add_date is not None

    def feed(self, data: bytes) -> bytes:
        out = self._prefix
        self._prefix = b""
        if not self._holding:
            return out + data if out else data
        self._held += data
        end = self._header_end(final=False)
        if end is not None:
            return out + self._release(*end)
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
        end = self._header_end(final=True)
        assert end is not None
        return out + self._release(*end)

    def _header_end(self, *, final: bool) -> tuple[int, bool] | None:
        """Where the header section ends: (offset, whether an empty line is there already).

        It ends at the empty line, or at the first line that is neither a header field nor
        a continuation (RFC 5322 2.2, 3.5), as Postfix's cleanup decides.  None: undecided yet.
        """
        held = self._held
        pos = self._scan
        while pos < len(held):
            # LF ends a line here even when bare: BDAT bodies are not line-checked, and a
            # body written with LF line ends must not look like one endless header.
            lf = held.find(b"\n", pos)
            if lf < 0 and not final:
                self._scan = pos
                return None
            eol = lf - 1 if lf > pos and held[lf - 1] == 0x0D else lf
            if eol == pos:
                return pos, True
            continuation = pos > 0 and held[pos] in (0x20, 0x09)  # SP or HTAB
            if not continuation and _FIELD.match(held, pos) is None:
                return pos, False
            if lf < 0:
                break
            pos = lf + 1
        if not final:
            self._scan = pos
            return None
        return len(held), False

    def _release(self, end: int, has_blank: bool) -> bytes:
        self._holding = False
        headers = bytes(self._held[:end])
        rest = bytes(self._held[end:])
        self._held.clear()
        if headers and not headers.endswith(b"\n"):
            headers += b"\r\n"
        extra = b""
        if self._msgid is not None and _HAS_MSGID.search(headers) is None:
            extra += self._msgid
        if self._date is not None and _HAS_DATE.search(headers) is None:
            extra += self._date
        if rest and not has_blank:
            extra += b"\r\n"  # the body began without the empty line RFC 5322 requires
        return headers + extra + rest
