"""Events the server-role engine hands to its caller.

Each event is a small immutable value: its attributes are `Final` (mypy refuses assignments;
compiled with mypyc, so does the run time).  Events whose class sets `needs_reply = True`
pause the engine: it parses nothing further until the caller answers with
`ServerConnection.accept()` or `ServerConnection.reject(reply)`.  That keeps replies in
command order under PIPELINING (RFC 2920) while the caller does slow work (a queue commit,
a password check) asynchronously.  All other events are notices; the engine has already
queued whatever reply they need.

Plain classes rather than frozen dataclasses: a session makes about seven events, and a frozen
dataclass's generated `__init__` (interpreted, one `object.__setattr__` per field) cost several
times a compiled one.

Not responsible for: deciding anything.  Policy lives with the caller.
"""

from __future__ import annotations

from typing import ClassVar, Final

from mailwright.protocol.address import Address
from mailwright.protocol.params import MailParams, RcptParams
from mailwright.protocol.reply import Reply
from mailwright.protocol.sasl import Credentials


class Event:
    __slots__ = ()
    needs_reply: ClassVar[bool] = False
    fields: ClassVar[tuple[str, ...]] = ()  # for repr()

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.fields)
        return f"{type(self).__name__}({args})"


class Hello(Event):
    """EHLO or HELO.  accept() sends the greeting with the extensions of this session."""

    __slots__ = ("extended", "hostname")
    needs_reply: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = ("hostname", "extended")

    def __init__(self, hostname: str, extended: bool) -> None:
        self.hostname: Final = hostname
        self.extended: Final = extended


class Mail(Event):
    """MAIL FROM, syntax already checked.  `sender` is None for the null reverse path."""

    __slots__ = ("params", "raw_params", "sender")
    needs_reply: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = ("sender", "params", "raw_params")

    def __init__(self, sender: Address | None, params: MailParams, raw_params: str) -> None:
        self.sender: Final = sender
        self.params: Final = params
        self.raw_params: Final = raw_params


class Rcpt(Event):
    """RCPT TO, syntax and recipient limit already checked."""

    __slots__ = ("params", "raw_params", "recipient")
    needs_reply: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = ("recipient", "params", "raw_params")

    def __init__(self, recipient: Address, params: RcptParams, raw_params: str) -> None:
        self.recipient: Final = recipient
        self.params: Final = params
        self.raw_params: Final = raw_params


class BodyStart(Event):
    """The body begins (DATA got its 354, or the first BDAT chunk arrived)."""

    __slots__ = ("chunked",)
    fields: ClassVar[tuple[str, ...]] = ("chunked",)

    def __init__(self, chunked: bool) -> None:
        self.chunked: Final = chunked


class BodyChunk(Event):
    """Message bytes as they arrive: dot-unstuffed, CRLF line ends, terminator removed."""

    __slots__ = ("data",)
    fields: ClassVar[tuple[str, ...]] = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data: Final = data


class EndOfData(Event):
    """The whole body arrived intact.  accept(reply) must carry the queue id text."""

    __slots__ = ("size",)
    needs_reply: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = ("size",)

    def __init__(self, size: int) -> None:
        self.size: Final = size


class BodyRejected(Event):
    """The body ended but breaks a rule (size, bare CR/LF, line length); `reply` was sent."""

    __slots__ = ("reply",)
    fields: ClassVar[tuple[str, ...]] = ("reply",)

    def __init__(self, reply: Reply) -> None:
        self.reply: Final = reply


class TransactionReset(Event):
    """RSET, a new EHLO once accepted (it comes right after that Hello), STARTTLS or a failed
    BDAT: drop any envelope and body in progress."""

    __slots__ = ()


class AuthAttempt(Event):
    """A complete SASL exchange.  accept() → 235; reject() → 535 5.7.8 unless a reply is given."""

    __slots__ = ("credentials",)
    needs_reply: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = ("credentials",)

    def __init__(self, credentials: Credentials) -> None:
        self.credentials: Final = credentials


class StartTLS(Event):
    """220 is queued: flush it, run the handshake, then call tls_started() (or close)."""

    __slots__ = ()


class Quit(Event):
    """221 is queued and the engine is closed: flush and close the connection."""

    __slots__ = ()


class Closing(Event):
    """The engine gave up on the peer (421 queued: too many errors): flush and close."""

    __slots__ = ("reply",)
    fields: ClassVar[tuple[str, ...]] = ("reply",)

    def __init__(self, reply: Reply) -> None:
        self.reply: Final = reply
