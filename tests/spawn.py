"""Spawn a real `mailwright serve` process for interop and end-to-end tests.

The server gets its own state directory, a trustme CA-signed certificate for "mx.test",
free loopback ports for each listener role, and one user (alice@mx.test, with a CRAM-MD5
secret).  Tests talk to it over real sockets with real TLS.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from mailwright.queue.model import queue_id_text

USER = "alice@mx.test"
PASSWORD = "correct horse battery staple"
LOCAL_DOMAIN = "mx.test"
RELAY_DOMAIN = "relay.test"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all held open at once, or the kernel may hand out one twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass(frozen=True)
class QueuedEnvelope:
    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    auth_user: str | None  # the user a submission session authenticated as
    mail_params: str = ""  # the MAIL FROM parameters as stored, to be passed on


@dataclass
class SpawnedServer:
    root: Path
    ca_file: Path
    ports: dict[str, int]
    config: Path
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    python: str = sys.executable  # the interpreter that runs the server and the CLI
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "server.log"

    @property
    def queue_db(self) -> Path:
        return self.root / "state" / "queue" / "queue.db"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, "-m", "mailwright.cli.main", "--config", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(
        self, wait: float = 20.0, *, own_group: bool = False, nofile: tuple[int, int] | None = None
    ) -> None:
        """Start and wait until it says it is ready: the master binds before it forks, so the
        ports listen before every worker runs. `own_group`: in a process group of its own (its
        pid is the group's id), so a test can ^C it as a terminal would, with os.killpg.
        `nofile`: the server's (soft, hard) RLIMIT_NOFILE, set in the child only."""

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        env = dict(os.environ, MAILWRIGHT_LOG="INFO")
        mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "mailwright.cli.main", "--config", str(self.config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0 if own_group else None,
                preexec_fn=limit_files if nofile is not None else None,
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            if all(_listening(p) for p in self.ports.values()) and self._said_ready(mark):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def _said_ready(self, mark: int) -> bool:
        with self.log.open("rb") as f:
            f.seek(mark)
            return b"mailwright ready" in f.read()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def queued(self) -> dict[str, list[str]]:
        """Queue id → recipients, read straight from the queue database."""
        return {qid: list(env.recipients) for qid, env in self.envelopes().items()}

    def envelopes(self) -> dict[str, QueuedEnvelope]:
        """Queue id → the envelope as stored, read straight from the queue database."""
        if not self.queue_db.exists():
            return {}
        db = sqlite3.connect(self.queue_db, timeout=10)
        try:
            out: dict[str, QueuedEnvelope] = {}
            rows = db.execute(
                "SELECT m.id, m.sender, m.auth_user, m.mail_params, r.address FROM messages m"
                " JOIN recipients r ON r.message_id = m.id ORDER BY m.id, r.idx"
            )
            for mid, sender, auth_user, params, rcpt in rows:
                qid = queue_id_text(mid)
                env = out.get(qid) or QueuedEnvelope(sender, (), auth_user, params)
                out[qid] = QueuedEnvelope(sender, (*env.recipients, rcpt), auth_user, params)
            return out
        finally:
            db.close()

    def body(self, queue_id: str) -> bytes:
        res = subprocess.run(
            [
                self.python,
                "-m",
                "mailwright.cli.main",
                "--config",
                str(self.config),
                "queue",
                "show",
                "--body",
                queue_id,
            ],
            capture_output=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout


def _listening(port: int) -> bool:
    """Whether a socket listens on `port` (IPv4 or IPv6), read from /proc/net/tcp and tcp6 rather
    than by connecting: a probe connection holds a place under the server's connection cap until
    its worker has seen it close, and a test that opens exactly as many connections as the cap
    allows right after start would find one place fewer (tests/e2e/test_open_files.py, 70 greeted
    of 71, once)."""
    local = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):  # no tcp6 on a kernel without IPv6
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[1].endswith(local) and fields[3] == "0A":  # 0A: LISTEN
                    return True
    return False


# The role of each listener make_server writes, by its name in `SpawnedServer.ports`.
_ROLES = {"mx": "mx", "submission": "submission", "submissions": "submissions", "alt": "submission"}

# Small, so a test sees the lock-out soon and it ends soon.
_DEFAULT_AUTH_LIMITS = "max_failures = 3\nlockout = 5.0"

# Tests name the process model rather than take the machine's core count: 2 is the multi-process
# server (a master owning the queue, two SMTP workers), 1 the single process.
DEFAULT_WORKERS = 2


def make_server(
    root: Path,
    *,
    extra: str = "",
    limits: str = "",
    queue_dir: Path | None = None,
    workers: int = DEFAULT_WORKERS,
    python: str = sys.executable,
    addresses: tuple[str, ...] = ("127.0.0.1",),
    auth: str = "",
    hostname: str = LOCAL_DOMAIN,
    local_domains: tuple[str, ...] = (LOCAL_DOMAIN,),
    relay_domains: tuple[str, ...] = (RELAY_DOMAIN,),
) -> SpawnedServer:
    """Write config, certificate and user for a server under `root` (not started). Each listener
    role is bound on every one of `addresses`, on the same port (e.g. ("::", "0.0.0.0")).
    `auth`: the [auth] table's failure limits in place of the default (3 failures lock out for
    5 s). `hostname`, `local_domains`, `relay_domains`: as in the configuration file (the
    certificate names LOCAL_DOMAIN whatever the hostname)."""
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(LOCAL_DOMAIN, "localhost", "127.0.0.1", "::1")
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file, key_file = root / "cert.pem", root / "key.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    ports = dict(zip(("mx", "submission", "submissions", "alt"), free_ports(4), strict=True))
    # A small reserve: tests fill small tmpfs file systems on purpose.
    queue_line = f'\n[queue]\ndirectory = "{queue_dir}"\nmin_free = 1048576\n' if queue_dir else ""
    listeners = "".join(
        f'[[listeners]]\nrole = "{_ROLES[name]}"\naddress = "{address}"\nport = {port}\n\n'
        for name, port in ports.items()
        for address in addresses
    )
    config = root / "mailwright.toml"
    config.write_text(
        f"""
hostname = "{hostname}"
state_dir = "{root / "state"}"
local_domains = {json.dumps(list(local_domains), ensure_ascii=False)}
relay_domains = {json.dumps(list(relay_domains), ensure_ascii=False)}
workers = {workers}
{extra}
{listeners}
[tls]
cert = "{cert_file}"
key = "{key_file}"

[auth]
mechanisms = ["PLAIN", "LOGIN", "CRAM-MD5"]
{auth or _DEFAULT_AUTH_LIMITS}

[limits]
max_connections = 15000
max_connections_per_ip = 15000
{limits}
{queue_line}"""
    )
    server = SpawnedServer(root, ca_file, ports, config, workers, python=python)
    res = server.cli("user", "add", USER, "--cram-md5", "--password-stdin", stdin=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    return server


@contextlib.contextmanager
def running_server(root: Path, **kwargs: object) -> Iterator[SpawnedServer]:
    server = make_server(root, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_log(
    srv: SpawnedServer, text: str, *, since: int = 0, timeout: float = 10.0, count: int = 1
) -> str:
    """Poll the server log (from byte offset `since`) until `text` appears on `count` lines (e.g.
    once per worker process); return the last of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with srv.log.open("rb") as f:
            f.seek(since)
            new = f.read().decode("utf-8", "replace")
        found = [line for line in new.splitlines() if text in line]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in server log:\n{srv.log.read_text(errors='replace')[-3000:]}")
