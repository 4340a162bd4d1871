"""Queue data model: envelopes, recipient states, message summaries, and queue ids.

Pure data, shared by every queue store, the scheduler, delivery and the operator tools.

Invariants:
- All types are frozen; a change of state is a new value written by a store.
- `Envelope.sender` is "" for the null reverse path (RFC 5321 section 4.5.5); addresses are kept
  as received (mailbox text without angle brackets).
- `Recipient.notify` / `Recipient.orcpt` keep the DSN parameters as given (RFC 3461 sections 4.1, 4.2)
  so that relaying can pass them on unchanged; `Envelope.mail_params` likewise keeps the MAIL FROM
  parameter text (RFC 5321 section 4.1.1.2).
- Queue ids are 16 characters of Crockford base32 (digits and upper-case letters without I, L, O, U):
  9 characters of milliseconds since the epoch, then 7 random characters (35 bits). They sort by
  arrival time (to the millisecond), and are safe as file names.

Not responsible for: persistence (see `store` and `sqlite`), retry policy (the scheduler), or
validating address syntax (the protocol layer did that before anything reached the queue).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS: Final = 9  # 45 bits of milliseconds: good until the year 3084
_RANDOM_CHARS: Final = 7  # 35 random bits per millisecond keep collisions negligible
QUEUE_ID_LENGTH: Final = _TIME_CHARS + _RANDOM_CHARS


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


def _encode(value: int, width: int) -> str:
    """The low 5*width bits of `value` as `width` Crockford characters, most significant first
    (two characters per step: this runs twice for every message accepted)."""
    parts = []
    shift = 5 * width
    if width & 1:
        shift -= 5
        parts.append(_CROCKFORD[(value >> shift) & 31])
    while shift:
        shift -= 10
        parts.append(_PAIRS[(value >> shift) & 1023])
    return "".join(parts)


# Ids need uniqueness, not secrecy: a seeded PRNG saves a getrandom() syscall per message.
# Reseeded after fork so that worker processes never share a sequence.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def new_queue_id(now: float | None = None) -> str:
    """A fresh queue id: time-sortable prefix, random suffix (see module docstring).

    `_encode(millis, 9) + _encode(random, 7)` written out (tests/queue/test_model.py checks it
    against `_encode`): one string built from nine table entries instead of two lists joined.
    """
    t = int((time.time() if now is None else now) * 1000)
    r = _rng.getrandbits(5 * _RANDOM_CHARS)
    c, p = _CROCKFORD, _PAIRS
    return (
        f"{c[(t >> 40) & 31]}{p[(t >> 30) & 1023]}{p[(t >> 20) & 1023]}{p[(t >> 10) & 1023]}{p[t & 1023]}"
        f"{c[(r >> 30) & 31]}{p[(r >> 20) & 1023]}{p[(r >> 10) & 1023]}{p[r & 1023]}"
    )


def is_queue_id(text: str) -> bool:
    """True when `text` has the shape of a queue id (used before building file names from it)."""
    return len(text) == QUEUE_ID_LENGTH and all(c in _CROCKFORD for c in text)
