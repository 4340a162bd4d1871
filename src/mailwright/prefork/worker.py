"""A worker process's end of the channel to the master: the queue as a `MessageSink`, and AUTH news.

`RemoteQueueStore` receives bodies like the in-process store (memory up to `inline_limit`, then a
temp file in the shared spool directory, see `queue.spool`), but `commit()` sends the envelope and
the body (or the temp file's name) to the master, whose queue service makes it durable in its
next group commit. The future resolves when the master's RESULT arrives, i.e. after the COMMIT's
fsync: the durability contract of `queue.store` holds across the process boundary.

Everything a turn of the event loop produces leaves in one frame (`call_soon` flush), so a worker
costs the master one read per turn, not one per message.

Invariants:
- Each commit gets exactly one outcome: the master's RESULT, or SMTPError(451 4.3.0) for every
  pending commit when the channel breaks (the master died: no 250 may be sent for those).
- Once the channel is gone the store refuses new messages, and `on_lost` tells the worker to stop.

Not responsible for: the master's side (`prefork.master`), sessions (`net.server`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mailwright.limits.auth_failures import AuthFailureLimiter
from mailwright.prefork import wire
from mailwright.protocol.reply import R, SMTPError
from mailwright.queue.model import Envelope
from mailwright.queue.spool import OpenWriters, Spool, SpoolWriter
from mailwright.queue.store import MessageSink, MessageWriter

log = logging.getLogger("mailwright.worker")


class MasterLink(asyncio.Protocol):
    """The worker's side of the socket to the master."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reader = wire.FrameReader()
        self.outbox: list[tuple[Any, ...]] = []
        self.pending: dict[int, tuple[asyncio.Future[str], SpoolWriter]] = {}
        self.seq = 0
        self.lost = False
        self.on_lost = on_lost
        self.on_auth: Callable[[int, str], None] | None = None  # another worker's AUTH outcome

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def send(self, record: tuple[Any, ...]) -> None:
        if self.lost:
            return
        if not self.outbox:
            self.loop.call_soon(self._flush)
        self.outbox.append(record)

    def _flush(self) -> None:
        records, self.outbox = self.outbox, []
        if records and self.transport is not None and not self.lost:
            self.transport.write(wire.encode(records))

    def data_received(self, data: bytes) -> None:
        try:
            records = self.reader.feed(data)
        except wire.FrameError as exc:
            log.error("broken channel from the master: %s", exc)
            if self.transport is not None:
                self.transport.abort()
            return
        for record in records:
            kind = record[0]
            if kind == wire.RESULT:
                self._result(record[1], record[2], record[3])
            elif kind in (wire.AUTH_FAILED, wire.AUTH_OK) and self.on_auth is not None:
                self.on_auth(kind, record[1])

    def _result(self, seq: int, queue_id: str | None, error: str | None) -> None:
        entry = self.pending.pop(seq, None)
        if entry is None:
            return
        future, writer = entry
        writer.settle(committed=queue_id is not None)
        if future.done():
            return
        if queue_id is not None:
            future.set_result(queue_id)
        else:
            future.set_exception(SMTPError(wire.ERRORS.get(error or "local", R.LOCAL_ERROR)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        pending, self.pending = self.pending, {}
        if pending:
            log.error("the master process is gone: %d message(s) in flight get 451 4.3.0", len(pending))
        for future, writer in pending.values():
            writer.settle(committed=False)
            if not future.done():
                future.set_exception(SMTPError(R.LOCAL_ERROR))
        self.on_lost()


class RelayedAuthLimiter(AuthFailureLimiter):
    """The AUTH limiter of one worker, kept in step with the others through the master: every
    local failure or success is sent on, and the others' are counted here as if they were local."""

    def __init__(self, link: MasterLink, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link = link
        link.on_auth = self._remote

    def failure(self, key: str) -> float:
        self.link.send((wire.AUTH_FAILED, key))
        return super().failure(key)

    def success(self, key: str) -> None:
        self.link.send((wire.AUTH_OK, key))
        super().success(key)

    def _remote(self, kind: int, key: str) -> None:
        if kind == wire.AUTH_FAILED:
            super().failure(key)
        else:
            super().success(key)


class RemoteQueueStore:
    """A `MessageSink` whose commits are made durable by the master (see module docstring)."""

    def __init__(self, link: MasterLink, spool: Spool, inline_limit: int = 64 * 1024) -> None:
        self.link = link
        self._writers = OpenWriters(spool, inline_limit)
        self._closed = False

    def open_message(self) -> SpoolWriter:
        if self._closed or self.link.lost:
            raise SMTPError(R.SHUTTING_DOWN if self._closed else R.LOCAL_ERROR)
        return self._writers.new()

    def commit(self, writer: MessageWriter, envelope: Envelope) -> asyncio.Future[str]:
        own = self._writers.take(writer, len(envelope.recipients))
        if self._closed or self.link.lost:
            own.abort()
            raise SMTPError(R.SHUTTING_DOWN if self._closed else R.LOCAL_ERROR)
        inline = own.inline_body
        temp_name = own.hand_over()
        if envelope.received_at <= 0:
            envelope = replace(envelope, received_at=time.time())
        link = self.link
        link.seq += 1
        future: asyncio.Future[str] = link.loop.create_future()
        link.pending[link.seq] = (future, own)
        link.send((wire.COMMIT, link.seq, wire.pack_envelope(envelope), own.size, inline, temp_name))
        return future

    def abort(self, writer: MessageWriter) -> None:
        self._writers.abort(writer)

    async def close(self) -> None:
        """Refuse new messages and wait (bounded) for the master to answer the ones in flight."""
        self._closed = True
        self._writers.abort_all()
        for _ in range(200):
            if not self.link.pending:
                break
            await asyncio.sleep(0.05)


if TYPE_CHECKING:
    _conforms: type[MessageSink] = RemoteQueueStore
