"""Queue data model: envelopes, recipient states, message summaries, and queue ids.

Pure data, shared by every queue store, the scheduler, delivery and the operator tools.

Invariants:
- All types are frozen; a change of state is a new value written by a store.
- `Envelope.sender` is "" for the null reverse path (RFC 5321 section 4.5.5); addresses are kept
  as received (mailbox text without angle brackets).
- `Recipient.notify` / `Recipient.orcpt` keep the DSN parameters as given (RFC 3461 sections 4.1, 4.2)
  so that relaying can pass them on unchanged; `Envelope.mail_params` likewise keeps the MAIL FROM
  parameter text (RFC 5321 section 4.1.1.2), with AUTH= already as it may be passed on (the
  session writes AUTH=<> for a mailbox it does not vouch for, RFC 4954 section 5).
- A queued message is numbered by its store's single writer (`next_queue_number`): a 63-bit
  integer, the milliseconds since the epoch of its arrival shifted left by 20 bits, or one more
  than the last number given when that is larger. So numbers are unique without any randomness
  (one writer, strictly increasing, even when the clock steps back), sort by arrival to the
  millisecond, and serve as the table's own key (SQLite's rowid: no second index to keep).
- Its queue id, the name operators and clients see, is that number as 13 characters of Crockford
  base32 (digits and upper-case letters without I, L, O, U), most significant first, so ids sort
  as their numbers do and are safe as file names. `queue_id_number` reads one back (either case).

Not responsible for: persistence (see `store` and `sqlite`), retry policy (the scheduler), or
validating address syntax (the protocol layer did that before anything reached the queue).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SEQUENCE_BITS: Final = 20  # a million numbers a millisecond before the time part is borrowed
_NUMBER_LIMIT: Final = 1 << 63  # SQLite's largest rowid + 1; 43 bits of milliseconds last until 2248
QUEUE_ID_LENGTH: Final = 13  # 65 bits of base32; the first character holds only the top three


@dataclass(frozen=True, slots=True, init=False)
class Recipient:
    """One RCPT TO as accepted: mailbox text and the DSN parameters as given."""

    address: str
    notify: str | None
    orcpt: str | None

    # init=False and this __init__: a generated one stays interpreted under mypyc (14x slower).
    def __init__(self, address: str, notify: str | None = None, orcpt: str | None = None) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "orcpt", orcpt)


@dataclass(frozen=True, slots=True, init=False)
class Envelope:
    """The accepted SMTP envelope plus the session facts a relay needs later."""

    sender: str
    recipients: tuple[Recipient, ...]
    mail_params: str
    client_ip: str
    helo: str
    auth_user: str | None
    tls: bool
    received_at: float

    # init=False and this __init__: a generated one stays interpreted under mypyc (14x slower).
    def __init__(
        self,
        sender: str,
        recipients: tuple[Recipient, ...],
        mail_params: str = "",
        client_ip: str = "",
        helo: str = "",
        auth_user: str | None = None,
        tls: bool = False,
        received_at: float = 0.0,
    ) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "mail_params", mail_params)
        object.__setattr__(self, "client_ip", client_ip)
        object.__setattr__(self, "helo", helo)
        object.__setattr__(self, "auth_user", auth_user)
        object.__setattr__(self, "tls", tls)
        object.__setattr__(self, "received_at", received_at)


def envelope_from_row(
    sender: str,
    recipients: Iterable[Sequence[str | None]],
    mail_params: str,
    client_ip: str,
    helo: str,
    auth_user: str | None,
    tls: object,
    received_at: float,
) -> Envelope:
    """An `Envelope` from stored or transferred columns (recipients as (address, notify, orcpt))."""
    return Envelope(
        sender=sender,
        recipients=tuple(Recipient(str(r[0]), r[1], r[2]) for r in recipients),
        mail_params=mail_params,
        client_ip=client_ip,
        helo=helo,
        auth_user=auth_user,
        tls=bool(tls),
        received_at=float(received_at),
    )


class RecipientState(StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """Delivery progress for one recipient of a queued message."""

    address: str
    state: RecipientState
    attempts: int
    last_reply: str | None
    next_attempt: float | None


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What an operator sees about one queued message (no body)."""

    id: str
    sender: str
    size: int
    received_at: float
    held: bool
    client_ip: str
    auth_user: str | None
    recipients: tuple[RecipientStatus, ...]


_PAIRS: Final = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)  # every 10-bit value as 2 characters
_VALUES: Final = {ch: v for v, ch in enumerate(_CROCKFORD)}
_VALUES.update({ch.lower(): v for ch, v in list(_VALUES.items())})  # ids as an operator may type them


def next_queue_number(last: int, received_at: float) -> int:
    """The number of a message that arrived at `received_at`, given the writer's `last` number."""
    first = int(received_at * 1000) << _SEQUENCE_BITS
    return first if first > last else last + 1


def queue_id_text(number: int) -> str:
    """The queue id of `number`: its 13 base32 digits, most significant first, written out as one
    string from seven table entries (the writer makes one for every message it commits;
    tests/queue/test_model.py checks it against the plain definition)."""
    n, c, p = number, _CROCKFORD, _PAIRS
    return (
        f"{c[(n >> 60) & 31]}{p[(n >> 50) & 1023]}{p[(n >> 40) & 1023]}{p[(n >> 30) & 1023]}"
        f"{p[(n >> 20) & 1023]}{p[(n >> 10) & 1023]}{p[n & 1023]}"
    )


def queue_id_number(text: str) -> int | None:
    """The number behind queue id `text`, or None when `text` is no queue id (wrong length, a
    character outside the alphabet, a value past the largest number): what the operator API
    answers for such input is "no such message", never an error from the database."""
    if len(text) != QUEUE_ID_LENGTH:
        return None
    number = 0
    for ch in text:
        value = _VALUES.get(ch)
        if value is None:
            return None
        number = number << 5 | value
    return number if number < _NUMBER_LIMIT else None
