"""Events the server-role engine hands to its caller.

Each event is a small immutable dataclass.  Events whose class sets `needs_reply = True`
pause the engine: it parses nothing further until the caller answers with
`ServerConnection.accept()` or `ServerConnection.reject(reply)`.  That keeps replies in
command order under PIPELINING (RFC 2920) while the caller does slow work (a queue commit,
a password check) asynchronously.  All other events are notices; the engine has already
queued whatever reply they need.

Not responsible for: deciding anything.  Policy lives with the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mailwright.protocol.address import Address
from mailwright.protocol.params import MailParams, RcptParams
from mailwright.protocol.reply import Reply
from mailwright.protocol.sasl import Credentials


@dataclass(frozen=True, slots=True)
class Event:
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Hello(Event):
    """EHLO or HELO.  accept() sends the greeting with the extensions of this session."""

    needs_reply: ClassVar[bool] = True
    hostname: str
    extended: bool


@dataclass(frozen=True, slots=True)
class Mail(Event):
    """MAIL FROM, syntax already checked.  `sender` is None for the null reverse path."""

    needs_reply: ClassVar[bool] = True
    sender: Address | None
    params: MailParams
    raw_params: str


@dataclass(frozen=True, slots=True)
class Rcpt(Event):
    """RCPT TO, syntax and recipient limit already checked."""

    needs_reply: ClassVar[bool] = True
    recipient: Address
    params: RcptParams
    raw_params: str


@dataclass(frozen=True, slots=True)
class BodyStart(Event):
    """The body begins (DATA got its 354, or the first BDAT chunk arrived)."""

    chunked: bool


@dataclass(frozen=True, slots=True)
class BodyChunk(Event):
    """Message bytes as they arrive: dot-unstuffed, CRLF line ends, terminator removed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfData(Event):
    """The whole body arrived intact.  accept(reply) must carry the queue id text."""

    needs_reply: ClassVar[bool] = True
    size: int


@dataclass(frozen=True, slots=True)
class BodyRejected(Event):
    """The body ended but breaks a rule (size, bare CR/LF, line length); `reply` was sent."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class TransactionReset(Event):
    """RSET, a new EHLO, STARTTLS or a failed BDAT: drop any envelope and body in progress."""


@dataclass(frozen=True, slots=True)
class AuthAttempt(Event):
    """A complete SASL exchange.  accept() → 235; reject() → 535 5.7.8 unless a reply is given."""

    needs_reply: ClassVar[bool] = True
    credentials: Credentials


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """220 is queued: flush it, run the handshake, then call tls_started() (or close)."""


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """221 is queued and the engine is closed: flush and close the connection."""


@dataclass(frozen=True, slots=True)
class Closing(Event):
    """The engine gave up on the peer (421 queued: too many errors): flush and close."""

    reply: Reply
