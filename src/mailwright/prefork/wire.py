"""The channel between the master process and its SMTP worker processes: frames and their contents.

Each worker has one Unix stream socket (a `socketpair` made before the fork) to the master. Both
directions carry frames: a 4-byte big-endian length, then a `marshal`-encoded list of records
(format version 2).
`marshal` because both ends are the same interpreter (forked) and it is the fastest codec for
tuples of str/bytes/int/float/None; it never runs code, and nothing but our own forked processes
can reach these sockets. One frame per event-loop turn carries everything that turn produced.

Records, worker -> master:
- (COMMIT, seq, envelope, size, inline_body or None, spool temp name or None); the master numbers
  the message and answers with its queue id
- (AUTH_FAILED, key) and (AUTH_OK, key): an AUTH outcome, for the master to relay to the others
- (READY,): the worker's listeners and certificate are loaded (sent once)
Records, master -> worker:
- (RESULT, seq, queue_id or None, error or None), error being one of `ERRORS`' keys
- (AUTH_FAILED, key) and (AUTH_OK, key): another worker's AUTH outcome

Invariants: a frame is decoded only once it is complete; a frame longer than `MAX_FRAME` is a
protocol error (the peer is broken), never a reason to buffer without bound. `MAX_FRAME` bounds
the bytes held, not what decoding them builds: `marshal` trusts its input, and nine crafted
bytes make it allocate a tuple of 2**31 items. The channel may use it only because its peers
are our own forked processes; it must never carry bytes from anyone else.

Not responsible for: what the records mean (`prefork.master`, `prefork.worker`).
"""

from __future__ import annotations

import marshal
from typing import Any, Final

from mailwright.protocol.reply import R, Reply
from mailwright.queue.model import Envelope, envelope_from_row

COMMIT: Final = 0
RESULT: Final = 1
AUTH_FAILED: Final = 2
AUTH_OK: Final = 3
READY: Final = 4

# 64 KiB inline bodies from at most a few thousand sessions per turn fit well below this.
MAX_FRAME: Final = 512 * 1024 * 1024
_HEADER: Final = 4
# Format version 2, not the default 4: it has no back-references, so `dumps` keeps no hash table
# of every object it writes (nor `loads` a list of every object it reads), and these records
# share no object worth one. `loads` reads any version.
_MARSHAL_VERSION: Final = 2

ERRORS: dict[str, Reply] = {"full": R.STORAGE_FULL, "local": R.LOCAL_ERROR, "shutdown": R.SHUTTING_DOWN}


def error_name(reply: Reply) -> str:
    """The wire name of a storage error reply (anything unknown travels as a local error)."""
    for name, known in ERRORS.items():
        if known == reply:
            return name
    return "local"


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(records: list[tuple[Any, ...]]) -> bytes:
    payload = marshal.dumps(records, _MARSHAL_VERSION)
    return len(payload).to_bytes(_HEADER, "big") + payload


class FrameReader:
    """Accumulates bytes and yields whole decoded frames.

    A read usually holds whole frames only, and those are decoded straight from the bytes
    read; only a frame cut between reads is gathered in a buffer, which is turned into bytes
    once the frame is complete (never per read, so a frame of many reads costs one copy).
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        """The records of every frame completed by `data` (in order)."""
        buf = self._buffer
        if buf:
            buf += data
            if len(buf) < _HEADER or len(buf) < _HEADER + _frame_size(bytes(buf[:_HEADER])):
                return []
            data = bytes(buf)
            buf.clear()
        records: list[tuple[Any, ...]] = []
        start = 0
        n = len(data)
        while n - start >= _HEADER:
            end = start + _HEADER + _frame_size(data[start : start + _HEADER])
            if n < end:
                break
            try:
                decoded = marshal.loads(data[start + _HEADER : end])
            except (EOFError, ValueError, TypeError) as exc:
                raise FrameError(f"undecodable frame: {exc}") from None
            if not isinstance(decoded, list):
                raise FrameError("a frame must hold a list of records")
            records.extend(decoded)
            start = end
        if start < n:
            buf += data[start:]
        return records


def _frame_size(header: bytes) -> int:
    # Indexing bytes compiles to a direct C access; int.from_bytes is a call with a keyword.
    size = header[0] << 24 | header[1] << 16 | header[2] << 8 | header[3]
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes")
    return size


def pack_envelope(env: Envelope) -> tuple[Any, ...]:
    rcpts = tuple((r.address, r.notify, r.orcpt) for r in env.recipients)
    return (
        env.sender, rcpts, env.mail_params, env.client_ip, env.helo, env.auth_user, env.tls, env.received_at
    )  # fmt: skip


def unpack_envelope(packed: tuple[Any, ...]) -> Envelope:
    # Arguments spelled out: `*packed` is a generic call (1.9k instructions a message, callgrind).
    return envelope_from_row(
        packed[0], packed[1], packed[2], packed[3], packed[4], packed[5], packed[6], packed[7]
    )
