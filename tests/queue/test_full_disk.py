"""A real full disk: the store on a 4 MB tmpfs answers 452 4.3.1, leaves nothing behind, and recovers."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_helpers import body_of, commit_bytes, envelope, read_all

from mailwright.protocol.reply import SMTPError
from mailwright.queue.sqlite import SQLiteQueueStore
from tmpfs import mounted_tmpfs


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "mnt", "4m") as mnt:
        yield mnt


def fill(path: Path) -> None:
    """Write until the filesystem has not one page left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 * 1024, 4096, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def assert_full(exc: SMTPError) -> None:
    assert exc.reply.code == 452 and exc.reply.enhanced == "4.3.1", exc.reply


def test_full_disk_gives_452_leaves_nothing_and_recovers(small_fs: Path) -> None:
    qdir = small_fs / "queue"
    filler = small_fs / "filler"

    async def main() -> None:
        store = SQLiteQueueStore(qdir, inline_limit=8 * 1024)
        try:
            committed: dict[str, bytes] = {}
            for i in range(3):
                for size in (1000, 100_000):
                    data = body_of(size, tag=f"{i}-{size}".encode())
                    committed[await commit_bytes(store, data)] = data

            fill(filler)

            # A spilled body fails while streaming (write) or at commit, and leaves no file behind.
            writer = store.open_message()
            with pytest.raises(SMTPError) as info:
                for _ in range(20):
                    writer.write(b"s" * 65536)
                await store.commit(writer, envelope())
            assert_full(info.value)
            store.abort(writer)
            assert sorted(os.listdir(qdir / "spool")) == sorted(
                f"{qid}.msg" for qid, data in committed.items() if len(data) > 8 * 1024
            )

            # Small bodies go into SQLite; sooner or later the database cannot grow: SQLITE_FULL.
            failure: SMTPError | None = None
            for i in range(5000):
                data = body_of(4000, tag=f"fill-{i}".encode())
                try:
                    committed[await commit_bytes(store, data)] = data
                except SMTPError as exc:
                    failure = exc
                    break
            assert failure is not None, "the database never reported a full disk"
            assert_full(failure)
            assert not [n for n in os.listdir(qdir / "spool") if n.endswith(".tmp")]

            # Space returns: the very next commits work, inline and spilled.
            filler.unlink()
            for size in (1000, 100_000):
                data = body_of(size, tag=b"after")
                committed[await commit_bytes(store, data)] = data
            for qid, data in committed.items():
                assert read_all(store, qid) == data
            assert {m.id for m in store.list_messages()} == set(committed)
        finally:
            await store.close()

        # And it all survives a reopen.
        again = SQLiteQueueStore(qdir, inline_limit=8 * 1024)
        try:
            assert {m.id for m in again.list_messages()} == set(committed)
        finally:
            await again.close()

    asyncio.run(main())
