"""The embedded queue store: SQLite (WAL, synchronous=FULL) with group commit from one writer thread.

Layout of `directory`: `queue.db` (+ `-wal`, `-shm`), `spool/` for bodies larger than `inline_limit`,
and `queue.lock`, an flock held by the one process that writes (the server).

How a message becomes durable:
- `open_message()` returns a `SpoolWriter` (see `spool`): small bodies stay in memory, larger ones
  stream into a temp file; nothing is fsynced on the event loop thread.
- `commit()` puts a job on a `queue.Queue` and returns an asyncio Future. The single writer thread
  takes every pending job (up to `MAX_BATCH`), fsyncs and renames the spilled bodies, fsyncs the
  spool directory once, inserts all rows in ONE transaction and COMMITs it (with synchronous=FULL the
  COMMIT is the WAL fsync). Only then are the futures resolved: one `loop.call_soon_threadsafe`
  per batch, not per message.
  Under load many messages share one fsync (group commit). When the previous batch held more than
  one job, the thread sleeps `batch_window` seconds to let more gather (it does not wake per job:
  each wake-up takes the GIL from the event loop); an idle server never waits.
- If a batch transaction fails, each job is retried alone, so a failure affects only the jobs that
  really fail (e.g. a duplicate id). Disk full (ENOSPC/EDQUOT, SQLITE_FULL) -> 452 4.3.1, other
  failures -> 451 4.3.0; the transaction is rolled back, that job's spool file removed, and the
  connection reopened after unexpected errors, so the store recovers when space returns.
- A commit whose awaiting task is cancelled still completes (SMTP is at-least-once; the client got
  no 250 and will retry, which may duplicate).

Startup recovery (writer role only): take the lock, migrate the schema (`PRAGMA user_version`), remove
spool files that no row references (temp files, bodies renamed before a crash hit the COMMIT) and log
an error for every row whose spool file is missing (the row is kept for the operator).

The operator API (`list_messages`, `hold`, ...) opens short-lived connections with a busy timeout;
WAL lets it read while the writer writes, even from another process. `writer=False` gives an
operator-only store (the CLI): no lock, no recovery, no writer thread, and it never creates files.

Not responsible for: recipient state transitions and retry scheduling (the scheduler), policy.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailwright.protocol.reply import R, SMTPError
from mailwright.queue.model import (
    Envelope,
    MessageInfo,
    Recipient,
    RecipientState,
    RecipientStatus,
    new_queue_id,
)
from mailwright.queue.spool import READ_CHUNK, Spool, SpoolWriter, storage_error
from mailwright.queue.store import MessageWriter, QueueStore

log = logging.getLogger(__name__)

MAX_BATCH = 512
WAL_AUTOCHECKPOINT_PAGES = 256
WAL_SIZE_LIMIT = 8 * 1024 * 1024
CHECKPOINT_HEADROOM = 2 * 1024 * 1024  # > WAL_AUTOCHECKPOINT_PAGES * page size (4 KiB), with margin
BUSY_TIMEOUT_MS = 10_000
_SPOOL_SUFFIX = ".msg"

_MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema. `body` is the last column so reading the others never walks its overflow pages.
    """
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        mail_params TEXT NOT NULL DEFAULT '',
        client_ip TEXT NOT NULL DEFAULT '',
        helo TEXT NOT NULL DEFAULT '',
        auth_user TEXT,
        tls INTEGER NOT NULL DEFAULT 0,
        received_at REAL NOT NULL,
        size INTEGER NOT NULL,
        held INTEGER NOT NULL DEFAULT 0,
        spool_name TEXT,
        body BLOB,
        CHECK ((body IS NULL) <> (spool_name IS NULL))
    );
    CREATE INDEX messages_received ON messages(received_at);
    CREATE TABLE recipients (
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        address TEXT NOT NULL,
        notify TEXT,
        orcpt TEXT,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_reply TEXT,
        next_attempt REAL,
        PRIMARY KEY (message_id, idx)
    ) WITHOUT ROWID;
    CREATE INDEX recipients_due ON recipients(state, next_attempt);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class QueueLocked(RuntimeError):
    """Another process already writes to this queue directory."""


@dataclass(slots=True)
class WriterStats:
    """Counters kept by the writer thread (plain ints: reads from other threads are approximate)."""

    transactions: int = 0
    messages: int = 0
    failed: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Job:
    writer: SpoolWriter
    envelope: Envelope
    id: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[str]
    spool_name: str | None = None
    settled: bool = False


_MESSAGES_INSERT = (
    "INSERT INTO messages (id, sender, mail_params, client_ip, helo, auth_user, tls,"
    " received_at, size, spool_name, body) VALUES "
)
_RECIPIENTS_INSERT = (
    "INSERT INTO recipients (message_id, idx, address, notify, orcpt, state, next_attempt) VALUES "
)
_ROWS_PER_INSERT = 256  # 11 columns x 256 rows stays far below SQLite's 32,766 variables


@functools.lru_cache(maxsize=64)
def _insert_sql(head: str, columns: int, rows: int) -> str:
    one = "(" + ",".join("?" * columns) + ")"
    return head + ",".join([one] * rows)


def _sqlite_error(exc: sqlite3.Error) -> SMTPError:
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc):
        return SMTPError(R.STORAGE_FULL)
    return SMTPError(R.LOCAL_ERROR)


_Settlement = tuple["asyncio.Future[str]", str | None, SMTPError | None]


def _settle_all(items: list[_Settlement]) -> None:
    for future, result, error in items:
        if future.done():  # the awaiting task was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)


class SQLiteQueueStore:
    """A `QueueStore` on SQLite; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        inline_limit: int = 64 * 1024,
        batch_window: float = 0.002,
        writer: bool = True,
        min_free: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.db_path = self.directory / "queue.db"
        self.spool = Spool(self.directory / "spool")
        self.inline_limit = inline_limit
        self.batch_window = batch_window
        self.min_free = min_free
        self._checkpoint_due = False  # set after disk-full: the WAL may hold space to give back
        self.stats = WriterStats()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._open_writers: set[SpoolWriter] = set()
        self._settled: list[tuple[_Job, str | None, SMTPError | None]] = []  # writer thread only
        if writer:
            self._start_writer_role()
        elif not self.db_path.exists():
            raise FileNotFoundError(f"no queue database at {self.db_path}")

    # -- setup ---------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # A small WAL: a checkpoint copies WAL pages into the database, so until it finishes the
        # same data needs room twice.  Keeping the WAL near 1 MB keeps that headroom small, and
        # the size limit gives the WAL's disk space back after a burst.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        return conn

    def _start_writer_role(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "queue.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise QueueLocked(f"queue directory {self.directory} is in use by another process") from None
        self._lock_fd = fd
        try:
            self.spool.create()
            conn = self._connect()
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                self._migrate(conn)
                self._recover(conn)
            finally:
                conn.close()
            # The new database and spool directory entries must survive a crash too.
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            self._release_lock()
            raise
        self._thread = threading.Thread(target=self._run, name=f"queue-writer:{self.directory}", daemon=True)
        self._thread.start()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.db_path} has schema version {version}; this build knows {SCHEMA_VERSION}"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            conn.executescript(
                f"BEGIN IMMEDIATE; {_MIGRATIONS[number - 1]}; PRAGMA user_version = {number}; COMMIT;"
            )
            log.info("queue %s: schema migrated to version %d", self.db_path, number)

    def _recover(self, conn: sqlite3.Connection) -> None:
        referenced = {
            str(name)
            for (name,) in conn.execute("SELECT spool_name FROM messages WHERE spool_name IS NOT NULL")
        }
        removed = self.spool.sweep(referenced)
        if removed:
            log.info("queue %s: removed %d orphan spool file(s)", self.directory, len(removed))
        present = self.spool.names()
        for message_id, name in conn.execute(
            "SELECT id, spool_name FROM messages WHERE spool_name IS NOT NULL ORDER BY id"
        ):
            if name not in present:
                log.error(
                    "queue %s: message %s has lost its body file spool/%s", self.directory, message_id, name
                )

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    # -- receiving -----------------------------------------------------------------------------

    def open_message(self) -> SpoolWriter:
        if self._closed or self._thread is None:
            raise SMTPError(R.SHUTTING_DOWN if self._closed else R.LOCAL_ERROR)
        writer = SpoolWriter(self.spool, self.inline_limit)
        self._open_writers.add(writer)
        return writer

    def _own(self, writer: MessageWriter) -> SpoolWriter:
        if not isinstance(writer, SpoolWriter) or writer not in self._open_writers:
            raise TypeError("message writer does not belong to this store")
        return writer

    def commit(self, writer: MessageWriter, envelope: Envelope) -> asyncio.Future[str]:
        own = self._own(writer)
        if not envelope.recipients:
            raise ValueError("an envelope needs at least one recipient")
        if self._closed:
            self.abort(own)
            raise SMTPError(R.SHUTTING_DOWN)
        thread = self._thread
        if thread is None or not thread.is_alive():
            self.abort(own)
            raise SMTPError(R.LOCAL_ERROR)
        try:
            own.begin_commit()
        finally:
            self._open_writers.discard(own)
        if envelope.received_at <= 0:
            envelope = replace(envelope, received_at=time.time())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._jobs.put(_Job(own, envelope, new_queue_id(envelope.received_at), loop, future))
        return future

    def abort(self, writer: MessageWriter) -> None:
        if isinstance(writer, SpoolWriter) and writer in self._open_writers:
            self._open_writers.discard(writer)
            writer.abort()

    async def close(self) -> None:
        """Stop accepting, let the writer thread drain every queued job, then release the directory."""
        if self._closed:
            return
        self._closed = True
        for writer in list(self._open_writers):
            self.abort(writer)
        thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            self._thread = None
        self._release_lock()

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        last_batch = 0
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            if last_batch > 1:
                # Sleep through the window instead of waking for every job that arrives:
                # each wake-up would take the GIL away from the event loop.
                time.sleep(self.batch_window)
            while len(batch) < MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True  # finish this batch, then stop: close() drains
                    break
                batch.append(job)
            last_batch = len(batch)
            try:
                if conn is None:
                    conn = self._connect()
                conn = self._process(conn, batch)
            except sqlite3.Error as exc:
                log.error("queue writer: cannot open %s: %s", self.db_path, exc)
                self._fail_all(batch, _sqlite_error(exc))
            except Exception:
                log.exception("queue writer: unexpected failure; failing %d message(s)", len(batch))
                self._fail_all(batch, SMTPError(R.LOCAL_ERROR))
                conn = self._reopen(conn)
            finally:
                self._hand_back()
        if conn is not None:
            conn.close()

    def _process(self, conn: sqlite3.Connection | None, batch: list[_Job]) -> sqlite3.Connection | None:
        """Make one batch durable; returns the connection to keep using (None: reopen next time)."""
        ready: list[_Job] = []
        for job in batch:
            try:
                job.spool_name = job.writer.finish(job.id + _SPOOL_SUFFIX)
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

    def _room_for(self, conn: sqlite3.Connection | None, jobs: list[_Job]) -> bool:
        """Whether the batch fits above the reserve (Postfix's queue_minfree, in spirit).

        Refusing with 452 while some space is left keeps SQLite from ever running the disk
        completely full, where a half-done checkpoint could hold the WAL's space hostage.
        """
        if self.min_free <= 0 and not self._checkpoint_due:
            return True
        inline = sum(j.writer.size for j in jobs if not j.spool_name)
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

    def _insert(self, conn: sqlite3.Connection | None, jobs: list[_Job]) -> SMTPError | None:
        if conn is None:
            return SMTPError(R.LOCAL_ERROR)
        messages: list[tuple[Any, ...]] = []
        recipients: list[tuple[Any, ...]] = []
        for job in jobs:
            env = job.envelope
            body = None if job.spool_name else job.writer.inline_body
            messages.append(
                (job.id, env.sender, env.mail_params, env.client_ip, env.helo, env.auth_user, int(env.tls),
                 env.received_at, job.writer.size, job.spool_name, body)
            )  # fmt: skip
            recipients.extend(
                (job.id, i, r.address, r.notify, r.orcpt, RecipientState.QUEUED.value, env.received_at)
                for i, r in enumerate(env.recipients)
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Multi-row INSERTs: one statement step per table and batch.  Each step releases
            # and retakes the GIL, so per-row steps (executemany) made the writer thread and
            # the event loop trade the GIL dozens of times per batch.
            for start in range(0, len(messages), _ROWS_PER_INSERT):
                rows = messages[start : start + _ROWS_PER_INSERT]
                conn.execute(_insert_sql(_MESSAGES_INSERT, 11, len(rows)), [v for row in rows for v in row])
            for start in range(0, len(recipients), _ROWS_PER_INSERT):
                rows = recipients[start : start + _ROWS_PER_INSERT]
                conn.execute(_insert_sql(_RECIPIENTS_INSERT, 7, len(rows)), [v for row in rows for v in row])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may already have rolled back by itself
            log.warning("queue writer: transaction of %d message(s) failed: %s", len(jobs), exc)
            error = _sqlite_error(exc)
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
            log.error("queue writer: cannot reopen %s: %s", self.db_path, exc)
            return None

    def _succeed(self, jobs: list[_Job]) -> None:
        for job in jobs:
            job.settled = True
            job.writer.settle(committed=True)
            self.stats.messages += 1
            self._resolve(job, job.id, None)

    def _fail(self, job: _Job, error: SMTPError) -> None:
        job.settled = True
        job.writer.settle(committed=False)
        self.stats.failed += 1
        self._resolve(job, None, error)

    def _fail_all(self, jobs: list[_Job], error: SMTPError) -> None:
        for job in jobs:
            if job.settled:
                continue
            try:
                self._fail(job, error)
            except Exception:
                log.exception("queue writer: cannot clean up message %s", job.id)

    def _resolve(self, job: _Job, result: str | None, error: SMTPError | None) -> None:
        self._settled.append((job, result, error))

    def _hand_back(self) -> None:
        """Resolve the batch's futures with ONE wake-up per event loop, not one per message."""
        settled, self._settled = self._settled, []
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
        for job, result, error in settled:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, items)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

    # -- operator API --------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def _messages(self, where: str, params: tuple[Any, ...]) -> list[MessageInfo]:
        conn = self._connect()
        try:
            # One read transaction, so messages and recipients come from the same snapshot.
            conn.execute("BEGIN")
            rows = conn.execute(
                "SELECT id, sender, size, received_at, held, client_ip, auth_user FROM messages"
                f" {where} ORDER BY received_at, id",
                params,
            ).fetchall()
            rcpts: dict[str, list[RecipientStatus]] = {}
            for mid, address, state, attempts, last_reply, next_attempt in conn.execute(
                "SELECT r.message_id, r.address, r.state, r.attempts, r.last_reply, r.next_attempt"
                f" FROM recipients r JOIN messages ON messages.id = r.message_id {where}"
                " ORDER BY r.message_id, r.idx",
                params,
            ):
                rcpts.setdefault(mid, []).append(
                    RecipientStatus(address, RecipientState(state), attempts, last_reply, next_attempt)
                )
            conn.execute("COMMIT")
        finally:
            conn.close()
        return [
            MessageInfo(
                mid, sender, size, received_at, bool(held), client_ip, auth_user, tuple(rcpts.get(mid, ()))
            )
            for mid, sender, size, received_at, held, client_ip, auth_user in rows
        ]

    def list_messages(self) -> list[MessageInfo]:
        return self._messages("", ())

    def get_message(self, id: str) -> MessageInfo | None:
        found = self._messages("WHERE messages.id = ?", (id,))
        return found[0] if found else None

    def get_envelope(self, id: str) -> Envelope | None:
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            row = conn.execute(
                "SELECT sender, mail_params, client_ip, helo, auth_user, tls, received_at"
                " FROM messages WHERE id = ?",
                (id,),
            ).fetchone()
            rcpts = conn.execute(
                "SELECT address, notify, orcpt FROM recipients WHERE message_id = ? ORDER BY idx", (id,)
            ).fetchall()
            conn.execute("COMMIT")
        finally:
            conn.close()
        if row is None:
            return None
        sender, mail_params, client_ip, helo, auth_user, tls, received_at = row
        return Envelope(
            sender=sender,
            recipients=tuple(Recipient(a, n, o) for a, n, o in rcpts),
            mail_params=mail_params,
            client_ip=client_ip,
            helo=helo,
            auth_user=auth_user,
            tls=bool(tls),
            received_at=received_at,
        )

    def read_body(self, id: str) -> Iterator[bytes]:
        """Stream the stored body. KeyError for an unknown id; OSError if its spool file is gone."""
        rows = self._query("SELECT spool_name, body FROM messages WHERE id = ?", (id,))
        if not rows:
            raise KeyError(id)
        spool_name, body = rows[0]
        if spool_name is not None:
            return self.spool.read(spool_name)
        # Inline bodies are at most inline_limit bytes, so one read is bounded.
        data = bytes(body)
        return iter([data[i : i + READ_CHUNK] for i in range(0, len(data), READ_CHUNK)])

    def _update(self, sql: str, id: str) -> bool:
        conn = self._connect()
        try:
            return conn.execute(sql, (id,)).rowcount > 0
        finally:
            conn.close()

    def hold(self, id: str) -> bool:
        """Keep the message from delivery until released. False for an unknown id."""
        # SQLite counts matched rows as changed even when the value stays, so re-holding is True.
        return self._update("UPDATE messages SET held = 1 WHERE id = ?", id)

    def release(self, id: str) -> bool:
        return self._update("UPDATE messages SET held = 0 WHERE id = ?", id)

    def delete(self, id: str) -> bool:
        """Remove the message: rows first, then its spool file (a crash in between leaves an orphan
        file that startup recovery removes, never a row without its body)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT spool_name FROM messages WHERE id = ?", (id,)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                return False
            conn.execute("DELETE FROM recipients WHERE message_id = ?", (id,))
            conn.execute("DELETE FROM messages WHERE id = ?", (id,))
            conn.execute("COMMIT")
        finally:
            conn.close()
        if row[0] is not None:
            try:
                self.spool.remove(row[0])
            except OSError as exc:
                log.warning("queue %s: cannot remove spool/%s: %s", self.directory, row[0], exc)
        return True


if TYPE_CHECKING:
    _conforms: type[QueueStore] = SQLiteQueueStore
