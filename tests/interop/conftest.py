"""Shared fixtures for the interop suite: one spawned `mailwright serve` and client helpers.

The interop tests talk to a real server process (tests/spawn.py) with real peers: swaks,
Postfix's smtp-source, smtplib and aiosmtplib, over loopback sockets and real TLS trusting
the spawned server's trustme CA.  One session-scoped server is shared by every test that
cannot disturb the others (tests that need a fresh auth limiter start their own).

Invariants: each test finds its own messages by diffing the queue (`QueueWatch`) rather
than assuming an empty queue, so tests stay independent in any order.
Not responsible for: starting the server (spawn.py does), or asserting anything itself.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS_DIR = Path(__file__).resolve().parents[1]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

import spawn as spawn  # noqa: E402  (re-exported for the test modules)

USER = spawn.USER
PASSWORD = spawn.PASSWORD
HOST = "127.0.0.1"
# A second loopback address a client can bind to act as "some other host" (no trust by IP).
OTHER_HOST = "127.0.0.2"
_ENHANCED = re.compile(rb"^([245]\.\d{1,3}\.\d{1,3})\b")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spawn.SpawnedServer]:
    with spawn.running_server(tmp_path_factory.mktemp("interop-server")) as srv:
        yield srv


def tls_context(srv: spawn.SpawnedServer) -> ssl.SSLContext:
    """A client context that trusts only the spawned server's CA (verification on)."""
    return ssl.create_default_context(cafile=str(srv.ca_file))


def enhanced(resp: bytes | str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text, if any."""
    m = _ENHANCED.match(resp.encode() if isinstance(resp, str) else resp)
    return m.group(1).decode() if m else None


class QueueWatch:
    """Remembers the queue ids present at creation; `new()` lists what arrived since."""

    def __init__(self, srv: spawn.SpawnedServer) -> None:
        self.srv = srv
        self.before = set(srv.queued())

    def new(self) -> dict[str, list[str]]:
        return {qid: rcpts for qid, rcpts in self.srv.queued().items() if qid not in self.before}

    def only_new(self) -> tuple[str, list[str]]:
        """The one message that arrived since creation (fails if there is not exactly one)."""
        new = self.new()
        assert len(new) == 1, new
        return next(iter(new.items()))


@pytest.fixture
def watch(server: spawn.SpawnedServer) -> QueueWatch:
    return QueueWatch(server)


def submission(
    srv: spawn.SpawnedServer,
    port_name: str = "submission",
    *,
    source: str | None = None,
    login: bool = True,
) -> smtplib.SMTP:
    """An smtplib session on a submission port, TLS up (STARTTLS or implicit), optionally logged in."""
    src = (source, 0) if source else None
    ctx = tls_context(srv)
    smtp: smtplib.SMTP
    if port_name == "submissions":
        smtp = smtplib.SMTP_SSL(
            HOST,
            srv.ports[port_name],
            local_hostname="client.test",
            context=ctx,
            source_address=src,
            timeout=30,
        )
        smtp.ehlo()
    else:
        smtp = smtplib.SMTP(
            HOST, srv.ports[port_name], local_hostname="client.test", source_address=src, timeout=30
        )
        smtp.ehlo()
        code, resp = smtp.starttls(context=ctx)
        assert code == 220, resp
        smtp.ehlo()
    if login:
        smtp.user, smtp.password = USER, PASSWORD
        code, resp = smtp.auth("PLAIN", smtp.auth_plain)
        assert code == 235, resp
    return smtp


def unfolded_headers(message: bytes) -> list[str]:
    """The header fields of a stored message, unfolded (RFC 5322 2.2.3), as text."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return re.sub(r"\r\n[ \t]+", " ", head).split("\r\n")


def tool_path(tool: str) -> str:
    """Where a peer program lives; CI installs every peer, so a missing one is a failure."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{tool} is not installed (the interop suite needs it)")
    return path
