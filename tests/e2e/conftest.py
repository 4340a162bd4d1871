"""Shared pieces for the end-to-end tests: a spawned-server factory and a raw SMTP line client.

Every test here runs a real `mailwright serve` process (see tests/spawn.py) and talks to it over
loopback sockets.  The factory guarantees the process is gone after the test (SIGTERM, then
SIGKILL) and prints the tail of the server log, which pytest shows when the test fails.

Not responsible for: starting servers with any particular settings (each test says what it needs).
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import spawn
from mailwright.queue.sqlite import SQLiteQueueStore
from spawn import wait_for_log as wait_for_log  # re-exported: the e2e tests import it from here

QUEUED = re.compile(r"queued as (\S+)")

ServerFactory = Callable[..., spawn.SpawnedServer]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """`make_server(name, start=True, **spawn kwargs)`: a configured (and started) server."""
    made: list[spawn.SpawnedServer] = []

    def factory(name: str = "srv", *, start: bool = True, **kwargs: object) -> spawn.SpawnedServer:
        srv = spawn.make_server(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield factory
    for srv in made:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()
        if srv.log.exists():
            tail = srv.log.read_text(errors="replace").splitlines()[-40:]
            print(f"--- tail of {srv.log} ---\n" + "\n".join(tail))


def queue_dir_of(srv: spawn.SpawnedServer, queue_dir: Path | None = None) -> Path:
    return queue_dir if queue_dir is not None else srv.queue_db.parent


def stored_body(queue_dir: Path, queue_id: str) -> bytes:
    """The body as the queue store reads it (operator mode, the same path `queue show --body` takes)."""
    store = SQLiteQueueStore(queue_dir, writer=False)
    return b"".join(store.read_body(queue_id))


def queued_ids(queue_dir: Path) -> set[str]:
    """Ids in the queue, through the operator API (for servers whose queue is not under state/)."""
    return {info.id for info in SQLiteQueueStore(queue_dir, writer=False).list_messages()}


class RawSMTP:
    """A line-level SMTP client on a plain socket, for cases smtplib hides (time-outs, refusals)."""

    def __init__(
        self, port: int, *, source: str | None = None, timeout: float = 10.0, host: str = "127.0.0.1"
    ) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.file = self.sock.makefile("rb")

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: code and the text lines joined by newlines."""
        lines: list[str] = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise ConnectionError("connection closed while waiting for a reply: " + repr(lines))
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (and sends nothing more) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            return self.file.read(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def log_size(srv: spawn.SpawnedServer) -> int:
    return srv.log.stat().st_size if srv.log.exists() else 0
