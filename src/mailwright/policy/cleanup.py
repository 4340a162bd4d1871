"""Header cleanup on the way into the queue: Received, and Message-ID/Date for submissions.

Streams: the `Received:` trace header (RFC 5321 4.4, RFC 3848 protocol names) is written
before the first body byte. On every listener the header section ends where Postfix's cleanup
ends it: at the first empty line, or at the first line that is neither a header field nor a
continuation (RFC 5322 2.2, 3.5), and there the empty line RFC 5322 2.1 requires is supplied when
the body began without one; a first line that begins with white space is such a line (Postfix's
smtpd: it would otherwise continue our own `Received:` field). Only the line not yet classified
is held (a line is classified on its first `MAX_LINE` octets), except on submission, where the
header section is held until its end so that a missing `Message-ID:` or `Date:` is added there
(RFC 6409 8.2, 8.3), and its `Bcc:` and `Resent-Bcc:` fields are removed (`drop_bcc`): RFC 5322
3.6.3 leaves their removal to whoever prepares the message, and a program that submits a message
with the field in it would otherwise show every To and Cc recipient the blind copies' addresses
(Postfix's cleanup removes them; smtplib's `send_message` and Nodemailer remove them first).
That hold is bounded by `MAX_HEADER_HOLD`: a header section larger than that gets nothing added
or removed, however its bytes were cut into chunks. A field present but empty
(`Message-ID:` alone) counts as present, as in Postfix: adding a second one would break RFC
5322 3.6's one-field limit. Nothing else is changed: the other fields are stored as they came.

What a client controls in the trace header is made safe here (`trace_name`, `header_host`),
as Postfix's smtpd does with its HELO name: the header must parse the same for every
reader (RFC 5322 3.6.7: the tokens, then the one `;`, then the date), so the HELO/EHLO name
keeps only atext and dots (RFC 5322 3.2.3) and every other character becomes "?"; an
address literal is kept whole.  A message without SMTPUTF8 gains no 8-bit octet: a
non-ASCII HELO name becomes its A-label (RFC 5890), or "?"s where it is no domain, and the
server's own name is written as A-labels.  The recipient in `for <...>` is the parsed
path re-quoted (`protocol.address`), so its specials stay inside a quoted string.

An mbox separator (`From `, or `>From ` with any number of `>`, as Postfix's smtpd tests it) as
the first line (a client piping a mailbox file) would end the header section at once, and every
field after it would be body; like Postfix's smtpd, every such line before the first other one
is renamed `X-Mailbox-Line: From ...`, on every listener. A separator line is held until it
ends (at most `MAX_LINE` octets, the engine's DATA limit) so that, where the name would take it
past RFC 5322 2.1.1's 998 octets, it is folded after "From" instead: unfolding (RFC 5322
2.2.3) gives back the line as it came, which Postfix does not ensure.

The client's `Received:` fields are counted as they pass (`hops`), so that the session can refuse
a message that has travelled more than `MAX_HOPS` hops, a mail loop (RFC 5321 6.3: counting them
"has proven to be an effective ... method of detecting loops"; a threshold of at least 100).

Not responsible for: DKIM signing, header validation or rewriting of addresses, refusing the
looping message (the session does, at the end of its data).
"""

from __future__ import annotations

import re
from typing import Final

import idna

from mailwright.protocol.address import is_address_literal

MAX_HEADER_HOLD: Final = 256 * 1024
# Searched in the header section lowered, behind an LF: a literal prefix, which re finds at
# memchr speed (a case-insensitive pattern is matched octet by octet).
_HAS_MSGID: Final = re.compile(rb"\nmessage-id[ \t]*:")
_HAS_DATE: Final = re.compile(rb"\ndate[ \t]*:")
_FIELD: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")  # field-name, optional obsolete WSP, colon
# RFC 5322 atext and ".": a name made of these is a run of atoms in a header, so nothing in it
# can open a comment, a quoted string or an angle address, or end the tokens early with ";".
_ATEXT_DOT: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~."
_TRACE_SAFE: Final = re.compile(f"[{re.escape(_ATEXT_DOT)}]+\\Z")
MBOX_SEPARATOR: Final = b"From "
MAILBOX_LINE: Final = b"X-Mailbox-Line: "
MAX_LINE: Final = 1000  # octets with CRLF (RFC 5321 4.5.3.1.6): longer lines fail DATA anyway
# More Received fields than this in what a client sends is a loop (RFC 5321 6.3: "at least 100";
# Postfix's hopcount_limit is 50 and counts Delivered-To too).
MAX_HOPS: Final = 100
_RECEIVED: Final = re.compile(rb"\nreceived[ \t]*:")
# A Bcc or Resent-Bcc field with its continuation lines (RFC 5322 3.6.3, 3.6.6).
_BCC: Final = re.compile(rb"^(?:resent-)?bcc[ \t]*:.*\n(?:[ \t].*\n)*", re.IGNORECASE | re.MULTILINE)
# Whole lines at once, as _header_end classifies them one by one (a field's colon within the
# line's first MAX_LINE octets): a run of field lines, each with its continuation lines, and a
# run of continuation lines. Scanned in C, a header section costs no Python step per line.
_CONTINUATIONS: Final = re.compile(rb"(?:[ \t][^\n]*\n)*")
_FIELDS: Final = re.compile(
    rb"(?:(?=[^:\n]{1,%d}:)[\x21-\x39\x3b-\x7e]+[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*)*" % (MAX_LINE - 1)
)


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
    """Whether a line at the message's start may still be an mbox separator, or is one not yet ended."""
    if len(lead) >= MAX_LINE or b"\n" in lead:
        return False
    rest = lead.lstrip(b">")
    if len(rest) < len(MBOX_SEPARATOR):
        return MBOX_SEPARATOR.startswith(rest)
    return rest.startswith(MBOX_SEPARATOR)


def _is_separator(line: bytes) -> bool:
    """`From ` or `>From ` (any number of `>`) starts the line, as Postfix's smtpd tests it."""
    return line.lstrip(b">").startswith(MBOX_SEPARATOR)


def _rename_separator(line: bytes) -> bytes:
    """An mbox separator line (with its line end, if it has one) made a header field."""
    lf = line.find(b"\n")
    end = len(line) if lf < 0 else lf - 1 if lf > 0 and line[lf - 1] == 0x0D else lf
    if len(MAILBOX_LINE) + end <= MAX_LINE - 2:
        return MAILBOX_LINE + line
    # Folded where the separator's own space is, so the continuation is the line less "From".
    fold = len(line) - len(line.lstrip(b">")) + len(MBOX_SEPARATOR) - 1
    return MAILBOX_LINE + line[:fold] + b"\r\n" + line[fold:]


class HeaderCleanup:
    """feed() bytes of the message as received; returns the bytes to store."""

    def __init__(
        self,
        received: bytes,
        *,
        add_message_id: bytes | None,
        add_date: bytes | None,
        drop_bcc: bool = False,
    ) -> None:
        self._prefix = received
        self._msgid = add_message_id
        self._date = add_date
        self._drop_bcc = drop_bcc
        # Whether the whole header section is held (to add or drop fields at its end), or only the
        # line not yet classified (every listener ends the section where Postfix's cleanup does).
        self._adding = add_message_id is not None or add_date is not None or drop_bcc
        self._held = bytearray()
        self._scan = 0  # offset in _held of the first octet not yet classified
        self._in_line = False  # _scan is inside a line already classified (a field or a continuation)
        self._first = True  # no line of the message proper (after mbox separators) classified yet
        self._done = False  # the header section has ended: the rest passes through
        # The message's first line while it may still be an mbox separator; None once decided.
        self._lead: bytes | None = b""
        self.hops = 0  # the client's Received fields in the header section so far

    def feed(self, data: bytes) -> bytes:
        out = self._prefix
        self._prefix = b""
        if self._done:
            return out + data if out else data
        if self._lead is not None:
            data = self._separators(self._lead + data)
        if data:
            self._held += data
        return out + self._advance(final=False)

    def finish(self) -> bytes:
        """The message ended; returns whatever is still held (headers-only messages)."""
        out = self._prefix
        self._prefix = b""
        lead, self._lead = self._lead, None
        if self._done:
            return out
        if lead:
            if _is_separator(lead):
                self._take_field(_rename_separator(lead), ended=False)
            else:
                self._held += lead
        return out + self._advance(final=True)

    def _separators(self, data: bytes) -> bytes:
        """At the message's start: renames each mbox separator line (Postfix's smtpd renames every
        one before the first other line); returns the octets after them."""
        while True:
            if _undecided(data):
                self._lead = data  # BDAT chunks may be a few octets long
                return b""
            if not _is_separator(data):
                self._lead = None
                return data
            lf = data.find(b"\n")
            if lf < 0:  # no line end within the longest line DATA takes: renamed as it is
                self._take_field(_rename_separator(data), ended=False)
                self._lead = None
                return b""
            self._take_field(_rename_separator(data[: lf + 1]), ended=True)
            data = data[lf + 1 :]

    def _take_field(self, field: bytes, *, ended: bool) -> None:
        self._held += field
        self._scan = len(self._held)
        self._in_line = not ended

    def _advance(self, *, final: bool) -> bytes:
        """Scans what is held; returns what may be stored now."""
        end = self._header_end(final=final)
        if end is not None:
            return self._release(*end)
        if not self._adding or self._scan > MAX_HEADER_HOLD:
            # Every held line before _scan is a field: the section ends past the bound, so nothing
            # will be added (whatever the chunks were), and only the undecided line is kept.
            self._adding = False
            passed = bytes(self._held[: self._scan])
            del self._held[: self._scan]
            self._scan = 0
            self._count_hops(b"\n" + passed.lower())
            return passed
        return b""

    def _count_hops(self, lowered: bytes) -> None:
        """Adds the Received fields in `lowered`: whole lines of the header section, lower-cased
        behind an LF (each header octet passed here once). Most messages hold none: a substring
        test before the pattern."""
        if b"received" in lowered:
            self.hops += len(_RECEIVED.findall(lowered))

    def _header_end(self, *, final: bool) -> tuple[int, bool] | None:
        """Where the header section ends: (offset, whether an empty line is there already).

        It ends at the empty line, or at the first line that is neither a header field nor a
        continuation (RFC 5322 2.2, 3.5), as Postfix's cleanup decides; a first line that begins
        with white space is no continuation (it would continue our Received field), as in
        Postfix's smtpd. A line is classified on its first MAX_LINE octets. None: undecided yet.
        """
        held = self._held
        pos = self._scan
        size = len(held)
        while pos < size:
            # LF ends a line here even when bare: BDAT bodies are not line-checked, and a
            # body written with LF line ends must not look like one endless header.
            if self._in_line:
                lf = held.find(b"\n", pos)
                if lf < 0:
                    pos = size
                    break
                self._in_line = False
                pos = lf + 1
                continue
            if not self._first:
                pos = _CONTINUATIONS.match(held, pos).end()  # type: ignore[union-attr]
            end = _FIELDS.match(held, pos).end()  # type: ignore[union-attr]
            if end > pos:
                self._first = False
                pos = end
                continue
            if pos == size:
                break
            # The line at pos is no whole field line: an empty one, an unended one, or no field.
            lf = held.find(b"\n", pos)
            if lf < 0 and size - pos < MAX_LINE and not final:
                break
            eol = lf - 1 if lf > pos and held[lf - 1] == 0x0D else lf
            if eol == pos:
                return pos, True
            continuation = not self._first and held[pos] in (0x20, 0x09)  # SP or HTAB
            if not continuation and _FIELD.match(held, pos, min(size, pos + MAX_LINE)) is None:
                return pos, False
            self._first = False
            if lf < 0:
                self._in_line = True
                pos = size
                break
            pos = lf + 1
        self._scan = pos
        if final:
            return size, False
        return None

    def _release(self, end: int, has_blank: bool) -> bytes:
        self._done = True
        headers = bytes(self._held[:end])
        rest = bytes(self._held[end:])
        self._held.clear()
        # Lowered once, for the hop count and the Message-ID/Date search: dropping Bcc fields
        # removes neither a Received, a Message-ID nor a Date line.
        lowered = (b"\n" + headers).lower()
        self._count_hops(lowered)
        extra = b""
        if self._adding and end <= MAX_HEADER_HOLD:
            if headers and not headers.endswith(b"\n"):
                headers += b"\r\n"
            if self._drop_bcc:
                headers = _BCC.sub(b"", headers)
            if self._msgid is not None and _HAS_MSGID.search(lowered) is None:
                extra += self._msgid
            if self._date is not None and _HAS_DATE.search(lowered) is None:
                extra += self._date
        if rest and not has_blank:
            extra += b"\r\n"  # the body began without the empty line RFC 5322 requires
        return headers + extra + rest
