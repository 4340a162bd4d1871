"""The queue store contract: how the server hands a message to durable storage, and how operators look.

The SMTP server talks only to these protocols, so the embedded SQLite store (`queue.sqlite`) and a
later PostgreSQL store are interchangeable without touching the server.

The durability contract (RFC 5321 section 6.1: once a server has said 250 to the end of data it has
taken responsibility for the message):
- `open_message()` returns a `MessageWriter`; the server feeds body chunks with `write()` on the event
  loop thread as they arrive. `write()` never fsyncs and never holds more than a bounded amount of the
  body in memory (large bodies spill to a file).
- `await commit(writer, envelope)` returns the queue id only once envelope and body are on stable
  storage; the server sends 250 after that and not before. A commit that raises left nothing behind.
- `abort(writer)` discards a message that is being received (rejected, RSET, connection lost). It is
  idempotent and a no-op once `commit` has been called.
- Failures carry an SMTP meaning: `SMTPError(R.STORAGE_FULL)` (452 4.3.1) when the disk or quota is
  full, `SMTPError(R.LOCAL_ERROR)` (451 4.3.0) for other storage failures, `SMTPError(R.SHUTTING_DOWN)`
  after `close()`. A store recovers by itself once the cause is gone (the next commit works).

The operator API is synchronous and safe to call from another process (the CLI) while a server runs.
Unknown ids give None / False; `read_body` raises KeyError for an unknown id.

Not responsible for: delivery scheduling and recipient state changes (the scheduler, later), or
deciding whether a message is acceptable (policy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Protocol

from mailwright.queue.model import Envelope, MessageInfo


class MessageWriter(Protocol):
    """A message body being received. `size` counts the bytes written so far."""

    size: int

    def write(self, chunk: bytes) -> None: ...


class MessageSink(Protocol):
    """The receiving side of a queue: all an SMTP server needs (see module docstring)."""

    def open_message(self) -> MessageWriter: ...

    def commit(self, writer: MessageWriter, envelope: Envelope) -> asyncio.Future[str]:
        """A future resolved with the queue id once the message is durable (or with SMTPError).

        Refusals known at once (closed store, aborted writer) raise SMTPError right away.
        Callers may simply `await` it; the server adds a done-callback instead of a task.
        """
        ...

    def abort(self, writer: MessageWriter) -> None: ...

    async def close(self) -> None: ...


class QueueStore(MessageSink, Protocol):
    """Durable storage of accepted messages: receiving plus the operator API."""

    def iter_messages(self) -> Iterator[MessageInfo]: ...

    def list_messages(self) -> list[MessageInfo]: ...

    def get_message(self, id: str) -> MessageInfo | None: ...

    def get_envelope(self, id: str) -> Envelope | None: ...

    def read_body(self, id: str) -> Iterator[bytes]: ...

    def hold(self, id: str) -> bool: ...

    def release(self, id: str) -> bool: ...

    def delete(self, id: str) -> bool: ...
