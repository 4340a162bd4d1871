"""SMTP replies: the one reply type, the one error type, and the catalog of standard replies.

A `Reply` is an immutable (code, enhanced status, text lines) triple.  It renders itself
to wire bytes (multi-line replies per RFC 5321 section 4.2.1) and parses from wire lines.
`SMTPError` carries a `Reply` and is the only exception type the project raises for
conditions that have an SMTP meaning; `temporary` follows the first digit (4xx).

Invariants:
- `code` is 200..599; `enhanced`, when present, is "class.subject.detail" (RFC 3463) and its
  class digit matches the first digit of `code`.
- Reply text never contains CR or LF (lines are split at construction).

Not responsible for: choosing which reply a situation deserves (the state machines do),
or explaining replies to people (the doctor does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Final

_ENHANCED: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\Z")


_CLASS_CACHE_SIZE: Final = 256
_class_of: dict[str, int] = {}


def _enhanced_class(enhanced: str) -> int:
    """The class digit of a valid RFC 3463 code, else 0.

    Cached in a plain dict, not `functools.lru_cache`: replies are built per message, and calling
    the cache's wrapper from compiled code cost 1.3k instructions, this function 0.4k (callgrind).
    Bounded: replies parsed from other servers may carry any code.
    """
    known = _class_of.get(enhanced)
    if known is not None:
        return known
    m = _ENHANCED.match(enhanced)
    digit = 0 if m is None else int(m.group(1))
    if len(_class_of) < _CLASS_CACHE_SIZE:
        _class_of[enhanced] = digit
    return digit


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. `lines` holds the text of each line, without code or CRLF."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    _wire: bytes = field(repr=False, compare=False, hash=False)  # rendered once: replies are reused

    def __init__(
        self, code: int, enhanced: str | None = None, text: str | tuple[str, ...] | list[str] = ""
    ) -> None:
        if not 200 <= code <= 599:
            raise ValueError(f"reply code {code} is outside 200..599")
        if enhanced is not None and _enhanced_class(enhanced) != code // 100:
            raise ValueError(f"enhanced status {enhanced!r} does not fit reply code {code}")
        # Lines end at LF only: `str.splitlines` also ends them at U+0085, U+2028 and the like,
        # which a client can put in what a reply echoes (its EHLO name, a parameter's keyword)
        # to add reply lines of its own making.
        if isinstance(text, str):
            parts = _lines(text)
        else:
            parts = tuple(line for t in text for line in _lines(t)) or ("",)
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "enhanced", enhanced)
        object.__setattr__(self, "lines", parts)
        object.__setattr__(self, "_wire", self._render())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)

    def to_bytes(self) -> bytes:
        return self._wire

    def _render(self) -> bytes:
        if len(self.lines) == 1 and self.enhanced:
            line = self.lines[0]
            if line and line[-1] != " ":  # one per message ("250 ... queued as"): one string, no strip
                return f"{self.code} {self.enhanced} {line}\r\n".encode()
        code = str(self.code)
        prefix = f"{self.enhanced} " if self.enhanced else ""
        if len(self.lines) == 1:  # most replies: no loop
            line = self.lines[0]
            body = f"{prefix}{line}".rstrip(" ") if line or prefix else ""
            return f"{code} {body}\r\n".encode()
        out = []
        last = len(self.lines) - 1
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            # The enhanced code is repeated on every line (RFC 2034 section 4).
            body = f"{prefix}{line}".rstrip(" ") if line or prefix else ""
            out.append(f"{code}{sep}{body}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        head = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        return head + " / ".join(self.lines)


def _lines(text: str) -> tuple[str, ...]:
    if "\n" not in text:
        return (text,)
    return tuple(line.removesuffix("\r") for line in text.removesuffix("\n").split("\n"))


class SMTPError(Exception):
    """An error with an SMTP meaning; `reply` is what the peer is (or was) told."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply

    @property
    def temporary(self) -> bool:
        return self.reply.is_transient


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """Split one reply line into (code, is_last, text). Raises ValueError when malformed."""
    if line.endswith(b"\r\n"):
        line = line[:-2]
    if len(line) < 3 or not line[:3].isdigit():
        raise ValueError(f"malformed reply line {line[:80]!r}")
    code = int(line[:3])
    if not 200 <= code <= 599:
        raise ValueError(f"reply code {code} outside 200..599")
    if len(line) == 3:
        return code, True, ""
    sep = line[3:4]
    if sep not in (b" ", b"-"):
        raise ValueError(f"malformed reply line {line[:80]!r}")
    return code, sep == b" ", line[4:].decode("utf-8", "replace")


def reply_from_lines(code: int, texts: list[str]) -> Reply:
    """Build a Reply from received lines, lifting a leading enhanced code when it fits."""
    enhanced: str | None = None
    first = texts[0] if texts else ""
    head, _, _rest = first.partition(" ")
    m = _ENHANCED.match(head)
    if m is not None and int(m.group(1)) == code // 100:
        enhanced = head
        stripped = []
        for t in texts:
            h, _, r = t.partition(" ")
            stripped.append(r if h == enhanced else t)
        texts = stripped
    return Reply(code, enhanced, tuple(texts) or ("",))


class R:
    """The catalog of standard replies (RFC 5321 section 4.2, RFC 3463 codes)."""

    READY: ClassVar[Reply] = Reply(220, None, "ESMTP ready")
    BYE: ClassVar[Reply] = Reply(221, "2.0.0", "Bye")
    OK: ClassVar[Reply] = Reply(250, "2.0.0", "OK")
    SENDER_OK: ClassVar[Reply] = Reply(250, "2.1.0", "Sender OK")
    RCPT_OK: ClassVar[Reply] = Reply(250, "2.1.5", "Recipient OK")
    RESET: ClassVar[Reply] = Reply(250, "2.0.0", "Reset OK")
    NOOP: ClassVar[Reply] = Reply(250, "2.0.0", "OK")
    VRFY: ClassVar[Reply] = Reply(
        252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
    )
    START_DATA: ClassVar[Reply] = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
    START_TLS: ClassVar[Reply] = Reply(220, "2.0.0", "Ready to start TLS")
    AUTH_OK: ClassVar[Reply] = Reply(235, "2.7.0", "Authentication successful")

    SHUTTING_DOWN: ClassVar[Reply] = Reply(421, "4.3.2", "Service shutting down, closing connection")
    TIMEOUT: ClassVar[Reply] = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
    TOO_MANY_CONNECTIONS: ClassVar[Reply] = Reply(421, "4.7.0", "Too many connections, try again later")
    AUTH_REVOKED: ClassVar[Reply] = Reply(
        421, "4.7.0", "Credentials revoked (user removed or password changed), closing connection"
    )
    TOO_MANY_RECIPIENTS: ClassVar[Reply] = Reply(452, "4.5.3", "Too many recipients")
    STORAGE_FULL: ClassVar[Reply] = Reply(452, "4.3.1", "Insufficient system storage, try again later")
    LOCAL_ERROR: ClassVar[Reply] = Reply(451, "4.3.0", "Local error in processing, try again later")
    TLS_UNAVAILABLE: ClassVar[Reply] = Reply(454, "4.7.0", "TLS not available due to temporary reason")
    AUTH_TEMP_LOCKED: ClassVar[Reply] = Reply(
        454, "4.7.0", "Too many authentication failures, try again later"
    )

    LINE_TOO_LONG: ClassVar[Reply] = Reply(500, "5.5.2", "Line too long")
    # RFC 4954 6: the AUTH command and the responses of its exchange have a code of their own.
    AUTH_LINE_TOO_LONG: ClassVar[Reply] = Reply(500, "5.5.6", "Authentication exchange line is too long")
    BARE_LF_COMMAND: ClassVar[Reply] = Reply(
        500, "5.5.2", "Bare CR or LF in command; lines must end with CRLF (RFC 5321 2.3.8)"
    )
    UNRECOGNIZED: ClassVar[Reply] = Reply(500, "5.5.1", "Command unrecognized")
    SYNTAX: ClassVar[Reply] = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
    BAD_SENDER_SYNTAX: ClassVar[Reply] = Reply(501, "5.1.7", "Bad sender address syntax")
    BAD_RCPT_SYNTAX: ClassVar[Reply] = Reply(501, "5.1.3", "Bad recipient address syntax")
    NOT_IMPLEMENTED: ClassVar[Reply] = Reply(502, "5.5.1", "Command not implemented")
    BAD_SEQUENCE: ClassVar[Reply] = Reply(503, "5.5.1", "Bad sequence of commands")
    NO_VALID_RCPTS: ClassVar[Reply] = Reply(554, "5.5.1", "No valid recipients")
    AUTH_REQUIRED: ClassVar[Reply] = Reply(530, "5.7.0", "Authentication required")
    TLS_REQUIRED: ClassVar[Reply] = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
    ENCRYPTION_REQUIRED: ClassVar[Reply] = Reply(
        538, "5.7.11", "Encryption required for requested authentication mechanism"
    )
    AUTH_FAILED: ClassVar[Reply] = Reply(535, "5.7.8", "Authentication credentials invalid")
    AUTH_MECH_UNKNOWN: ClassVar[Reply] = Reply(504, "5.5.4", "Unrecognized authentication type")
    AUTH_ALREADY: ClassVar[Reply] = Reply(503, "5.5.1", "Already authenticated")
    AUTH_CANCELLED: ClassVar[Reply] = Reply(501, "5.7.0", "Authentication cancelled")
    AUTH_BAD_BASE64: ClassVar[Reply] = Reply(501, "5.5.2", "Cannot decode base64 response")
    RELAY_DENIED: ClassVar[Reply] = Reply(554, "5.7.1", "Relay access denied")
    SENDER_NOT_OWNED: ClassVar[Reply] = Reply(553, "5.7.1", "Sender address not owned by authenticated user")
    UNKNOWN_PARAM: ClassVar[Reply] = Reply(555, "5.5.4", "Unsupported MAIL/RCPT parameter")
    MESSAGE_TOO_BIG: ClassVar[Reply] = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
    BARE_LF_DATA: ClassVar[Reply] = Reply(
        550, "5.6.0", "Message contains bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)"
    )
    TEXT_LINE_TOO_LONG: ClassVar[Reply] = Reply(
        550,
        "5.6.0",
        "Message line longer than 998 octets (RFC 5321 4.5.3.1.6); use quoted-printable or base64",
    )
    SMTPUTF8_REQUIRED: ClassVar[Reply] = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    REQUIRETLS_NEEDS_TLS: ClassVar[Reply] = Reply(530, "5.7.10", "REQUIRETLS needs a TLS session")
