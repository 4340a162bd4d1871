"""Spool directory for message bodies, and the streaming body writer that spills into it.

A `SpoolWriter` keeps a body in memory up to `inline_limit` bytes; beyond that it moves what it has
into a temporary file `spool/<random>.tmp` and appends every further chunk there (no fsync: this runs
on the event loop thread). At commit time the store's writer thread calls `finish(final_name)`, which
fsyncs the file, closes it and renames it to its final name; the store then fsyncs the spool directory
once per batch (`Spool.sync_directory`) before it commits the rows that reference those names.
In a multi-process server the worker that received the body calls `hand_over()` instead (the file
closed, unsynced) and the master commits it as a `HandedOverBody`, which does the same steps by name.

Invariants:
- At most `inline_limit` bytes of a body are held in memory; spilled bodies cost one file descriptor.
- Order on disk: file data fsync -> rename -> directory fsync -> database commit. So a committed row
  never names a file that could vanish in a crash; a crash in between leaves only files no row names,
  which `Spool.sweep` removes at startup.
- Any failure removes what the writer created (temp or final file): nothing half-written stays.
- OSError is mapped to SMTP meaning by `storage_error`: ENOSPC/EDQUOT -> 452 4.3.1, anything else
  -> 451 4.3.0 (RFC 3463 section 3.4 / 3.3).

Not responsible for: which files are referenced (the store knows), or body content (never parsed).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Final

from mailwright.protocol.reply import R, SMTPError

_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_TMP_SUFFIX: Final = ".tmp"
READ_CHUNK: Final = 64 * 1024


def storage_error(exc: OSError) -> SMTPError:
    """The SMTP error a client should see for a storage failure."""
    if exc.errno in _FULL_ERRNOS:
        return SMTPError(R.STORAGE_FULL)
    return SMTPError(R.LOCAL_ERROR)


class Spool:
    """The directory holding spilled bodies; names are plain file names inside it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"bad spool file name {name!r}")
        return self.directory / name

    def new_temp(self) -> tuple[Path, int]:
        """Create a fresh temp file (exclusive) and return its path and a raw write descriptor."""
        while True:
            # The pid prefix lets a multi-process server remove what a dead worker left behind.
            path = self.directory / f"{os.getpid()}-{secrets.token_hex(8)}{_TMP_SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            return path, fd

    def sync_directory(self) -> None:
        """Make renames inside the spool durable (the directory entry is data too)."""
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def publish(self, temp: Path, final_name: str) -> Path:
        """Rename a synced temp file to its final name; returns the new path."""
        final = self.path(final_name)
        # Only the queue's single writer creates final names, so this check cannot race;
        # it keeps a colliding id from clobbering a committed body.
        if final.exists():
            raise FileExistsError(errno.EEXIST, "spool file exists", str(final))
        os.rename(temp, final)
        return final

    def remove(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def names(self) -> set[str]:
        return {entry.name for entry in os.scandir(self.directory) if entry.is_file(follow_symlinks=False)}

    def sweep(self, referenced: set[str]) -> list[str]:
        """Remove every file no row references (temp files and renamed-but-uncommitted bodies)."""
        removed = []
        for name in sorted(self.names() - referenced):
            if self.remove(name):
                removed.append(name)
        return removed

    def remove_temps_of(self, pid: int) -> int:
        """Remove the temp files of a process that died while receiving (see `new_temp`)."""
        prefix = f"{pid}-"
        removed = 0
        for name in self.names():
            if name.startswith(prefix) and name.endswith(_TMP_SUFFIX) and self.remove(name):
                removed += 1
        return removed

    def read(self, name: str) -> Iterator[bytes]:
        """Stream a stored body. The file is opened now, so a later delete cannot cut the stream."""
        f = open(self.path(name), "rb")  # noqa: SIM115 - closed by the generator below

        def chunks() -> Iterator[bytes]:
            with f:
                while chunk := f.read(READ_CHUNK):
                    yield chunk

        return chunks()


class _State(Enum):
    OPEN = "open"
    FAILED = "failed"
    COMMITTING = "committing"
    DONE = "done"
    ABORTED = "aborted"


class SpoolWriter:
    """A `MessageWriter`: memory up to `inline_limit`, then a temp file in the spool."""

    __slots__ = ("_buffer", "_error", "_fd", "_inline_limit", "_path", "_spool", "_state", "size")

    def __init__(self, spool: Spool, inline_limit: int) -> None:
        self.size = 0
        self._spool = spool
        self._inline_limit = inline_limit
        self._buffer: bytearray | None = bytearray()
        self._fd: int | None = None
        self._path: Path | None = None
        self._state = _State.OPEN
        self._error: SMTPError | None = None

    @property
    def spilled(self) -> bool:
        return self._fd is not None

    @property
    def inline_body(self) -> bytes | None:
        """The body when it stayed in memory; None once it spilled to a file."""
        return None if self._buffer is None else bytes(self._buffer)

    def write(self, chunk: bytes) -> None:
        if self._state is _State.FAILED:
            assert self._error is not None
            raise self._error
        if self._state is not _State.OPEN:
            raise RuntimeError(f"write() on a message writer that is {self._state.value}")
        if not chunk:
            return
        try:
            if self._buffer is not None:
                if len(self._buffer) + len(chunk) <= self._inline_limit:
                    self._buffer += chunk
                    self.size += len(chunk)
                    return
                self._path, self._fd = self._spool.new_temp()
                pending, self._buffer = bytes(self._buffer), None
                self._write_all(pending)
            self._write_all(chunk)
        except OSError as exc:
            self._fail(storage_error(exc))
            assert self._error is not None
            raise self._error from exc
        self.size += len(chunk)

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _fail(self, error: SMTPError) -> None:
        self._discard_file()
        self._buffer = None
        self._state = _State.FAILED
        self._error = error

    def _discard_file(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self._path is not None:
            try:
                self._path.unlink()
            except FileNotFoundError:
                pass
            self._path = None

    def begin_commit(self) -> None:
        """Hand the writer over to the store's writer thread; the loop thread stops touching it."""
        if self._state is _State.FAILED:
            assert self._error is not None
            raise self._error
        if self._state is not _State.OPEN:
            raise RuntimeError(f"commit of a message writer that is {self._state.value}")
        self._state = _State.COMMITTING

    def finish(self, final_name: str) -> str | None:
        """Writer thread: make a spilled body durable under `final_name`; None for inline bodies.

        Raises SMTPError (after removing the file) when the body cannot be made durable.
        """
        if self._fd is None:
            return None
        assert self._path is not None
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._path = self._spool.publish(self._path, final_name)
        except OSError as exc:
            self._fail(storage_error(exc))
            assert self._error is not None
            raise self._error from exc
        return final_name

    def hand_over(self) -> str | None:
        """Give a body to another process's writer: the spilled file's name (None: inline body).

        The file is closed here, unsynced; from now on the receiver fsyncs, renames or removes
        it (see `HandedOverBody`), and this writer never touches it again.
        """
        self.begin_commit()
        if self._fd is None:
            return None
        assert self._path is not None
        os.close(self._fd)
        self._fd = None
        name, self._path = self._path.name, None
        return name

    def settle(self, committed: bool) -> None:
        """Writer thread: the rows are committed (keep the file) or were not (remove it)."""
        if committed:
            self._path = None
            self._state = _State.DONE
        else:
            self._discard_file()
            self._state = _State.ABORTED

    def abort(self) -> None:
        """Discard a message being received; a no-op once committing has begun."""
        if self._state in (_State.OPEN, _State.FAILED):
            self._discard_file()
            self._buffer = None
            self._state = _State.ABORTED


class OpenWriters:
    """The bodies a store is receiving: made here, taken at commit, discarded on abort or close."""

    __slots__ = ("_inline_limit", "_open", "_spool")

    def __init__(self, spool: Spool, inline_limit: int) -> None:
        self._spool = spool
        self._inline_limit = inline_limit
        self._open: set[SpoolWriter] = set()

    def new(self) -> SpoolWriter:
        writer = SpoolWriter(self._spool, self._inline_limit)
        self._open.add(writer)
        return writer

    def take(self, writer: object, recipients: int) -> SpoolWriter:
        """Check and claim a writer for commit; it is no longer open afterwards.

        TypeError for a writer of another store (or one already taken or aborted), ValueError for
        an envelope without recipients (the writer stays open: the caller may still abort it).
        """
        if not isinstance(writer, SpoolWriter) or writer not in self._open:
            raise TypeError("message writer does not belong to this store")
        if recipients < 1:
            raise ValueError("an envelope needs at least one recipient")
        self._open.discard(writer)
        return writer

    def abort(self, writer: object) -> None:
        """Discard a body being received (idempotent; a no-op for writers not open here)."""
        if isinstance(writer, SpoolWriter) and writer in self._open:
            self._open.discard(writer)
            writer.abort()

    def abort_all(self) -> None:
        for writer in list(self._open):
            self.abort(writer)


class HandedOverBody:
    """A body received by another process (a worker) and committed here (see `SpoolWriter.hand_over`).

    Same contract as `SpoolWriter.finish`/`settle`: fsync (through a descriptor of our own: fsync
    flushes the file, whoever wrote it), rename, and remove the file when the commit fails.
    """

    __slots__ = ("_path", "_spool", "inline_body", "size")

    def __init__(self, spool: Spool, size: int, inline_body: bytes | None, temp_name: str | None) -> None:
        self.size = size
        self.inline_body = inline_body
        self._spool = spool
        self._path = None if temp_name is None else spool.path(temp_name)

    def finish(self, final_name: str) -> str | None:
        if self._path is None:
            return None
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._path = self._spool.publish(self._path, final_name)
        except OSError as exc:
            self.settle(committed=False)
            raise storage_error(exc) from exc
        return final_name

    def settle(self, committed: bool) -> None:
        path, self._path = self._path, None
        if path is not None and not committed:
            try:
                path.unlink()
            except OSError:
                pass  # gone already; or the start-up sweep removes it
