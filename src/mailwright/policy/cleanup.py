"""Header cleanup on the way into the queue: Received, and Message-ID/Date for submissions.

Streams: the `Received:` trace header (RFC 5321 4.4, RFC 3848 protocol names) is written
before the first body byte; the header section is then held only until its end (the
first empty line, or the first line that is not a header field) so that a submission
missing `Message-ID:` or `Date:` gets them added (RFC 6409 8.2, 8.3) at that end, with the
empty line RFC 5322 requires when the body began without one.  The held part is bounded by
`MAX_HEADER_HOLD`; a header section larger than that is passed through untouched (nothing
is added) rather than held in memory, however its bytes were cut into chunks.  A field
present but empty (`Message-ID:` alone) counts as present, as in Postfix: adding a second
one would break RFC 5322 3.6's one-field limit.

What a client controls in the trace header is made safe here (`trace_name`, `header_host`),
as Postfix's smtpd does with its HELO name: the header must parse the same for every
reader (RFC 5322 3.6.7: the tokens, then the one `;`, then the date), so the HELO/EHLO name
keeps only atext and dots (RFC 5322 3.2.3) and every other character becomes "?"; an
address literal is kept whole.  A message without SMTPUTF8 gains no 8-bit octet: a
non-ASCII HELO name becomes its A-label (RFC 5890), or "?"s where it is no domain, and the
server's own name is written as A-labels.  The recipient in `for <...>` is the parsed
path re-quoted (`protocol.address`), so its specials stay inside a quoted string.

An mbox separator (`From ` as the first line: a client piping a mailbox file) would end the
header section at once, and every field after it would be body; like Postfix's cleanup, it
is renamed `X-Mailbox-Line: From ...`, on every listener.  The renamed line is held until it
ends (at most `MAX_LINE` octets, the engine's DATA limit) so that, where the name would take it
past RFC 5322 2.1.1's 998 octets, it is folded after "From" instead: unfolding (RFC 5322
2.2.3) gives back the line as it came, which Postfix's cleanup does not ensure.

Not responsible for: DKIM signing, header validation or rewriting of addresses.
"""

from __future__ import annotations

import re
from typing import Final

import idna

from mailwright.protocol.address import is_address_literal

MAX_HEADER_HOLD: Final = 256 * 1024
_HAS_MSGID: Final = re.compile(rb"(?:^|\n)message-id[ \t]*:", re.IGNORECASE)
_HAS_DATE: Final = re.compile(rb"(?:^|\n)date[ \t]*:", re.IGNORECASE)
_FIELD: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")  # field-name, optional obsolete WSP, colon
# RFC 5322 atext and ".": a name made of these is a run of atoms in a header, so nothing in it
# can open a comment, a quoted string or an angle address, or end the tokens early with ";".
_ATEXT_DOT: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~."
_TRACE_SAFE: Final = re.compile(f"[{re.escape(_ATEXT_DOT)}]+\\Z")
MBOX_SEPARATOR: Final = b"From "
MAILBOX_LINE: Final = b"X-Mailbox-Line: "
MAX_LINE: Final = 1000  # octets with CRLF (RFC 5321 4.5.3.1.6): longer lines fail DATA anyway


def protocol_name(*, extended: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """RFC 3848 / RFC 6531 3.7.3 'with' keyword."""
    if not extended:
        return "SMTP"
    name = ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth else "")
    return name


def trace_name(helo: str, *, utf8: bool) -> str:
    """The HELO/EHLO argument as a `Received:` header's `from` clause may carry it.

    `utf8`: the message is SMTPUTF8 (RFC 6532 headers), so non-ASCII characters may stay.
    The engine has already refused names with spaces or unprintable characters; the result
    has as many characters as the name, or is its A-label form (at most 253), so the
    header's first line stays far below 998 octets.
    """
    if _TRACE_SAFE.match(helo) is not None or is_address_literal(helo):
        return helo
    if not utf8 and not helo.isascii():
        try:
            alabels = idna.encode(helo, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            alabels = ""
        if _TRACE_SAFE.match(alabels) is not None:
            return alabels
    return "".join(ch if ch in _ATEXT_DOT or (utf8 and not ch.isascii()) else "?" for ch in helo)


def header_host(hostname: str) -> str:
    """The server's own name as headers carry it: A-labels, valid in a 7-bit message too."""
    if hostname.isascii():
        return hostname
    try:
        return idna.encode(hostname, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        # The configuration loader checked the name with Python's IDNA 2003 codec.
        return hostname.encode("idna").decode("ascii")


def _undecided(lead: bytes) -> bool:
    """Whether the message's first octets may still be an mbox separator, or are one not yet ended."""
    if len(lead) < len(MBOX_SEPARATOR):
        return MBOX_SEPARATOR.startswith(lead)
    return lead.startswith(MBOX_SEPARATOR) and len(lead) < MAX_LINE and b"\n" not in lead


def _rename_separator(lead: bytes) -> bytes:
    """The message's first octets with an mbox separator line made a header field."""
    if not lead.startswith(MBOX_SEPARATOR):
        return lead
    lf = lead.find(b"\n")
    end = len(lead) if lf < 0 else lf - 1 if lf > 0 and lead[lf - 1] == 0x0D else lf
    if len(MAILBOX_LINE) + end <= MAX_LINE - 2:
        return MAILBOX_LINE + lead
    # Folded where the separator's own space is, so the continuation is the line less "From".
    return MAILBOX_LINE + lead[:4] + b"\r\n" + lead[4:]


class HeaderCleanup:
    """feed() bytes of the message as received; returns the bytes to store."""

    def __init__(self, received: bytes, *, add_message_id: bytes | None, add_date: bytes | None) -> None:
        self._prefix = received
        self._msgid = add_message_id
        self._date = add_date
        self._held = bytearray()
        self._scan = 0  # offset of the first held line not yet classified
        self._holding = add_message_id is not None or add_date is not None
        # The message's first octets while they may still be an mbox separator; None once decided.
        self._lead: bytes | None = b""

    def feed(self, data: bytes) -> bytes:
        out = self._prefix
        self._prefix = b""
        if self._lead is not None:
            data = self._lead + data
            if _undecided(data):
                self._lead = data  # BDAT chunks may be a few octets long
                return out
            self._lead = None
            data = _rename_separator(data)
        if not self._holding:
            return out + data if out else data
        self._held += data
        end = self._header_end(final=False)
        # The bound is on the header section, not on what is held: decided on its end's offset,
        # the outcome does not depend on how the client's bytes were cut into chunks.
        if end is not None and end[0] <= MAX_HEADER_HOLD:
            return out + self._release(*end)
        if end is not None or len(self._held) > MAX_HEADER_HOLD:
            return out + self._pass_through()
        return out

    def finish(self) -> bytes:
        """The message ended; returns whatever is still held (headers-only messages)."""
        out = self._prefix
        self._prefix = b""
        lead, self._lead = self._lead, None
        if lead:
            out += self.feed(_rename_separator(lead))
        if not self._holding:
            return out
        end = self._header_end(final=True)
        assert end is not None
        if end[0] > MAX_HEADER_HOLD:
            return out + self._pass_through()
        return out + self._release(*end)

    def _pass_through(self) -> bytes:
        self._holding = False
        passed = bytes(self._held)
        self._held.clear()
        return passed

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
