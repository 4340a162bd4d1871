"""Thousands of idle connections cost the server little and do not slow down new clients.

3,000 plain TCP connections to the MX port each read their 220 greeting and then say nothing
(the default command time-out is 300 s, so none is closed).  A new client must still get its
greeting fast and deliver a message, and the server's resident memory must stay bounded.

A burst of connections that arrives while every worker is busy waits in the kernel's listen
queue (1,024 places) and is greeted once a worker is free.  When that queue overflows, Linux drops
the SYN or the handshake's last ACK, and an SMTP client, which waits for the server to speak
first, can be left on a connection the server has forgotten: no greeting, ever.

Not covered here: time-outs of idle connections (test_timeouts.py).
"""

from __future__ import annotations

import os
import resource
import selectors
import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import spawn

from .conftest import QUEUED, RawSMTP, ServerFactory
from .test_workers import worker_pids

IDLE = 3000
BATCH = 250  # connect in batches below the listen backlog (1024)


@pytest.fixture
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_many(
    port: int, count: int, sockets: list[socket.socket], sel: selectors.BaseSelector, events: int
) -> list[socket.socket]:
    """Start `count` non-blocking connections, add them to `sockets` and register them in `sel`."""
    started = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sockets.append(s)
        sel.register(s, events)
        started.append(s)
    return started


def open_idle(port: int, count: int, sockets: list[socket.socket]) -> None:
    """Open `count` connections (non-blocking), reading the 220 greeting on each."""
    sel = selectors.DefaultSelector()
    try:
        pending = dict.fromkeys(connect_many(port, count, sockets, sel, selectors.EVENT_READ), b"")
        deadline = time.monotonic() + 30
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} connections got no greeting"
            for key, _ in sel.select(timeout=1.0):
                s = key.fileobj  # type: ignore[assignment]
                assert isinstance(s, socket.socket)  # narrows the selector's key type
                data = s.recv(512)
                assert data, "the server closed an idle connection before its greeting"
                pending[s] += data
                if pending[s].endswith(b"\r\n"):
                    assert pending[s].startswith(b"220 "), pending[s]
                    sel.unregister(s)
                    del pending[s]
    finally:
        sel.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


def test_3000_idle_connections(many_files: None, make_server: ServerFactory) -> None:
    srv: spawn.SpawnedServer = make_server("idle")
    assert srv.proc is not None
    port = srv.ports["mx"]
    before = rss_kib(srv.proc.pid)
    sockets: list[socket.socket] = []
    try:
        for _ in range(IDLE // BATCH):
            open_idle(port, BATCH, sockets)
        assert len(sockets) == IDLE
        during = rss_kib(srv.proc.pid)

        start = time.monotonic()
        fresh = RawSMTP(port)
        code, _ = fresh.reply()
        greeting = time.monotonic() - start
        fresh.close()
        assert code == 220
        assert greeting < 0.5, f"greeting took {greeting:.3f} s with {IDLE} idle connections"

        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("fresh.test")
            smtp.mail("fresh@client.test")
            smtp.rcpt("bob@mx.test")
            code, text = smtp.data(b"Subject: beside 3000 idle\r\n\r\nhello\r\n")
        assert code == 250 and QUEUED.search(text.decode()), (code, text)

        # The idle ones were kept, not dropped: a sample still answers.
        for s in sockets[:: IDLE // 10]:
            s.setblocking(True)
            s.settimeout(5)
            s.sendall(b"NOOP\r\n")
            assert s.recv(512).startswith(b"250"), "an idle connection was dropped"
        print(
            f"idle connections: {IDLE}; server RSS {before / 1024:.1f} MB before, "
            f"{during / 1024:.1f} MB with them open; greeting for a new client in {greeting * 1000:.1f} ms"
        )
        assert during < 300 * 1024, f"server RSS {during} KiB with {IDLE} idle connections"
    finally:
        for s in sockets:
            s.close()


BURST = 600  # well past uvloop's default backlog (100), well inside the configured 1,024


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "master and 2 workers"])
def test_a_burst_waits_in_the_listen_queue(make_server: ServerFactory, workers: int) -> None:
    """With every process of the server stopped, nobody accepts: whatever completes its handshake
    is held by the kernel's listen queue, whose size the server chose.  All of the burst must fit,
    and all of it must be greeted once the server runs again.  Both process models, since each
    makes its listening sockets its own way (uvloop binds them, or the master does)."""
    srv: spawn.SpawnedServer = make_server("burst", workers=workers)
    assert srv.proc is not None
    port = srv.ports["mx"]
    stopped = [srv.proc.pid, *worker_pids(srv)]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    sockets: list[socket.socket] = []
    try:
        sel = selectors.DefaultSelector()
        connect_many(port, BURST, sockets, sel, selectors.EVENT_WRITE)
        # A SYN the full queue dropped is sent again only after 1 s: count before that.
        connected: set[socket.socket] = set()
        deadline = time.monotonic() + 0.8
        while len(connected) < BURST and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                s = key.fileobj  # type: ignore[assignment]
                assert isinstance(s, socket.socket)  # narrows the selector's key type
                assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                sel.unregister(s)
                connected.add(s)
        sel.close()
        assert len(connected) == BURST, f"the listen queue held {len(connected)} of {BURST} connections"
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    try:
        for s in sockets:
            s.setblocking(True)
            s.settimeout(10)
            assert s.recv(512).startswith(b"220 "), "a queued connection got no greeting"
    finally:
        for s in sockets:
            s.close()
