"""Shared helpers for the queue tests (imported by module name: tests/queue is on sys.path)."""

from __future__ import annotations

from mailwright.queue.model import Envelope, Recipient
from mailwright.queue.sqlite import SQLiteQueueStore


def envelope(n_rcpt: int = 1, sender: str = "alice@example.org") -> Envelope:
    return Envelope(
        sender=sender,
        recipients=tuple(
            Recipient(f"r{i}@example.net", notify="SUCCESS,FAILURE", orcpt=f"rfc822;r{i}@example.net")
            for i in range(n_rcpt)
        ),
        mail_params="SIZE=123 BODY=8BITMIME",
        client_ip="127.0.0.1",
        helo="client.example.org",
        auth_user="alice",
        tls=True,
    )


def body_of(size: int, tag: bytes = b"x") -> bytes:
    head = b"Subject: test " + tag + b"\r\nFrom: alice@example.org\r\n\r\n"
    line = b"abcdefghijklmnopqrstuvwxyz0123456789" * 2 + b"\r\n"
    reps = max(0, size - len(head)) // len(line) + 1
    return (head + line * reps)[:size] if size >= len(head) else head[:size]


async def commit_bytes(
    store: SQLiteQueueStore, data: bytes, env: Envelope | None = None, chunk: int = 65536
) -> str:
    writer = store.open_message()
    for i in range(0, len(data), chunk):
        writer.write(data[i : i + chunk])
    return await store.commit(writer, env or envelope())


def read_all(store: SQLiteQueueStore, id: str) -> bytes:
    return b"".join(store.read_body(id))
