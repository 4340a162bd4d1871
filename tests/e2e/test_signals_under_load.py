"""Graceful shutdown and reload under load, with real peers: SIGTERM, ^C, SIGHUP storms, big DATA.

Each test loads a real `mailwright serve` (one process, `workers = 1`; or a master and 2 workers)
with Postfix's smtp-source (20 sessions, a new connection per 1 KB message, run with -v so that
every "250 ... queued as ID" it got is in its output) and with raw-socket clients that record,
per message, the unique marker in its Subject and the reply to its end of data. Half of the small
clients reconnect every five messages and half keep their connection as long as the server does,
so that at any moment several wait for the 250 of a commit in flight; two more stream 256 KiB
bodies slowly, so that some are always inside DATA. Then the test signals the server and checks:

- every message that got a 250 after its end of data is in the queue after exit, exactly once,
  under the id the 250 named (no marker is stored twice; smtp-source's acknowledged ids are all
  there, and it has no more messages stored than end-of-data dots it sent);
- a message answered 4xx after its end of data is not stored (the client will send it again);
- every client cut off gets 421 4.3.2, including one whose commit was in flight (its 250 first);
  a closed connection without a reply is accepted only where no reply could be written: before
  the greeting, for a connection the server never accepted (still in the kernel's listen queue);
- no connection hangs: every reply comes within the clients' time-out, and smtp-source ends by
  itself once the server is gone;
- the whole process tree is gone within `EXIT_BOUND` of the signal, with exit code 0;
- no traceback and no ERROR line in the log (the server's stderr goes there too), and the log
  says "shutting down" and, last, "mailwright stopped".

Scenarios, each in both process models: SIGTERM to the server; SIGTERM to its process group (what
systemd's default KillMode does: the workers get it straight from the kernel, and again from the
master); ^C as a terminal sends it (SIGINT to the process group; the workers ignore it and wait
for the master's word); SIGHUP every 50 ms, 20 times, under load, after new certificate files were
put in place (nobody is cut off, no worker dies, and afterwards every process serves the new
certificate); SIGTERM while a 20 MB message streams in (421, and no temp file is left) or right
after its end of data (250 and stored, or 421 and not stored); an impatient operator who keeps
sending SIGTERM and ^C every 5 ms until the server is gone (those further signals are ignored: the
in-flight commits are still answered, and once the queue is closed SIG_IGN keeps them from turning
the clean exit into a death by signal, and each one seen during the stop is answered in the log
with what the stop still waits for); sessions busy with other work than a commit at the signal
(a failed AUTH's delay: 535, then 421; a TLS handshake the client stalls is cut at once, as no
reply can be written inside it and nothing is owed); and a worker that does not stop (here
SIGSTOPped), which the master kills after `limits.stop_timeout`, losing nothing acknowledged.

Not covered here: SIGKILL (test_durability.py) and the certificate rules (test_reload.py,
tests/net/test_tls.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

import spawn
from mailwright.queue.sqlite import SQLiteQueueStore

from .conftest import QUEUED, ServerFactory, log_size, wait_for_log
from .test_durability import RCPT, message, spool_state
from .test_reload import install_new_cert, starttls_issuer
from .test_workers import gone, worker_pids

SMTP_SOURCE = Path("/usr/sbin/smtp-source")
SOURCE_SENDER = "source@example.org"  # smtp-source's messages; the raw clients send as load@client.test
REPLY_TIMEOUT = 15.0  # a reply that takes longer is a hung connection
EXIT_BOUND = 5.0  # seconds from the signal until the whole process tree is gone
SMALL, SLOW = 1024, 256 * 1024
BIG = 20 * 1024 * 1024
SHUTTING_DOWN = "421 4.3.2"
ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ")
SUBJECT = re.compile(rb"^Subject: (SIG-\S+)\r$", re.M)


def smtp_source() -> str:
    """scripts/test installs Postfix for it, so a missing smtp-source is a failure, not a skip."""
    if not SMTP_SOURCE.exists():
        pytest.fail(f"{SMTP_SOURCE} is not installed (Debian's postfix package has it)")
    return str(SMTP_SOURCE)


@dataclass
class Tally:
    """What the raw clients saw; `signalled` splits "before the signal" from "after"."""

    signalled: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, str] = field(default_factory=dict)  # marker -> queue id
    refused_after_dot: dict[str, str] = field(default_factory=dict)  # marker -> reply
    cut: Counter[str] = field(default_factory=Counter)  # "phase: reply" for replies that ended a session
    dropped: list[str] = field(default_factory=list)  # phases where a greeted connection closed silently
    ungreeted: int = 0  # connections refused, or closed before any greeting
    hung: list[str] = field(default_factory=list)
    early: list[str] = field(default_factory=list)  # anything but success before the signal

    def note(self, what: str, text: str) -> None:
        with self.lock:
            if not self.signalled.is_set():
                self.early.append(f"{what}: {text}")
            if what == "cut":
                self.cut[text] += 1
            elif what == "dropped":
                self.dropped.append(text)
            elif what == "hung":
                self.hung.append(text)
            elif what == "ungreeted":
                self.ungreeted += 1


class Ended(Exception):
    """The session is over (the tally says why)."""


class Client(threading.Thread):
    """A raw SMTP client: `per_conn` messages a connection, each body sent in `chunk`-byte pieces
    with `pause` s between them; connects again until `done` is set or the server turns it away.
    With `tls`, each connection does STARTTLS first (verified against that context)."""

    def __init__(
        self,
        name: str,
        port: int,
        tally: Tally,
        done: threading.Event,
        *,
        size: int = SMALL,
        chunk: int = 1 << 20,
        pause: float = 0.0,
        per_conn: int = 5,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.port, self.tally, self.done, self.tls = port, tally, done, tls
        self.size, self.chunk, self.pause, self.per_conn = size, chunk, pause, per_conn
        self.phase = "idle"
        self.sent = 0
        self.trace: list[str] = []  # every reply after the signal, for failure messages

    def run(self) -> None:
        deadline = time.monotonic() + 40
        while not self.done.is_set() and time.monotonic() < deadline:
            try:
                self.session()
            except Ended:
                if self.tally.signalled.is_set():
                    break  # the server is going away: nothing more to try
        self.phase = "finished"

    def session(self) -> None:
        self.phase = "connect"
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=REPLY_TIMEOUT)
        except OSError as exc:
            self.tally.note("ungreeted", f"connect: {exc!r}")
            raise Ended from exc
        with contextlib.ExitStack() as stack:
            stack.enter_context(sock)
            reader = sock.makefile("rb")
            greeting = self.read(reader)
            if greeting is None:
                self.tally.note("ungreeted", "closed before the greeting")
                raise Ended
            if not greeting.startswith("220"):
                self.tally.note("cut", f"greeting: {greeting}")
                raise Ended
            self.step(sock, reader, "EHLO", b"EHLO load.test\r\n", "250")
            if self.tls is not None:
                self.step(sock, reader, "STARTTLS", b"STARTTLS\r\n", "220")
                sock = stack.enter_context(self.tls.wrap_socket(sock, server_hostname=spawn.LOCAL_DOMAIN))
                reader = sock.makefile("rb")
                self.step(sock, reader, "EHLO", b"EHLO load.test\r\n", "250")
            for _ in range(self.per_conn):
                if self.done.is_set():
                    break
                self.transaction(sock, reader)
            self.step(sock, reader, "QUIT", b"QUIT\r\n", "221")
        self.phase = "idle"

    def transaction(self, sock: socket.socket, reader: BinaryIO) -> None:
        marker = f"SIG-{self.name}-{self.sent}-{uuid.uuid4().hex}"
        self.sent += 1
        body = message(marker, self.size) + b".\r\n"
        self.step(sock, reader, "MAIL", b"MAIL FROM:<load@client.test>\r\n", "250")
        self.step(sock, reader, "RCPT", f"RCPT TO:<{RCPT}>\r\n".encode(), "250")
        self.step(sock, reader, "DATA", b"DATA\r\n", "354")
        self.phase = "DATA body"
        try:
            for start in range(0, len(body), self.chunk):
                if start and self.pause:
                    time.sleep(self.pause)
                sock.sendall(body[start : start + self.chunk])
        except OSError:
            pass  # the server closed: its last reply (if it wrote one) is still there to read
        self.phase = "end of data"
        reply = self.read(reader)
        if reply is None:
            self.tally.note("dropped", f"end of data ({marker})")
            raise Ended
        if reply.startswith("250"):
            match = QUEUED.search(reply)
            with self.tally.lock:
                self.tally.acked[marker] = match.group(1) if match else f"no queue id in {reply!r}"
            return
        with self.tally.lock:
            self.tally.refused_after_dot[marker] = reply
        self.tally.note("cut", f"end of data: {reply}")
        raise Ended

    def step(self, sock: socket.socket, reader: BinaryIO, phase: str, line: bytes, expect: str) -> str:
        self.phase = phase
        with contextlib.suppress(OSError):
            sock.sendall(line)  # if this fails the server closed; read what it said before that
        reply = self.read(reader)
        if reply is None:
            self.tally.note("dropped", phase)
            raise Ended
        if not reply.startswith(expect):
            self.tally.note("cut", f"{phase}: {reply}")
            raise Ended
        return reply

    def read(self, reader: BinaryIO) -> str | None:
        """One reply's last line ("421 4.3.2 ..."); None when the connection closed without one."""
        try:
            while True:
                raw = reader.readline()
                if not raw.endswith(b"\n"):
                    reply = None
                    break
                if raw[3:4] != b"-":
                    reply = raw.decode("utf-8", "replace").rstrip("\r\n")
                    break
        except TimeoutError:
            self.tally.note("hung", f"{self.name} waiting for the reply to {self.phase}")
            raise Ended from None
        except OSError:
            reply = None  # a reset after everything the server wrote was read
        if self.tally.signalled.is_set():
            self.trace.append(f"{self.phase}: {reply or 'closed'}"[:40])
        return reply


@dataclass
class Run:
    """One loaded server, its peers, and what happened to them."""

    srv: spawn.SpawnedServer
    tally: Tally
    clients: list[Client]
    done: threading.Event
    source: subprocess.Popen[bytes]
    source_log: Path
    pids: list[int]  # the master (or the one process), then its workers

    def phases(self) -> dict[str, int]:
        return dict(Counter(c.phase for c in self.clients))

    def source_output(self) -> str:
        return self.source_log.read_text(errors="replace")

    def source_acked(self) -> list[str]:
        return re.findall(r"<<< 250 \S+ OK queued as (\S+)", self.source_output())

    def source_dots(self) -> int:
        return len(re.findall(r"^\S*smtp-source: \.$", self.source_output(), re.M))

    def traces(self) -> str:
        return "\n".join(f"{c.name}: {c.trace[-4:]}" for c in self.clients)


def start_load(
    srv: spawn.SpawnedServer, tmp: Path, *, messages: int = 100_000, tls: ssl.SSLContext | None = None
) -> Run:
    """Start smtp-source (`messages` in all) and the raw clients; return once mail flows."""
    assert srv.proc is not None
    pids = [srv.proc.pid] + (worker_pids(srv) if srv.workers > 1 else [])
    tally, done = Tally(), threading.Event()
    port = srv.ports["mx"]
    clients = [
        Client(f"small{i}", port, tally, done, per_conn=5 if i % 2 else 10_000, tls=tls if i < 2 else None)
        for i in range(6)
    ]
    clients += [
        Client(f"slow{i}", port, tally, done, size=SLOW, chunk=16 * 1024, pause=0.02, per_conn=2)
        for i in range(2)
    ]
    source_log = tmp / f"smtp-source-{uuid.uuid4().hex[:8]}.log"
    with source_log.open("wb") as out:
        source = subprocess.Popen(
            [
                *(smtp_source(), "-v", "-s", "20", "-m", str(messages), "-l", "1024"),
                *("-f", SOURCE_SENDER, "-t", RCPT, f"127.0.0.1:{port}"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    for client in clients:
        client.start()
    run = Run(srv, tally, clients, done, source, source_log, pids)
    deadline = time.monotonic() + 10
    while len(tally.acked) < 20 or len(run.source_acked()) < 100:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no load: {len(tally.acked)} acked; smtp-source: {run.source_output()[-500:]}"
            )
        time.sleep(0.05)
    time.sleep(0.3)  # the slow clients are inside DATA by now
    return run


def finish_peers(run: Run) -> None:
    """Every client and smtp-source must end by itself, promptly: nothing hangs."""
    run.done.set()
    deadline = time.monotonic() + REPLY_TIMEOUT + 5
    for client in run.clients:
        client.join(max(0.1, deadline - time.monotonic()))
    stuck = [f"{c.name} in {c.phase}" for c in run.clients if c.is_alive()]
    try:
        run.source.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.source.kill()
        run.source.wait()
        stuck.append("smtp-source")
    assert stuck == [], f"peers still waiting for the server: {stuck}"


def stored(srv: spawn.SpawnedServer) -> tuple[Counter[str], dict[str, str], set[str]]:
    """(marker -> times stored, marker -> queue id, ids of smtp-source's messages), read through
    the operator API."""
    store = SQLiteQueueStore(srv.queue_db.parent, writer=False)
    markers: Counter[str] = Counter()
    where: dict[str, str] = {}
    source: set[str] = set()
    for info in store.list_messages():
        if info.sender == SOURCE_SENDER:
            source.add(info.id)
            continue
        found = SUBJECT.search(b"".join(store.read_body(info.id)))
        assert found is not None, f"{info.id}: a stored message without its marker"
        marker = found.group(1).decode()
        markers[marker] += 1
        where[marker] = info.id
    return markers, where, source


def check_queue(run: Run) -> str:
    """Every acknowledged message stored once, nothing refused stored, no duplicates; a summary."""
    markers, where, source = stored(run.srv)
    tally = run.tally
    twice = [m for m, n in markers.items() if n > 1]
    assert twice == [], f"stored more than once: {twice}"
    lost = [m for m in tally.acked if markers[m] != 1]
    assert lost == [], (
        f"{len(lost)} of {len(tally.acked)} acknowledged messages are not in the queue: {lost[:5]}"
    )
    moved = [m for m, qid in tally.acked.items() if where[m] != qid]
    assert moved == [], f"stored under another id than the 250 named: {moved[:5]}"
    phantom = [m for m in tally.refused_after_dot if markers[m]]
    assert phantom == [], f"answered 4xx after end of data, yet stored (a retry duplicates it): {phantom}"
    source_acked = run.source_acked()
    missing = sorted(set(source_acked) - source)
    assert missing == [], f"smtp-source got 250 for {len(missing)} messages not in the queue: {missing[:5]}"
    dots = run.source_dots()
    assert len(source) <= dots, f"{len(source)} smtp-source messages stored for {dots} sent"
    return (
        f"raw clients: {len(tally.acked)} acked, {sum(markers.values())} stored,"
        f" {len(tally.refused_after_dot)} refused after the dot (none stored);"
        f" smtp-source: {len(source_acked)} acked, {len(source)} stored, {dots} sent"
    )


def check_log(srv: spawn.SpawnedServer, since: int) -> str:
    with srv.log.open("rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-4000:]
    errors = [line for line in text.splitlines() if ERROR_LINE.match(line)]
    assert errors == [], "\n".join(errors[:20])
    return text


def check_cuts(run: Run) -> None:
    """After a stop signal: every session the server cut got 421 4.3.2; none closed silently."""
    tally = run.tally
    assert tally.early == [], f"trouble before the signal: {tally.early[:5]}"
    assert tally.hung == [], tally.hung
    assert tally.dropped == [], f"connections closed without a reply: {tally.dropped}\n{run.traces()}"
    other = [text for text in tally.cut if SHUTTING_DOWN not in text]
    assert other == [], f"cut off with another reply than {SHUTTING_DOWN}: {other}\n{run.traces()}"


def check_stopped(run: Run, code: int, elapsed: float, mark: int) -> None:
    assert code == 0, f"exit code {code}"
    assert elapsed < EXIT_BOUND, f"the server took {elapsed:.2f} s to exit"
    assert all(gone(pid) for pid in run.pids), f"left behind: {[p for p in run.pids if not gone(p)]}"
    text = check_log(run.srv, mark)
    assert "shutting down" in text
    assert "mailwright stopped" in text.strip().splitlines()[-1], "the log does not end saying it stopped"
    check_spool(run.srv)


def check_spool(srv: spawn.SpawnedServer) -> None:
    """After exit: no temp file left, and a spool file for every spooled row."""
    tmp, files, rows = spool_state(srv.queue_db.parent)
    assert tmp == [] and files == rows, f"spool after exit: temp files {tmp}, {files} files for {rows} rows"


def start_again(srv: spawn.SpawnedServer) -> str:
    """The next start is clean and mail flows: one message acknowledged, exit 0; the log since."""
    mark = log_size(srv)
    srv.start()
    again = Tally()
    Client("again", srv.ports["mx"], again, threading.Event(), per_conn=1).session()
    assert len(again.acked) == 1, again
    assert srv.stop() == 0
    return check_log(srv, mark)


def wait_for_exit(srv: spawn.SpawnedServer, since: float) -> tuple[int, float]:
    """The exit code, and the seconds from `since` until the server exited."""
    assert srv.proc is not None
    try:
        code = srv.proc.wait(EXIT_BOUND + 30)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        raise AssertionError("the server did not exit") from None
    return code, time.monotonic() - since


STOPS = {
    "SIGTERM": lambda pid: os.kill(pid, signal.SIGTERM),
    "SIGTERM to the group": lambda pid: os.killpg(pid, signal.SIGTERM),
    "^C": lambda pid: os.killpg(pid, signal.SIGINT),  # a terminal signals its foreground group
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("how", list(STOPS))
def test_stop_under_load(make_server: ServerFactory, tmp_path: Path, workers: int, how: str) -> None:
    srv = make_server("stop", workers=workers, start=False)
    srv.start(own_group=True)  # its pid is its process group's id
    run = start_load(srv, tmp_path)
    assert srv.proc is not None
    mark = log_size(srv)
    phases, acked_before = run.phases(), len(run.tally.acked)
    run.tally.signalled.set()
    t0 = time.monotonic()
    STOPS[how](srv.proc.pid)
    code, elapsed = wait_for_exit(srv, t0)
    finish_peers(run)
    print(
        f"{how}, {workers} worker(s): clients at the signal {phases}, {acked_before} acked so far;"
        f" exit {code} after {elapsed:.3f} s; replies that cut a session: {dict(run.tally.cut)};"
        f" {run.tally.ungreeted} connection(s) never greeted"
    )
    check_cuts(run)
    print(check_queue(run))
    check_stopped(run, code, elapsed, mark)
    assert run.tally.cut, "nobody was cut off: the slow clients should have been inside DATA"


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_storm_under_load(make_server: ServerFactory, tmp_path: Path, workers: int) -> None:
    srv = make_server("hup", workers=workers, start=False)
    srv.start(own_group=True)
    old_issuer = starttls_issuer(srv, srv.ca_file)
    # New files in place first: a SIGHUP between the key and the certificate being written would
    # (rightly) be refused as a mismatched pair.
    new_ca = install_new_cert(srv, tmp_path)
    # Two small clients use STARTTLS on every connection, across the swap: they trust both CAs.
    either = ssl.create_default_context(cafile=str(srv.ca_file))
    either.load_verify_locations(cafile=str(new_ca))
    run = start_load(srv, tmp_path, messages=2000, tls=either)
    assert srv.proc is not None
    mark = log_size(srv)
    for _ in range(20):
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.05)
    wait_for_log(srv, "TLS certificate reloaded", since=mark, count=workers)
    # The load goes on past the storm, until smtp-source has sent all its messages.
    run.source.wait(REPLY_TIMEOUT)
    finish_peers(run)  # each client ends its connection with QUIT
    tally = run.tally
    assert tally.early == [] and not tally.dropped and not tally.hung, (
        tally.early,
        tally.dropped,
        tally.hung,
    )
    assert not tally.cut and tally.ungreeted == 0, (tally.cut, tally.ungreeted)
    assert run.source.returncode == 0, run.source_output()[-2000:]
    text = check_log(srv, mark)
    assert "killed by signal" not in text and "exited with status" not in text
    if workers > 1:
        assert sorted(worker_pids(srv)) == sorted(run.pids[1:]), "a worker was replaced"
        assert text.count("reloading the TLS certificate in every worker") == 20
    reloads = Counter(
        line.split(": ")[0].rsplit(" ", 1)[1] for line in text.splitlines() if "reloaded" in line
    )
    # Afterwards every process serves the new certificate (connections land on either worker).
    issuers = {starttls_issuer(srv, new_ca) for _ in range(4 * workers)}
    assert len(issuers) == 1 and old_issuer not in issuers
    after = Tally()
    Client("after", srv.ports["mx"], after, threading.Event(), per_conn=1).session()
    assert len(after.acked) == 1, after
    mark = log_size(srv)
    assert srv.stop() == 0
    check_log(srv, mark)
    print(f"SIGHUP x20, {workers} worker(s): reloads per process {dict(reloads)}; {check_queue(run)}")


def stream_big(srv: spawn.SpawnedServer, when: str) -> tuple[str, str | None]:
    """Send one BIG message on a raw connection and SIGTERM the server `when`: "mid-stream" (after
    a quarter of the body; the rest follows at ~64 KiB a ms, as from a fast remote client) or
    "after-dot" (right after the end of data). Returns (marker, the reply or None)."""
    assert srv.proc is not None
    marker = f"SIG-big-{uuid.uuid4().hex}"
    body = message(marker, BIG) + b".\r\n"
    tally = Tally()
    tally.signalled.set()
    client = Client("big", srv.ports["mx"], tally, threading.Event())
    with socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=REPLY_TIMEOUT) as sock:
        reader = sock.makefile("rb")
        assert (client.read(reader) or "").startswith("220")
        client.step(sock, reader, "EHLO", b"EHLO big.test\r\n", "250")
        client.step(sock, reader, "MAIL", b"MAIL FROM:<load@client.test>\r\n", "250")
        client.step(sock, reader, "RCPT", f"RCPT TO:<{RCPT}>\r\n".encode(), "250")
        client.step(sock, reader, "DATA", b"DATA\r\n", "354")
        chunk = 64 * 1024
        signalled = False
        try:
            for start in range(0, len(body), chunk):
                if when == "mid-stream" and start >= len(body) // 4:
                    if not signalled:
                        srv.proc.send_signal(signal.SIGTERM)
                        signalled = True
                    time.sleep(0.001)
                sock.sendall(body[start : start + chunk])
        except OSError:
            pass  # cut off: read the reply below
        if when == "after-dot":
            srv.proc.send_signal(signal.SIGTERM)
        return marker, client.read(reader)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("when", ["mid-stream", "after-dot"])
def test_sigterm_while_a_20_mb_message_streams(make_server: ServerFactory, workers: int, when: str) -> None:
    srv = make_server("big", workers=workers)
    mark = log_size(srv)
    t0 = time.monotonic()
    marker, reply = stream_big(srv, when)
    code, elapsed = wait_for_exit(srv, t0)
    markers, where, _ = stored(srv)
    print(
        f"20 MB, SIGTERM {when}, {workers} worker(s): reply {reply!r}; exit {code} {elapsed:.2f} s after DATA"
    )
    assert reply is not None, "the connection closed without a reply"
    if reply.startswith("250"):
        match = QUEUED.search(reply)
        assert match and markers[marker] == 1 and where[marker] == match.group(1), "acknowledged, not stored"
    else:
        assert reply.startswith(SHUTTING_DOWN), reply
        assert markers[marker] == 0, "answered 421, yet stored"
    if when == "mid-stream":
        assert reply.startswith(SHUTTING_DOWN), "the server took in the rest of the message after its SIGTERM"
    assert code == 0
    text = check_log(srv, mark)
    assert "mailwright stopped" in text
    check_spool(srv)
    text = start_again(srv)
    assert "orphan" not in text and "lost its body" not in text, text


@pytest.mark.parametrize("workers", [1, 2])
def test_an_impatient_operator_signals_again_and_again(
    make_server: ServerFactory, tmp_path: Path, workers: int
) -> None:
    srv = make_server("again", workers=workers, start=False)
    srv.start(own_group=True)
    run = start_load(srv, tmp_path)
    assert srv.proc is not None
    mark = log_size(srv)
    run.tally.signalled.set()
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    sent = 1
    # SIGTERM and ^C by turns, every 5 ms, until the server has gone (and its pid with it).
    while srv.proc.poll() is None and time.monotonic() - t0 < EXIT_BOUND + 5:
        time.sleep(0.005)
        with contextlib.suppress(ProcessLookupError):
            if sent % 2:
                os.killpg(srv.proc.pid, signal.SIGINT)
            else:
                srv.proc.send_signal(signal.SIGTERM)
            sent += 1
    code, elapsed = wait_for_exit(srv, t0)
    finish_peers(run)
    print(
        f"impatient, {workers} worker(s): {sent} signals; exit {code} after {elapsed:.3f} s;"
        f" replies that cut a session: {dict(run.tally.cut)}; {check_queue(run)}"
    )
    check_cuts(run)
    check_stopped(run, code, elapsed, mark)
    # The operator hears that the stop goes on, and what for (signals after it are ignored).
    assert "already shutting down: waiting for " in check_log(srv, mark)


@pytest.mark.parametrize("workers", [1, 2])
def test_sessions_busy_at_the_signal_are_answered_then_told_421(
    make_server: ServerFactory, workers: int
) -> None:
    """Not only commits keep a session busy: a password check (here the delay before a failed
    AUTH's 535) is answered, and then the session is told 421 like the others, rather than left
    open until the exit cuts it. A client that stalls inside its TLS handshake is cut at once: no
    reply can be written there, nothing is owed to it, and waiting would let it hold the stop."""
    srv = make_server("busy", workers=workers)
    tally = Tally()
    tally.signalled.set()
    stall = Client("stall", srv.ports["mx"], tally, threading.Event())
    auth = Client("auth", srv.ports["submission"], tally, threading.Event())
    tls = ssl.create_default_context(cafile=str(srv.ca_file))
    with contextlib.ExitStack() as stack:
        stalled = stack.enter_context(socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=30))
        stalled_reader = stalled.makefile("rb")
        assert (stall.read(stalled_reader) or "").startswith("220")
        stall.step(stalled, stalled_reader, "EHLO", b"EHLO stall.test\r\n", "250")
        stall.step(stalled, stalled_reader, "STARTTLS", b"STARTTLS\r\n", "220")  # and no ClientHello

        raw = stack.enter_context(
            socket.create_connection(("127.0.0.1", srv.ports["submission"]), timeout=30)
        )
        reader = raw.makefile("rb")
        assert (auth.read(reader) or "").startswith("220")
        auth.step(raw, reader, "EHLO", b"EHLO auth.test\r\n", "250")
        auth.step(raw, reader, "STARTTLS", b"STARTTLS\r\n", "220")
        sock = stack.enter_context(tls.wrap_socket(raw, server_hostname=spawn.LOCAL_DOMAIN))
        reader = sock.makefile("rb")
        auth.step(sock, reader, "EHLO", b"EHLO auth.test\r\n", "250")
        wrong = base64.b64encode(f"\0{spawn.USER}\0not the password".encode()).decode()
        sock.sendall(f"AUTH PLAIN {wrong}\r\n".encode())  # the server waits 0.25 s before its 535
        assert srv.proc is not None
        mark = log_size(srv)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        replies = [auth.read(reader), auth.read(reader), auth.read(reader)]
        code, elapsed = wait_for_exit(srv, t0)
        stalled.settimeout(REPLY_TIMEOUT)
        after_stall = stalled.recv(100)
    print(f"busy sessions, {workers} worker(s): AUTH client got {replies}; exit {code} after {elapsed:.2f} s")
    assert replies[0] is not None and replies[0].startswith("535"), replies
    assert replies[1] is not None and replies[1].startswith(SHUTTING_DOWN), replies
    assert replies[2] is None, "the connection stayed open after the 421"
    assert after_stall == b"", after_stall
    assert tally.hung == [], tally.hung
    assert code == 0
    assert elapsed < 1.5, f"the stop took {elapsed:.2f} s"  # the AUTH delay is 0.25 s
    text = check_log(srv, mark)
    assert "TLS handshake with 127.0.0.1 cut short: shutting down" in text
    assert "mailwright stopped" in text.strip().splitlines()[-1]


def test_a_worker_that_does_not_stop_is_killed_after_the_stop_timeout(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A worker that cannot finish its stop (stuck on a hung disk, or here SIGSTOPped) must not
    hold the server forever: the master kills it after `limits.stop_timeout`, says so, and
    exits 0 with the queue intact; its clients lose their connections, none an acknowledged
    message, and the next start is clean."""
    timeout = 1.5
    srv = make_server("stuck", workers=2, start=False, limits=f"stop_timeout = {timeout}")
    srv.start()
    run = start_load(srv, tmp_path)
    stuck, other = run.pids[1], run.pids[2]
    os.kill(stuck, signal.SIGSTOP)
    assert srv.proc is not None
    mark = log_size(srv)
    run.tally.signalled.set()
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code, elapsed = wait_for_exit(srv, t0)
    finish_peers(run)
    print(f"stuck worker: exit {code} after {elapsed:.2f} s; {check_queue(run)}")
    assert code == 0
    assert timeout <= elapsed < timeout + 2, f"the stop took {elapsed:.2f} s"
    assert all(gone(pid) for pid in run.pids)
    with srv.log.open("rb") as f:
        f.seek(mark)
        text = f.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-4000:]
    errors = [line for line in text.splitlines() if ERROR_LINE.match(line)]
    assert len(errors) == 1 and errors[0].endswith(
        f"worker pid {stuck} did not stop within {timeout:g} s (limits.stop_timeout): killing it"
    ), errors
    assert f"(pid {other})" not in text, "the worker that could stop was killed too"
    assert "mailwright stopped" in text.strip().splitlines()[-1]
    check_spool(srv)
    start_again(srv)
