"""One turn of the master's loop, driven through real socketpairs (no fork): commits for every
worker in one transaction and numbered, spooled bodies renamed, a failing message alone refused, AUTH news
relayed to the other workers only, a worker that sends garbage cut off, and under load the next
frame gathered into the batch (within a bounded wait)."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.config.schema import Config, QueueConfig
from mailwright.limits.connections import ConnectionTable
from mailwright.prefork import wire
from mailwright.prefork.master import GATHER_MS, Master, WorkerHandle
from mailwright.queue.model import Envelope, Recipient, next_queue_number, queue_id_number, queue_id_text
from mailwright.queue.sqlite import SQLiteQueueStore

ENV = Envelope(
    "a@client.test", (Recipient("b@mx.test"),), client_ip="192.0.2.1", helo="c.test", received_at=1.0
)


class Rig:
    def __init__(self, tmp_path: Path, workers: int) -> None:
        config = Config(
            hostname="mx.test",
            state_dir=tmp_path,
            local_domains=("mx.test",),
            listeners=(),
            queue=QueueConfig(tmp_path / "queue", min_free=0),
        )
        self.master = Master(config, workers)
        self.master.store = SQLiteQueueStore(config.queue.directory, writer_thread=False)
        self.master.table = ConnectionTable(workers)
        # Stand-in worker processes: harmless to signal, gone at the end.
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(workers)
        ]
        self.ends: list[socket.socket] = []
        for slot, proc in enumerate(self.procs):
            ours, theirs = socket.socketpair()
            handle = WorkerHandle(slot, proc.pid, ours, 0.0)
            self.master.workers[proc.pid] = handle
            self.master.watch(handle)
            theirs.settimeout(5)
            self.ends.append(theirs)

    def send(self, slot: int, records: list[tuple[Any, ...]]) -> None:
        self.ends[slot].sendall(wire.encode(records))

    def receive(self, slot: int) -> list[tuple[Any, ...]]:
        reader = wire.FrameReader()
        while True:
            got = reader.feed(self.ends[slot].recv(65536))
            if got:
                return got

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.master.store.close_writer_role()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, 2)
    yield r
    r.close()


BASE = next_queue_number(0, ENV.received_at)  # the number of the queue's first message


def commit(
    seq: int, body: bytes | None = b"Subject: x\r\n\r\nhi\r\n", temp: str | None = None
) -> tuple[Any, ...]:
    size = len(body) if body is not None else 100
    return (wire.COMMIT, seq, wire.pack_envelope(ENV), size, body, temp)


def test_commits_from_two_workers_share_one_transaction(rig: Rig) -> None:
    rig.send(0, [commit(1), commit(2)])
    rig.send(1, [commit(1)])
    rig.master._turn()
    first, second = rig.receive(0)
    (third,) = rig.receive(1)
    assert [r[:2] for r in (first, second, third)] == [(wire.RESULT, 1), (wire.RESULT, 2), (wire.RESULT, 1)]
    assert all(r[3] is None for r in (first, second, third))
    # The master numbers them in the order it read them: a worker's commits keep their order.
    assert queue_id_number(first[2]) < queue_id_number(second[2])
    assert {first[2], second[2], third[2]} == {queue_id_text(BASE + k) for k in range(3)}
    stats = rig.master.store.committer.stats
    assert (stats.messages, stats.transactions) == (3, 1)
    got = rig.master.store.get_envelope(third[2])
    assert got == ENV


def test_a_spooled_body_is_renamed_and_a_failing_message_alone_fails(rig: Rig) -> None:
    spool = rig.master.store.spool
    temp = "4242-00000000000000aa.tmp"
    (spool.directory / temp).write_bytes(b"Subject: big\r\n\r\n" + b"y" * 100)
    rig.send(0, [commit(1, None, temp), commit(2)])
    rig.master._turn()
    assert sorted(rig.receive(0)) == [
        (wire.RESULT, 1, queue_id_text(BASE), None),
        (wire.RESULT, 2, queue_id_text(BASE + 1), None),
    ]
    assert spool.names() == {queue_id_text(BASE) + ".msg"}
    # Only a row made behind the master's back can hold the number it gives next.
    db = sqlite3.connect(rig.master.store.db_path)
    with db:
        db.execute(
            "INSERT INTO messages (id, sender, received_at, size, body) VALUES (?, '', 1.0, 1, x'58')",
            (BASE + 2,),
        )
    db.close()
    rig.send(1, [commit(7), commit(8)])
    rig.master._turn()
    assert sorted(rig.receive(1)) == [
        (wire.RESULT, 7, None, "local"),
        (wire.RESULT, 8, queue_id_text(BASE + 3), None),
    ]


def test_auth_news_goes_to_the_other_workers_only(tmp_path: Path) -> None:
    rig = Rig(tmp_path, 3)
    try:
        rig.send(1, [(wire.AUTH_FAILED, "192.0.2.9"), (wire.AUTH_OK, "192.0.2.10")])
        rig.master._turn()
        for slot in (0, 2):
            assert rig.receive(slot) == [(wire.AUTH_FAILED, "192.0.2.9"), (wire.AUTH_OK, "192.0.2.10")]
        rig.ends[1].settimeout(0.2)
        with pytest.raises(TimeoutError):
            rig.ends[1].recv(1)
    finally:
        rig.close()


def test_a_worker_sending_garbage_is_cut_off_and_killed(rig: Rig) -> None:
    rig.ends[0].sendall(b"\x00\x00\x00\x05nope!")
    rig.master._turn()
    handle = rig.master.workers[rig.procs[0].pid]
    assert handle.channel is None
    assert rig.procs[0].wait(5) == -9
    # The other worker is unaffected.
    rig.send(1, [commit(1)])
    rig.master._turn()
    assert rig.receive(1) == [(wire.RESULT, 1, queue_id_text(BASE), None)]


class FirstPollSeesOne:
    """The master's poll set, except that its first `poll` reports only `fd`: it stands for a
    frame that arrives just after the master woke up for another one."""

    def __init__(self, real: Any, fd: int) -> None:
        self.real = real
        self.fd = fd
        self.timeouts: list[int | None] = []

    def poll(self, timeout: int | None = None) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        events = self.real.poll(timeout)
        return [e for e in events if e[0] == self.fd] if len(self.timeouts) == 1 else events

    def register(self, fd: int, mask: int) -> None:
        self.real.register(fd, mask)

    def unregister(self, fd: int) -> None:
        self.real.unregister(fd)


def late_second_frame(rig: Rig) -> FirstPollSeesOne:
    rig.send(0, [commit(1)])
    rig.send(1, [commit(1)])
    first_fd = rig.master.workers[rig.procs[0].pid].channel.fileno()  # type: ignore[union-attr]
    poll = FirstPollSeesOne(rig.master.poll, first_fd)
    rig.master.poll = poll  # type: ignore[assignment]
    return poll


def test_under_load_the_next_frame_joins_the_batch(rig: Rig) -> None:
    rig.master.last_batch = 2
    poll = late_second_frame(rig)
    rig.master._turn()
    assert poll.timeouts[1] == GATHER_MS
    assert rig.receive(0) == [(wire.RESULT, 1, queue_id_text(BASE), None)]
    assert rig.receive(1) == [(wire.RESULT, 1, queue_id_text(BASE + 1), None)]
    stats = rig.master.store.committer.stats
    assert (stats.messages, stats.transactions) == (2, 1)
    assert rig.master.last_batch == 2


def test_a_lone_message_does_not_wait_for_company(rig: Rig) -> None:
    rig.master.last_batch = 1
    poll = late_second_frame(rig)
    rig.master._turn()
    assert len(poll.timeouts) == 1
    assert rig.receive(0) == [(wire.RESULT, 1, queue_id_text(BASE), None)]
    rig.master._turn()  # the second frame waited for the next turn
    assert rig.receive(1) == [(wire.RESULT, 1, queue_id_text(BASE + 1), None)]
    stats = rig.master.store.committer.stats
    assert (stats.messages, stats.transactions) == (2, 2)


def test_the_wait_for_company_is_bounded(rig: Rig) -> None:
    rig.master.last_batch = 5
    rig.send(0, [commit(1)])
    started = time.monotonic()
    rig.master._turn()
    assert time.monotonic() - started < 0.5  # GATHER_MS is 1 ms; nothing else arrives
    assert rig.receive(0) == [(wire.RESULT, 1, queue_id_text(BASE), None)]
    assert rig.master.last_batch == 1
