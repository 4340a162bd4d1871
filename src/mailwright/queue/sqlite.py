"""The embedded queue store: SQLite (WAL, synchronous=FULL) with group commit from one writer thread.

Layout of `directory`: `queue.db` (+ `-wal`, `-shm`), `spool/` for bodies larger than `inline_limit`,
and `queue.lock`, an flock held by the one process that writes (the server). The directory is the
writer's alone (mode 0700, as Postfix keeps its queue directories): the mail in it is nobody
else's to read, whatever the files' own modes; the writer makes an existing one so at start-up.

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

The operator API (`iter_messages`, `hold`, ...) opens short-lived connections with a busy timeout;
WAL lets it read while the writer writes, even from another process. It speaks queue ids (text);
the tables key messages by number (`model.queue_id_number`), and text that is no queue id is an
unknown message. `writer=False` gives an operator-only store (the CLI): no lock, no recovery, no
writer thread, and it never creates files. It refuses (`QueueUnusable`) a queue of another schema
version than this build's, which only the writer migrates: after an upgrade the server that still
runs keeps the old schema until it restarts, and this build's queries would misread it (a text
id where a number is expected: a traceback, or "no such message" for one that is there).

Not responsible for: recipient state transitions and retry scheduling (the scheduler), policy.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailwright.protocol.reply import R, SMTPError
from mailwright.queue.commit_log import CommitLog
from mailwright.queue.committer import BatchCommitter, Job, Outcome, WriterStats
from mailwright.queue.model import (
    Envelope,
    MessageInfo,
    RecipientState,
    RecipientStatus,
    envelope_from_row,
    queue_id_number,
    queue_id_text,
)
from mailwright.queue.spool import READ_CHUNK, OpenWriters, Spool, SpoolWriter
from mailwright.queue.store import MessageWriter, QueueStore

log = logging.getLogger(__name__)

MAX_BATCH = 512
WAL_AUTOCHECKPOINT_PAGES = 256
WAL_SIZE_LIMIT = 8 * 1024 * 1024
# Messages per read transaction of the operator listing (`iter_messages`): ~1 MB of objects.
LIST_PAGE = 1000
BUSY_TIMEOUT_MS = 10_000

# The columns after each table's key, as migration 1 made them and migration 3 made them again
# around a new key. Frozen: a change of columns is a new migration (ALTER TABLE), not an edit here.
_MESSAGE_COLUMNS = """sender TEXT NOT NULL,
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
        CHECK ((body IS NULL) <> (spool_name IS NULL))"""
_RECIPIENT_COLUMNS = """idx INTEGER NOT NULL,
        address TEXT NOT NULL,
        notify TEXT,
        orcpt TEXT,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_reply TEXT,
        next_attempt REAL,
        PRIMARY KEY (message_id, idx)"""

_MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema. `body` is the last column so reading the others never walks its overflow pages.
    f"""
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        {_MESSAGE_COLUMNS}
    );
    CREATE INDEX messages_received ON messages(received_at);
    CREATE TABLE recipients (
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        {_RECIPIENT_COLUMNS}
    ) WITHOUT ROWID;
    CREATE INDEX recipients_due ON recipients(state, next_attempt);
    """,
    # 2: drop the two secondary indexes, which no query used. Each cost every accepted message one
    # more b-tree insert and every commit one more WAL page: together 13.7k of the committer's 89k
    # instructions and 5.8 of its ~41 us of CPU a message (docs/performance.md, round "Run 20").
    # `messages_received` served only the operator listing's ORDER BY, which sorts its rows
    # itself; `recipients_due` was made ahead of the delivery scheduler, which will create the
    # index its own query needs.
    """
    DROP INDEX IF EXISTS messages_received;
    DROP INDEX IF EXISTS recipients_due;
    """,
    # 3: a message's key is its number (`model.next_queue_number`), the table's rowid, instead of
    # its text id, whose PRIMARY KEY made SQLite keep a second b-tree beside the table: one more
    # insert per message and one more WAL page per commit (~6k of the committer's instructions
    # a message and a fifth of its WAL writes, docs/performance.md, round "Run 29"). Queued mail is
    # renumbered from its arrival time, in the order of its old ids; spilled bodies keep the
    # file names stored in `spool_name`. Each table is rebuilt, recipients first, so that no
    # DROP cascades into rows still needed.
    f"""
    CREATE TEMP TABLE renumbered AS
        SELECT id AS old, (CAST(received_at * 1000 AS INTEGER) << 20)
            + row_number() OVER (PARTITION BY CAST(received_at * 1000 AS INTEGER) ORDER BY id) - 1 AS new
        FROM messages;
    CREATE TABLE messages_3 (
        id INTEGER PRIMARY KEY,
        {_MESSAGE_COLUMNS}
    );
    INSERT INTO messages_3
        SELECT n.new, sender, mail_params, client_ip, helo, auth_user, tls, received_at, size, held,
            spool_name, body
        FROM messages JOIN renumbered n ON n.old = messages.id;
    CREATE TABLE recipients_3 (
        message_id INTEGER NOT NULL REFERENCES messages_3(id) ON DELETE CASCADE,
        {_RECIPIENT_COLUMNS}
    ) WITHOUT ROWID;
    INSERT INTO recipients_3
        SELECT n.new, idx, address, notify, orcpt, state, attempts, last_reply, next_attempt
        FROM recipients JOIN renumbered n ON n.old = recipients.message_id;
    DROP TABLE recipients;
    DROP TABLE messages;
    ALTER TABLE messages_3 RENAME TO messages;
    ALTER TABLE recipients_3 RENAME TO recipients;
    DROP TABLE renumbered;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


# Migration 3 uses window functions (SQLite 3.25) and an ALTER TABLE RENAME that rewrites the
# other table's REFERENCES (3.26); Debian has shipped newer since version 10.
MIN_SQLITE = (3, 26, 0)


class QueueLocked(RuntimeError):
    """Another process already writes to this queue directory."""


class QueueUnusable(RuntimeError):
    """The queue database cannot be opened or brought to this build's schema; the message names
    the fix."""


_Ticket = tuple[asyncio.AbstractEventLoop, "asyncio.Future[str]"]
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
        writer_thread: bool = True,
        min_free: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.db_path = self.directory / "queue.db"
        self.spool = Spool(self.directory / "spool")
        self.inline_limit = inline_limit
        self.batch_window = batch_window
        self.committer = BatchCommitter(self.directory, self.spool, self._connect, min_free)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._writers = OpenWriters(self.spool, inline_limit)
        if writer:
            self._start_writer_role(writer_thread)
        elif not self.db_path.exists():
            raise FileNotFoundError(f"no queue database at {self.db_path}")
        else:
            self._check_schema()

    # -- setup ---------------------------------------------------------------------------------

    def _make_private(self) -> None:
        """Mode 0700 for a queue directory that others could enter (made by an older build, or by
        hand): otherwise every local user could read the queued mail in queue.db (0644)."""
        st = os.stat(self.directory)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(self.directory, 0o700)
            log.info("queue directory %s: mode %o -> 700, so that only this server reads the mail in it",
                     self.directory, st.st_mode & 0o777)  # fmt: skip

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

    def _start_writer_role(self, thread: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / "queue.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise QueueLocked(f"queue directory {self.directory} is in use by another process") from None
        self._lock_fd = fd
        self._make_private()
        try:
            self.spool.create()
            try:
                conn = self._connect()
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    self._migrate(conn)
                    self._recover(conn)
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                raise QueueUnusable(
                    f"cannot open the queue database {self.db_path}: {exc} (fix: check the file's"
                    f" permissions, and its integrity with sqlite3 {self.db_path} 'PRAGMA integrity_check')"
                ) from exc
            # The new database and spool directory entries must survive a crash too.
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            self._release_lock()
            raise
        if thread:
            self._thread = threading.Thread(
                target=self._run, name=f"queue-writer:{self.directory}", daemon=True
            )
            self._thread.start()

    def _check_schema(self) -> None:
        """Operator role: the queue must be of this build's schema (see the module docstring)."""
        conn = self._connect()
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            fix = "run the newer mailwright that wrote it"
        else:  # older (the running server predates an upgrade), or 0 (a server is just starting)
            fix = "start or restart the server with this mailwright: it migrates the queue as it starts"
        raise QueueUnusable(
            f"{self.db_path} has schema version {version}, this mailwright reads version"
            f" {SCHEMA_VERSION} (fix: {fix})"
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise QueueUnusable(
                f"{self.db_path} has schema version {version}, newer than this build's {SCHEMA_VERSION}"
                " (fix: run the newer mailwright that wrote it)"
            )
        if version < SCHEMA_VERSION and sqlite3.sqlite_version_info < MIN_SQLITE:
            raise QueueUnusable(
                f"SQLite {sqlite3.sqlite_version} cannot set up {self.db_path}: the queue needs"
                f" {'.'.join(map(str, MIN_SQLITE))} or newer (fix: run mailwright on a Python whose"
                " sqlite3 module uses a newer SQLite)"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE; {_MIGRATIONS[number - 1]}; PRAGMA user_version = {number}; COMMIT;"
                )
            except sqlite3.Error as exc:
                if conn.in_transaction:  # executescript stops at the failing statement
                    conn.execute("ROLLBACK")
                raise QueueUnusable(
                    f"cannot migrate {self.db_path} to schema version {number}: {exc} (fix: the"
                    " database is unchanged; make room on its file system, or check it with"
                    f" sqlite3 {self.db_path} 'PRAGMA integrity_check')"
                ) from exc
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
                    "queue %s: message %s has lost its body file spool/%s",
                    self.directory,
                    queue_id_text(message_id),
                    name,
                )

    def close_writer_role(self) -> None:
        """For a store opened with `writer_thread=False` (the queue service drives `committer`
        itself): close the committer's connection and give up the directory lock."""
        self._closed = True
        self.committer.close()
        self._release_lock()

    def release_lock_in_child(self) -> None:
        """In a process forked from the writer: close the inherited lock descriptor, so that the
        lock lives and dies with the writer alone (flock belongs to the open file, not the pid)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._closed = True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    # -- receiving -----------------------------------------------------------------------------

    def open_message(self) -> SpoolWriter:
        if self._closed or self._thread is None:
            raise SMTPError(R.SHUTTING_DOWN if self._closed else R.LOCAL_ERROR)
        return self._writers.new()

    def commit(self, writer: MessageWriter, envelope: Envelope) -> asyncio.Future[str]:
        own = self._writers.take(writer, len(envelope.recipients))
        thread = self._thread
        if self._closed or thread is None or not thread.is_alive():
            own.abort()
            raise SMTPError(R.SHUTTING_DOWN if self._closed else R.LOCAL_ERROR)
        own.begin_commit()
        if envelope.received_at <= 0:
            envelope = replace(envelope, received_at=time.time())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._jobs.put(Job(own, envelope, (loop, future)))
        return future

    def abort(self, writer: MessageWriter) -> None:
        self._writers.abort(writer)

    async def close(self) -> None:
        """Stop accepting, let the writer thread drain every queued job, then release the directory."""
        if self._closed:
            return
        self._closed = True
        self._writers.abort_all()
        thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            self._thread = None
        self._release_lock()

    # -- the writer thread ---------------------------------------------------------------------

    @property
    def stats(self) -> WriterStats:
        return self.committer.stats

    def _run(self) -> None:
        last_batch = 0
        stopping = False
        commit_log = CommitLog()
        while not stopping:
            due = commit_log.due()
            try:
                first = self._jobs.get(timeout=None if due is None else max(0.0, due - time.monotonic()))
            except queue.Empty:
                commit_log.flush_due(time.monotonic())
                continue
            if first is None:
                break
            batch = [first]
            if last_batch > 1:
                # Sleep through the window instead of waking for every job that arrives:
                # each wake-up would take the GIL from the event loop.
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
            outcomes = self.committer.commit(batch)
            self._hand_back(outcomes)
            now = time.monotonic()
            commit_log.add(outcomes, now)
            commit_log.flush_due(now)
        commit_log.flush()
        self.committer.close()

    def _hand_back(self, outcomes: list[Outcome]) -> None:
        """Resolve the batch's futures with ONE wake-up per event loop, not one per message."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
        for job, result, error in outcomes:
            loop, future = job.ticket
            by_loop.setdefault(loop, []).append((future, result, error))
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

    def _messages(self, conn: sqlite3.Connection, after: int, limit: int) -> tuple[list[MessageInfo], int]:
        """Up to `limit` messages numbered above `after`, in number (arrival) order, and the last
        one's number (`after` when there is none)."""
        # One read transaction, so messages and recipients come from the same snapshot. After an
        # error the caller closes `conn`, which ends it.
        conn.execute("BEGIN")
        rows = conn.execute(
            "SELECT id, sender, size, received_at, held, client_ip, auth_user FROM messages"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        rcpts: dict[int, list[RecipientStatus]] = {}
        if rows:
            # A range of the recipients' primary key: no scan of other messages' rows.
            for mid, address, state, attempts, last_reply, next_attempt in conn.execute(
                "SELECT message_id, address, state, attempts, last_reply, next_attempt"
                " FROM recipients WHERE message_id BETWEEN ? AND ? ORDER BY message_id, idx",
                (rows[0][0], rows[-1][0]),
            ):
                rcpts.setdefault(mid, []).append(
                    RecipientStatus(address, RecipientState(state), attempts, last_reply, next_attempt)
                )
        conn.execute("COMMIT")
        return [
            MessageInfo(
                queue_id_text(mid),
                sender,
                size,
                received_at,
                bool(held),
                client_ip,
                auth_user,
                tuple(rcpts.get(mid, ())),
            )
            for mid, sender, size, received_at, held, client_ip, auth_user in rows
        ], rows[-1][0] if rows else after

    def iter_messages(self, page: int = LIST_PAGE) -> Iterator[MessageInfo]:
        """Every queued message in arrival order, read `page` at a time.

        Each page is its own short read transaction on one connection, so a slow consumer
        (`queue list | less`) holds no snapshot, which would keep checkpoints from emptying the
        WAL, and memory stays one page whatever the queue's size. Like Postfix's `mailq` walking
        its queue directories, the whole is therefore no snapshot: a message committed or removed
        meanwhile may or may not be listed, but none is listed twice, since pages follow the
        numbers."""
        after = -1
        conn = self._connect()
        try:
            while True:
                batch, after = self._messages(conn, after, page)
                yield from batch
                if len(batch) < page:
                    return
        finally:
            conn.close()

    def list_messages(self) -> list[MessageInfo]:
        return list(self.iter_messages())

    def get_message(self, id: str) -> MessageInfo | None:
        number = queue_id_number(id)
        if number is None:
            return None
        conn = self._connect()
        try:
            found, last = self._messages(conn, number - 1, 1)
        finally:
            conn.close()
        return found[0] if found and last == number else None

    def get_envelope(self, id: str) -> Envelope | None:
        number = queue_id_number(id)
        if number is None:
            return None
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            row = conn.execute(
                "SELECT sender, mail_params, client_ip, helo, auth_user, tls, received_at"
                " FROM messages WHERE id = ?",
                (number,),
            ).fetchone()
            rcpts = conn.execute(
                "SELECT address, notify, orcpt FROM recipients WHERE message_id = ? ORDER BY idx", (number,)
            ).fetchall()
            conn.execute("COMMIT")
        finally:
            conn.close()
        if row is None:
            return None
        sender, mail_params, client_ip, helo, auth_user, tls, received_at = row
        return envelope_from_row(sender, rcpts, mail_params, client_ip, helo, auth_user, tls, received_at)

    def read_body(self, id: str) -> Iterator[bytes]:
        """Stream the stored body. KeyError for an unknown id; OSError if its spool file is gone."""
        number = queue_id_number(id)
        if number is None:
            raise KeyError(id)
        rows = self._query("SELECT spool_name, body FROM messages WHERE id = ?", (number,))
        if not rows:
            raise KeyError(id)
        spool_name, body = rows[0]
        if spool_name is not None:
            return self.spool.read(spool_name)
        # Inline bodies are at most inline_limit bytes, so one read is bounded.
        data = bytes(body)
        return iter([data[i : i + READ_CHUNK] for i in range(0, len(data), READ_CHUNK)])

    def _update(self, sql: str, id: str) -> bool:
        number = queue_id_number(id)
        if number is None:
            return False
        conn = self._connect()
        try:
            return conn.execute(sql, (number,)).rowcount > 0
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
        number = queue_id_number(id)
        if number is None:
            return False
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT spool_name FROM messages WHERE id = ?", (number,)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                return False
            conn.execute("DELETE FROM recipients WHERE message_id = ?", (number,))
            conn.execute("DELETE FROM messages WHERE id = ?", (number,))
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
