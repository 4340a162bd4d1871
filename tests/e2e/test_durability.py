"""kill -9 at any moment loses no message that got a 250 (ARCHITECTURE rule 5, RFC 5321 section 6.1).

Each round starts the same server state directory, loads it with concurrent clients, kills it with
SIGKILL while messages are in flight, and then checks every acknowledged queue id against the queue
as the operator tools read it: the row exists with its recipient and the stored body ends with
exactly the bytes the client sent (the server only prepends trace headers on the MX port).

Not covered here: what happens to messages that never got their 250 (SMTP is at-least-once; they
may or may not be queued, and either is correct).
"""

from __future__ import annotations

import random
import smtplib
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import spawn

from .conftest import QUEUED, ServerFactory, stored_body

ROUNDS = 8
CLIENTS = 16
LARGE_ROUNDS = 4
LARGE_SIZE = 2 * 1024 * 1024
RCPT = "bob@mx.test"


@dataclass
class Load:
    """What the clients of one round saw."""

    acked: list[tuple[str, str, bytes]] = field(default_factory=list)  # (queue id, marker, message)
    unexpected: list[str] = field(default_factory=list)  # failures before the kill was ordered
    killing: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, text: str, marker: str, message: bytes) -> None:
        match = QUEUED.search(text)
        with self.lock:
            if match is None:
                self.unexpected.append(f"250 without a queue id: {text!r}")
            else:
                self.acked.append((match.group(1), marker, message))

    def failed(self, what: str) -> None:
        if not self.killing.is_set():
            with self.lock:
                self.unexpected.append(what)


def message(marker: str, size: int) -> bytes:
    head = f"From: load@client.test\r\nTo: {RCPT}\r\nSubject: {marker}\r\n\r\n".encode()
    line = f"{marker} {'x' * 60}\r\n".encode()
    body = line * max(1, (size - len(head)) // len(line))
    return head + body + f"end of {marker}\r\n".encode()


def smtplib_client(port: int, round_no: int, client: int, load: Load, size: int) -> None:
    sent = 0
    while not load.killing.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.ehlo("load.test")
                for _ in range(5):  # reconnect now and then: kills also land in the greeting
                    if load.killing.is_set():
                        return
                    marker = f"MARK-{round_no}-{client}-{sent}-{uuid.uuid4().hex}"
                    msg = message(marker, size)
                    sent += 1
                    smtp.mail("load@client.test")
                    smtp.rcpt(RCPT)
                    code, text = smtp.data(msg)
                    if code == 250:
                        load.ack(text.decode(), marker, msg)
                    else:
                        load.failed(f"DATA got {code} {text!r}")
        except (OSError, smtplib.SMTPException) as exc:
            load.failed(f"client {client}: {exc!r}")
            return


def kill_mid_flight(srv: spawn.SpawnedServer, load: Load, threads: list[threading.Thread]) -> None:
    load.killing.set()
    srv.kill9()
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "a client thread hung after the kill"


def check_acked(srv: spawn.SpawnedServer, acked: list[tuple[str, str, bytes]], cli_sample: int) -> int:
    """Assert every acknowledged message is queued and intact; returns how many were found."""
    queued = srv.queued()
    qdir = srv.queue_db.parent
    for queue_id, marker, msg in acked:
        assert queue_id in queued, f"{queue_id} ({marker}) got 250 but is not in the queue"
        assert queued[queue_id] == [RCPT]
        body = stored_body(qdir, queue_id)
        assert body.endswith(msg), f"{queue_id}: stored body differs from what was acknowledged"
    for queue_id, marker, _ in random.sample(acked, min(cli_sample, len(acked))):
        assert marker.encode() in srv.body(queue_id)  # `mailwright queue show --body ID`
    return len(acked)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_under_load_loses_no_acknowledged_message(make_server: ServerFactory, workers: int) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    srv = make_server("durable", start=False, workers=workers)
    all_acked: list[tuple[str, str, bytes]] = []
    found = 0
    for round_no in range(ROUNDS):
        srv.start()
        load = Load()
        threads = [
            threading.Thread(target=smtplib_client, args=(srv.ports["mx"], round_no, c, load, 1024))
            for c in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.5))
        kill_mid_flight(srv, load, threads)
        assert load.unexpected == [], f"round {round_no} (seed {seed}): failures before the kill"
        found += check_acked(srv, load.acked, cli_sample=3)
        all_acked += load.acked
    print(
        f"durability ({workers} workers): seed {seed}, {ROUNDS} rounds,"
        f" {len(all_acked)} acknowledged, {found} found"
    )
    assert len(all_acked) > 0
    assert found == len(all_acked)

    # A normal start after the last crash resumes with the queue intact and accepts mail again.
    srv.start()
    check_acked(srv, all_acked, cli_sample=2)
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        smtp.ehlo("after.test")
        smtp.mail("load@client.test")
        smtp.rcpt(RCPT)
        code, text = smtp.data(message("AFTER-RESTART", 512))
    assert code == 250 and QUEUED.search(text.decode())
    assert srv.stop() == 0


def raw_send_then_kill(srv: spawn.SpawnedServer, marker: str, delay: float, load: Load) -> None:
    """Send a whole large message including the final dot, kill -9 `delay` s later, then read."""
    msg = message(marker, LARGE_SIZE)
    with socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=10) as sock:
        f = sock.makefile("rb")
        for command in (
            None,
            b"EHLO big.test",
            b"MAIL FROM:<load@client.test>",
            f"RCPT TO:<{RCPT}>".encode(),
        ):
            if command is not None:
                sock.sendall(command + b"\r\n")
            while (line := f.readline())[3:4] == b"-":
                pass
            assert line[:1] == b"2", line
        sock.sendall(b"DATA\r\n")
        assert f.readline().startswith(b"354")
        sock.sendall(msg + b".\r\n")
        time.sleep(delay)
        load.killing.set()
        srv.kill9()
        try:
            reply = f.readline()
        except OSError:
            reply = b""
        if reply.startswith(b"250"):
            load.ack(reply.decode(), marker, msg)


def spool_state(queue_dir: Path) -> tuple[list[str], int, int]:
    """(temp files left in the spool, spool files, rows that name a spool file)."""
    files = [p.name for p in (queue_dir / "spool").iterdir()]
    db = sqlite3.connect(queue_dir / "queue.db", timeout=10)
    try:
        (rows,) = db.execute("SELECT count(*) FROM messages WHERE spool_name IS NOT NULL").fetchone()
    finally:
        db.close()
    return [n for n in files if n.endswith(".tmp")], len(files), int(rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_while_committing_large_spooled_messages(make_server: ServerFactory, workers: int) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    srv = make_server("large", start=False, workers=workers)
    qdir = srv.queue_db.parent
    all_acked: list[tuple[str, str, bytes]] = []
    for round_no in range(LARGE_ROUNDS):
        srv.start()
        if round_no:
            # The previous crash left no temp files and no unreferenced bodies behind.
            tmp, files, rows = spool_state(qdir)
            assert tmp == [] and files == rows, (tmp, files, rows)
        load = Load()
        background = [
            threading.Thread(target=smtplib_client, args=(srv.ports["mx"], round_no, c, load, LARGE_SIZE))
            for c in range(2)
        ]
        for t in background:
            t.start()
        time.sleep(rng.uniform(0.2, 0.6))
        raw_send_then_kill(srv, f"BIG-{round_no}-{uuid.uuid4().hex}", rng.uniform(0.0, 0.03), load)
        for t in background:
            t.join(15)
            assert not t.is_alive()
        assert load.unexpected == [], f"round {round_no} (seed {seed})"
        check_acked(srv, load.acked, cli_sample=1)
        all_acked += load.acked
    print(f"large: seed {seed}, {LARGE_ROUNDS} rounds, {len(all_acked)} acknowledged 2 MB messages found")
    assert len(all_acked) > 0
    srv.start()
    check_acked(srv, all_acked, cli_sample=0)
    tmp, files, rows = spool_state(qdir)
    assert tmp == [] and files == rows, (tmp, files, rows)
    assert srv.stop() == 0
