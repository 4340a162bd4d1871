"""Start and stop each server under test, fresh every time: mailwright, Postfix, aiosmtpd, smtp-sink,
and Postfix relaying to an smtp-sink (`start_postfix_relay`, for the end-to-end benchmark).

Each `start_*` context manager yields a `Target`: where it listens (127.0.0.1 on a free port), the
pid whose memory is measured, and how to count what it stored (mailwright: rows of the `messages`
table of its queue.db; Postfix: messages in its hold queue; the two that store nothing: None).

mailwright runs exactly as shipped (`python3 -m mailwright.cli.main --config FILE serve`): a fresh
state directory, an MX listener, its default queue (SQLite, synchronous=FULL, fsync before 250), its
default process model (a master and one worker per core) and a generated self-signed certificate;
only the connection limits are raised so the load generator and the idle-connection benchmark are
not refused. Its memory is summed over the master and the workers.

Invariants: a process started here is stopped here (SIGTERM, then SIGKILL after a timeout), by
its own pid, and its temporary directory removed, whatever happens inside the `with` block.

Not responsible for: generating load or measuring (see `acceptance`, `idle`, `large`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.postfix_instance import POSTQUEUE, PostfixInstance

DOMAIN = "bench.test"
RCPT = f"rcpt@{DOMAIN}"
SENDER = "load@client.bench.test"
SMTP_SINK = "/usr/sbin/smtp-sink"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    name: str
    port: int
    pid: int | None
    stored: Callable[[], int] | None  # messages the server holds durably, None if it stores nothing
    detail: str = ""
    largest_stored: Callable[[], int] | None = None  # bytes of the largest stored message
    list_queue: list[str] | None = None  # the operator's command that lists the queue (mailq)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_kib(pid: int, key: str) -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (mailwright's master and its workers)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def tree_status_kib(pid: int, key: str) -> int:
    """`proc_status_kib` summed over the process tree. Pages a fork shares copy-on-write count
    once per process: an upper bound, never flattering to a multi-process server."""
    return sum(proc_status_kib(p, key) for p in process_tree(pid))


def _wait_listening(
    port: int, proc: subprocess.Popen[bytes], log: Path, wait: float, ready_line: str | None
) -> None:
    """Until the port accepts and, when given, `ready_line` is in the log: a prefork server's
    port accepts as soon as the master has bound it, before every worker is running."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            if ready_line is None or _said(log, ready_line):
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not get ready on 127.0.0.1:{port} within {wait:.0f}s: {_tail(log)}")


def _tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-1500:].strip()
    return ""


def _said(log: Path, line: str) -> bool:
    with contextlib.suppress(OSError):
        return line in log.read_text(errors="replace")
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def _process(
    name: str,
    argv: list[str],
    port: int,
    root: Path,
    wait: float = 30.0,
    ready_line: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    log = root / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_listening(port, proc, log, wait, ready_line)
        yield proc
        if proc.poll() is not None:
            raise RuntimeError(f"{name} died during the benchmark: {_tail(log)}")
    finally:
        _stop(proc)


def mailwright_config(root: Path, port: int) -> Path:
    config = root / "mailwright.toml"
    config.write_text(
        f"""hostname = "mx.{DOMAIN}"
state_dir = "{root / "state"}"
local_domains = ["{DOMAIN}"]

[[listeners]]
role = "mx"
address = "127.0.0.1"
port = {port}

[limits]
max_connections = 15000
max_connections_per_ip = 15000
"""
    )
    return config


@contextlib.contextmanager
def start_mailwright(python: str = sys.executable) -> Iterator[Target]:
    """`python`: the interpreter whose installed mailwright runs (bench.ab passes another build's)."""
    root = Path(tempfile.mkdtemp(prefix="mailwright-bench-mw-"))
    try:
        port = free_port()
        config = mailwright_config(root, port)
        argv = [python, "-m", "mailwright.cli.main", "--config", str(config), "serve"]
        queue_db = root / "state" / "queue" / "queue.db"

        def query(sql: str) -> int:
            db = sqlite3.connect(f"file:{queue_db}?mode=ro", uri=True, timeout=30)
            try:
                return int(db.execute(sql).fetchone()[0] or 0)
            finally:
                db.close()

        def stored() -> int:
            return query("SELECT count(*) FROM messages")

        def largest() -> int:
            return query("SELECT max(size) FROM messages")

        with _process("mailwright", argv, port, root, wait=60, ready_line="mailwright ready") as proc:
            workers = len(process_tree(proc.pid)) - 1
            detail = f"fresh state dir, SQLite queue, fsync; master + {workers} workers (the default)"
            listing = [python, "-m", "mailwright.cli.main", "--config", str(config), "queue", "list"]
            yield Target("mailwright", port, proc.pid, stored, detail, largest, listing)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def start_aiosmtpd() -> Iterator[Target]:
    root = Path(tempfile.mkdtemp(prefix="mailwright-bench-aiosmtpd-"))
    try:
        port = free_port()
        argv = [sys.executable, "-m", "bench.aiosmtpd_peer", "--port", str(port)]
        with _process("aiosmtpd", argv, port, root) as proc:
            yield Target("aiosmtpd", port, proc.pid, None, "handler stores nothing, uvloop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def start_smtp_sink() -> Iterator[Target]:
    root = Path(tempfile.mkdtemp(prefix="mailwright-bench-sink-"))
    try:
        port = free_port()
        # As root smtp-sink insists on dropping privileges to a named user once it has its socket.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        argv = [SMTP_SINK, *user, "-c", f"127.0.0.1:{port}", "1000"]
        with _process("smtp-sink", argv, port, root) as proc:
            yield Target("smtp-sink", port, proc.pid, None, "C, stores nothing")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def start_postfix() -> Iterator[Target]:
    """Raises `PostfixUnavailable` (with the reason) when no private instance can run here."""
    instance = PostfixInstance(free_port(), DOMAIN)
    try:
        instance.start()

        def stored() -> int:
            counts = instance.queue_counts()
            others = {k: v for k, v in counts.items() if k != "hold" and v}
            if others:
                raise RuntimeError(f"messages outside the hold queue: {others}")
            return counts.get("hold", 0)

        listing = [POSTQUEUE, "-c", str(instance.config_dir), "-p"]
        pid = instance.master_pid()
        yield Target("postfix", instance.port, pid, stored, "real queue, HOLD", list_queue=listing)
    finally:
        instance.stop()


@dataclass
class RelayTarget:
    """A server that relays what it accepts to an smtp-sink (the end-to-end benchmark)."""

    name: str
    port: int
    queued: Callable[[], int]  # messages still in its queue
    delivered: Callable[[], dict[str, int]]  # delivery outcomes by its own record: {"sent": n, ...}
    detail: str = ""


@contextlib.contextmanager
def start_postfix_relay() -> Iterator[RelayTarget]:
    """Postfix with its default delivery settings, relaying everything to a fresh smtp-sink.
    Raises `PostfixUnavailable` (with the reason) when no private instance can run here."""
    with start_smtp_sink() as sink:
        instance = PostfixInstance(free_port(), DOMAIN, relay_to=sink.port)
        try:
            instance.start()
            detail = "real queue, relaying to smtp-sink with its default delivery settings"
            yield RelayTarget("postfix", instance.port, instance.queued_files, instance.delivered, detail)
        finally:
            instance.stop()


STARTERS: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
    "mailwright": start_mailwright,
    "postfix": start_postfix,
    "aiosmtpd": start_aiosmtpd,
    "smtp-sink": start_smtp_sink,
}
