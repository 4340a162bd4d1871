"""Group commit into the SQLite queue: make one batch of accepted messages durable in one transaction.

`BatchCommitter.commit(batch)` is synchronous and is called by whoever owns the database for writing:
the writer thread of the in-process store (`queue.sqlite`) or the queue service of a multi-process
server (`queue.service`). Both give it `Job`s whose `body` is anything with `size`, `inline_body`,
`finish(final_name)` and `settle(committed)`: a `SpoolWriter` in the same process, or a
`HandedOverBody` (the spilled file of a body received by a worker process).

For every batch, in this order (the durability contract of `queue.store`):
0. each job is numbered (`model.next_queue_number`): the committer is the queue's only writer, so
   it numbers every message, and the number is the `messages` table's rowid (no second index);
1. spilled bodies are fsynced and renamed to `<id>.msg`, then the spool directory is fsynced once;
2. the free space is checked against `min_free` (Postfix's queue_minfree, in spirit);
3. all rows go in ONE transaction (multi-row INSERTs) and COMMIT, which with `synchronous=FULL` in WAL
   mode is the fsync;
4. only then is each job's outcome returned, for the caller to send 250 (or the error).
If the batch transaction fails, each job is retried alone, so only the jobs that really fail
(a duplicate id, say) fail. ENOSPC/EDQUOT/SQLITE_FULL -> 452 4.3.1, other failures -> 451 4.3.0; the
transaction is rolled back and that job's file removed, and after an unexpected error the connection
is reopened, so the queue recovers by itself when space returns.

Invariants: every job of a batch gets exactly one outcome and its body is settled exactly once
(kept on success, removed on failure); numbers only grow, from the largest one stored when the
committer first connects (a failed job's number is skipped, never given again). Not thread-safe:
one caller at a time.

Not responsible for: collecting batches or waking waiters (the callers), schema setup and recovery
(`queue.sqlite`), or the operator API.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from mailwright.protocol.reply import R, SMTPError
from mailwright.queue.model import Envelope, RecipientState, next_queue_number, queue_id_text
from mailwright.queue.spool import Spool, storage_error

log = logging.getLogger("mailwright.queue")

SPOOL_SUFFIX: Final = ".msg"
# More than the WAL auto-checkpoint size (256 pages x 4 KiB), with margin.
CHECKPOINT_HEADROOM: Final = 2 * 1024 * 1024

_MESSAGES_INSERT: Final = (
    "INSERT INTO messages (id, sender, mail_params, client_ip, helo, auth_user, tls,"
    " received_at, size, spool_name, body) VALUES "
)
_MESSAGES_ROW: Final = "(?,?,?,?,?,NULLIF(?,0),?,?,?,NULLIF(?,0),?)"
_RECIPIENTS_INSERT: Final = (
    "INSERT INTO recipients (message_id, idx, address, notify, orcpt, state, next_attempt) VALUES "
)
# The state of a new recipient is a literal: a bound parameter costs ~700 instructions.
_RECIPIENTS_ROW: Final = f"(?,?,?,NULLIF(?,0),NULLIF(?,0),'{RecipientState.QUEUED.value}',?)"
_ROWS_PER_INSERT: Final = 256  # 11 columns x 256 rows stays far below SQLite's 32,766 variables


class CommitBody(Protocol):
    """A received body as the committer sees it."""

    @property
    def size(self) -> int: ...

    @property
    def inline_body(self) -> bytes | None: ...

    def finish(self, final_name: str) -> str | None:
        """Make a spilled body durable under `final_name` (None: the body is inline)."""
        ...

    def settle(self, committed: bool) -> None:
        """The rows are committed (keep the file) or were not (remove it)."""
        ...


@dataclass(slots=True)
class WriterStats:
    """Counters kept by the committer (plain ints: reads from other threads are approximate)."""

    transactions: int = 0
    messages: int = 0
    failed: int = 0
    largest_batch: int = 0

    def summary(self) -> str:
        """The counts an operator reads when the server stops, worded alike in both process models."""
        return f"{self.messages} message(s) committed in {self.transactions} transaction(s) since start"


class Job:
    """One message to make durable, and the caller's `ticket` for its outcome (a future, a
    worker's sequence number). The committer gives it its `number` and queue `id`.

    A plain class rather than a dataclass: one is made for every message, and a dataclass's
    generated `__init__` is interpreted Python even in a compiled module (2.4k instructions a
    message, against 0.2k for this one, callgrind).
    """

    def __init__(self, body: CommitBody, envelope: Envelope, ticket: Any) -> None:
        self.body = body
        self.envelope = envelope
        self.ticket = ticket
        self.number = 0
        self.id = ""
        self.spool_name: str | None = None
        self.settled = False


Outcome = tuple[Job, str | None, SMTPError | None]  # (job, queue id, error): exactly one of the two set


@functools.lru_cache(maxsize=64)
def _insert_sql(head: str, row: str, rows: int) -> str:
    return head + ",".join([row] * rows)


# Parameters are bound without adaptation only when they are int, float, str or bytearray
# (CPython 3.11, Modules/_sqlite/cursor.c); a None or a bytes parameter goes through the
# adaptation protocol, whose failed lookup of `PrepareProtocol.__adapt__` raises and clears an
# AttributeError every time: 16k instructions per message in the queue writer, more than the
# SQLite inserts themselves.  So an absent optional text travels as the integer 0 and becomes
# NULL in SQL (NULLIF(?,0): a text never equals an integer there): an integer is bound without
# the copy and allocation that even an empty text costs (~800 instructions a text bind; four
# such columns, 2.8k a message, callgrind).  An inline body is bound as a bytearray: its copy
# (at most 64 KiB) costs less than even a registered adapter's call (1.8k instructions for
# 1 KB, callgrind).  All are stored exactly as before (TEXT, NULL, BLOB).


def sqlite_error(exc: sqlite3.Error) -> SMTPError:
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc):
        return SMTPError(R.STORAGE_FULL)
    return SMTPError(R.LOCAL_ERROR)


class BatchCommitter:
    """Owns the writing connection; see the module docstring."""

    def __init__(
        self, directory: Path, spool: Spool, connect: Callable[[], sqlite3.Connection], min_free: int
    ) -> None:
        self.directory = directory
        self.spool = spool
        self.min_free = min_free
        self.stats = WriterStats()
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._checkpoint_due = False  # set after disk-full: the WAL may hold space to give back
        self._outcomes: list[Outcome] = []
        self._last_number = -1  # read from the database on the first connection

    def _number(self, batch: list[Job]) -> None:
        last = self._last_number
        for job in batch:
            if not job.number:  # a job is numbered once, however often its batch is retried
                last = next_queue_number(last, job.envelope.received_at)
                job.number = last
                job.id = queue_id_text(last)
        self._last_number = last

    def commit(self, batch: list[Job]) -> list[Outcome]:
        """Make `batch` durable; returns one outcome per job (order not guaranteed)."""
        self._outcomes = []
        try:
            if self._conn is None:
                self._conn = self._connect()
            if self._last_number < 0:
                (largest,) = self._conn.execute("SELECT max(id) FROM messages").fetchone()
                self._last_number = largest or 0
            self._number(batch)
            self._conn = self._process(self._conn, batch)
        except sqlite3.Error as exc:
            log.error("queue writer: cannot open the queue database: %s", exc)
            self._fail_all(batch, sqlite_error(exc))
        except Exception:
            log.exception("queue writer: unexpected failure; failing %d message(s)", len(batch))
            self._fail_all(batch, SMTPError(R.LOCAL_ERROR))
            self._conn = self._reopen(self._conn)
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _process(self, conn: sqlite3.Connection | None, batch: list[Job]) -> sqlite3.Connection | None:
        """Make one batch durable; returns the connection to keep using (None: reopen next time)."""
        ready: list[Job] = []
        for job in batch:
            try:
                job.spool_name = job.body.finish(job.id + SPOOL_SUFFIX)
            except SMTPError as exc:
                self._fail(job, exc)
            else:
                ready.append(job)
        if any(job.spool_name for job in ready):
            try:
                self.spool.sync_directory()
            except OSError as exc:
                dir_error = storage_error(exc)
                for job in [j for j in ready if j.spool_name]:
                    self._fail(job, dir_error)
                ready = [j for j in ready if not j.spool_name]
        if not ready:
            return conn
        if not self._room_for(conn, ready):
            for job in ready:
                self._fail(job, SMTPError(R.STORAGE_FULL))
            return conn
        error = self._insert(conn, ready)
        if error is None:
            self._succeed(ready)
            return conn
        if error.reply != R.STORAGE_FULL:
            conn = self._reopen(conn)
        if len(ready) == 1:
            self._fail(ready[0], error)
            return conn
        for job in ready:  # isolate the jobs that really fail
            if conn is None:
                conn = self._connect()
            job_error = self._insert(conn, [job])
            if job_error is None:
                self._succeed([job])
            else:
                self._fail(job, job_error)
                if job_error.reply != R.STORAGE_FULL:
                    conn = self._reopen(conn)
        return conn

    def _free_bytes(self) -> int:
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    def _room_for(self, conn: sqlite3.Connection | None, jobs: list[Job]) -> bool:
        """Whether the batch fits above the reserve.

        Refusing with 452 while some space is left keeps SQLite from ever running the disk
        completely full, where a half-done checkpoint could hold the WAL's space hostage.
        """
        if self.min_free <= 0 and not self._checkpoint_due:
            return True
        inline = sum(j.body.size for j in jobs if not j.spool_name)
        try:
            free = self._free_bytes()
        except OSError:
            return True  # cannot tell: let SQLite itself report a full disk
        if self._checkpoint_due and conn is not None and free > CHECKPOINT_HEADROOM:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._checkpoint_due = False
                free = self._free_bytes()
            except sqlite3.Error as exc:
                log.info("queue writer: checkpoint after disk-full not done yet: %s", exc)
        return free - 2 * inline - CHECKPOINT_HEADROOM >= self.min_free

    def _insert(self, conn: sqlite3.Connection | None, jobs: list[Job]) -> SMTPError | None:
        if conn is None:
            return SMTPError(R.LOCAL_ERROR)
        messages: list[tuple[Any, ...]] = []
        recipients: list[tuple[Any, ...]] = []
        for job in jobs:
            env = job.envelope
            inline = None if job.spool_name else job.body.inline_body
            body = None if inline is None else bytearray(inline)
            messages.append(
                (job.number, env.sender, env.mail_params, env.client_ip, env.helo, env.auth_user or 0,
                 int(env.tls), env.received_at, job.body.size, job.spool_name or 0, body)
            )  # fmt: skip
            recipients.extend(
                (job.number, i, r.address, r.notify or 0, r.orcpt or 0, env.received_at)
                for i, r in enumerate(env.recipients)
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Multi-row INSERTs: one statement step per table and batch.  Each step releases
            # and retakes the GIL, so per-row steps (executemany) made the writer thread and
            # the event loop trade the GIL dozens of times per batch.
            for head, row_sql, table_rows in (
                (_MESSAGES_INSERT, _MESSAGES_ROW, messages),
                (_RECIPIENTS_INSERT, _RECIPIENTS_ROW, recipients),
            ):
                for start in range(0, len(table_rows), _ROWS_PER_INSERT):
                    rows = table_rows[start : start + _ROWS_PER_INSERT]
                    conn.execute(_insert_sql(head, row_sql, len(rows)), [v for row in rows for v in row])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may already have rolled back by itself
            log.warning("queue writer: transaction of %d message(s) failed: %s", len(jobs), exc)
            error = sqlite_error(exc)
            if error.reply == R.STORAGE_FULL:
                self._checkpoint_due = True
            return error
        self.stats.transactions += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        return None

    def _reopen(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        try:
            return self._connect()
        except sqlite3.Error as exc:
            log.error("queue writer: cannot reopen the queue database: %s", exc)
            return None

    def _succeed(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.settled = True
            job.body.settle(committed=True)
            self.stats.messages += 1
            self._outcomes.append((job, job.id, None))

    def _fail(self, job: Job, error: SMTPError) -> None:
        job.settled = True
        job.body.settle(committed=False)
        self.stats.failed += 1
        self._outcomes.append((job, None, error))

    def _fail_all(self, jobs: list[Job], error: SMTPError) -> None:
        for job in jobs:
            if job.settled:
                continue
            try:
                self._fail(job, error)
            except Exception:
                log.exception("queue writer: cannot clean up message %s", job.id)
                self._outcomes.append((job, None, error))
