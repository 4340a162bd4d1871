"""A full disk under a running server: 452 4.3.1 (RFC 3463 3.4), the server stays up, and recovers.

The queue directory lives on a small tmpfs mounted for the test (needs root; skipped otherwise).
A filler file takes part of the space so that it can be freed later without touching the queue.
Two message sizes: spooled bodies fill the disk with spool files, inline bodies fill it inside
SQLite (WAL and checkpoints); after 2 MB are freed the server must accept mail again either way.

Not covered here: the store's own cleanup after a failed write (tests/queue/test_full_disk.py).
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmpfs import mounted_tmpfs

from .conftest import QUEUED, RawSMTP, ServerFactory, queued_ids, stored_body

SPILLED = 300 * 1024  # beyond the store's inline limit (64 KB): the body goes to a spool file
INLINE = 40 * 1024  # kept in the database row: the disk fills up inside SQLite's WAL instead


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "queue-fs", "6m") as mnt:
        yield mnt


def message(n: int, size: int) -> bytes:
    line = f"message {n} " + "y" * 64 + "\r\n"
    return (f"Subject: fill {n}\r\n\r\n" + line * (size // len(line))).encode()


def send(smtp: smtplib.SMTP, msg: bytes) -> tuple[int, str]:
    smtp.mail("filler@client.test")
    smtp.rcpt("bob@mx.test")
    code, text = smtp.data(msg)
    return code, text.decode()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("size", [SPILLED, INLINE], ids=["spooled", "inline"])
def test_full_disk_answers_452_and_recovers(
    make_server: ServerFactory, tmpfs: Path, size: int, workers: int
) -> None:
    queue_dir = tmpfs / "queue"
    filler = tmpfs / "filler"
    filler.write_bytes(os.urandom(2 * 1024 * 1024))
    srv = make_server("full", queue_dir=queue_dir, workers=workers)

    accepted: dict[str, bytes] = {}
    full_reply: tuple[int, str] | None = None
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=30) as smtp:
        smtp.ehlo("filler.test")
        for n in range(6 * 1024 * 1024 // size + 10):  # the disk is full long before this
            msg = message(n, size)
            code, text = send(smtp, msg)
            if code == 250:
                match = QUEUED.search(text)
                assert match, text
                accepted[match.group(1)] = msg
                continue
            full_reply = (code, text)
            break
        assert full_reply is not None, "the 6 MB tmpfs never filled up"
        assert full_reply[0] == 452 and full_reply[1].startswith("4.3.1"), full_reply
        assert accepted, "not even one message fitted"
        # The session and the server are still alive.
        assert smtp.noop()[0] == 250
    assert srv.proc is not None and srv.proc.poll() is None
    other = RawSMTP(srv.ports["mx"])
    assert other.reply()[0] == 220
    assert other.cmd("NOOP")[0] == 250
    other.close()

    filler.unlink()
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=30) as smtp:
        smtp.ehlo("filler.test")
        for n in range(100, 103):  # the store keeps working, not just once
            code, text = send(smtp, message(n, size))
            assert code == 250, f"{size // 1024} KB message {n - 99} after freeing 2 MB: {code} {text}"
    queued = queued_ids(queue_dir)
    assert len(queued) == len(accepted) + 3  # the refused message left nothing behind
    for queue_id, msg in accepted.items():
        assert queue_id in queued
        assert stored_body(queue_dir, queue_id).endswith(msg)
    print(
        f"full disk: {len(accepted)} messages of {size // 1024} KB fitted before "
        f"{full_reply[0]} {full_reply[1]!r}"
    )
    assert srv.stop() == 0
