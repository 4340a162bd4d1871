"""A private Postfix instance with its own configuration and queue: accept-and-hold, or relay.

The instance lives entirely under one temporary directory: `etc/` (main.cf, master.cf), `queue/`
(queue_directory), `data/` (data_directory) and `maillog`.  Its smtpd listens on 127.0.0.1 only, on
a port chosen by the caller; every message is accepted into the real queue (cleanup fsyncs the
queue file before smtpd answers 250).  By default each message is then held, so nothing is ever
delivered; with `relay_to=PORT` nothing is held and every message is relayed, with Postfix's
default delivery settings, to `[127.0.0.1]:PORT` (the end-to-end benchmark's smtp-sink).
`settings` are further main.cf parameters, applied last, so they may override any of the above
(the interop tests use them for TLS toward the relay, time-outs and back-off); files they name,
such as a CA file or a lookup table, may live in `root`, which exists from construction on.
`services` are further master.cf lines, such as a second smtpd on another port with its own `-o`
settings (the header differential's submission service).

Invariants: `start` raises `PostfixUnavailable` with the reason when an instance cannot run here
(not root, Postfix missing, `postfix start` failing); `stop` always stops the master and removes
the directory.  Every command has a timeout.

Not responsible for: installing Postfix (bench/run does), or the system's own Postfix instance,
which it never touches.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"

# Only the services an accept-and-hold instance needs, and tlsmgr, which the smtp client's TLS
# needs (without it Postfix's TLS engine stays off: "our TLS engine is unavailable") and which the
# master starts only when TLS is used; chroot off so no copies of /etc are needed.
_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixUnavailable(RuntimeError):
    """A private Postfix instance cannot run on this machine; the message says why."""


def _run(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def version() -> str:
    if not Path(POSTCONF).exists():
        return "not installed"
    res = _run([POSTCONF, "-d", "-h", "mail_version"], timeout=20)
    return res.stdout.strip() or "unknown"


class PostfixInstance:
    """One private Postfix instance on `127.0.0.1:port`: accept-and-hold, or relay to `relay_to`."""

    def __init__(
        self,
        port: int,
        domain: str,
        relay_to: int | None = None,
        settings: Mapping[str, str] | None = None,
        services: str = "",
    ) -> None:
        self.port = port
        self.services = services
        self.domain = domain
        self.relay_to = relay_to
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="mailwright-bench-postfix-"))
        os.chmod(self.root, 0o755)  # the postfix user must reach queue/ below it
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "queue"
        self.started = False

    def start(self, wait: float = 30.0) -> None:
        if os.geteuid() != 0:
            raise PostfixUnavailable("a private Postfix instance must be started as root")
        for tool in (POSTFIX, POSTCONF, POSTQUEUE):
            if not Path(tool).exists():
                raise PostfixUnavailable(f"{tool} is missing (install the Debian package postfix)")
        self.config_dir.mkdir()
        self.queue_dir.mkdir()  # postfix-script creates the subdirectories, not this one
        (self.root / "data").mkdir()
        shutil.chown(self.root / "data", "postfix", "postfix")  # the master's lock file lives there
        (self.config_dir / "master.cf").write_text(_MASTER_CF.format(port=self.port) + self.services)
        (self.config_dir / "main.cf").write_text("")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.root / "data"),
            "maillog_file": str(self.root / "maillog"),
            "maillog_file_prefixes": str(self.root),  # the default allows only /var and /dev/stdout
            "myhostname": "postfix.bench.test",
            "mydomain": "bench.test",
            "myorigin": "$myhostname",
            "mydestination": self.domain,
            "relay_domains": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            # HOLD is not final: evaluation goes on, the whole message lands in the hold queue.
            "smtpd_recipient_restrictions": "check_client_access static:HOLD, permit_mynetworks, reject",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "message_size_limit": str(64 * 1024 * 1024),
            "master_service_disable": "",
            "import_environment": "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C",
        }
        if self.relay_to is not None:
            settings.update(
                {
                    "mydestination": "",  # the benchmark's domain is remote: relayed, not delivered here
                    "relayhost": f"[127.0.0.1]:{self.relay_to}",
                    "smtp_tls_security_level": "none",
                    "smtpd_recipient_restrictions": "permit_mynetworks, reject",
                }
            )
        settings.update(self.settings)
        res = _run([POSTCONF, "-c", str(self.config_dir), "-e", *(f"{k}={v}" for k, v in settings.items())])
        if res.returncode != 0:
            raise PostfixUnavailable(f"postconf -e failed: {res.stderr.strip()}")
        res = _run([POSTFIX, "-c", str(self.config_dir), "start"], timeout=60)
        if res.returncode != 0:
            said = (res.stderr + res.stdout + self.log_tail(800)).strip()
            raise PostfixUnavailable(f"postfix -c {self.config_dir} start failed: {said[-800:]}")
        self.started = True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    return
            time.sleep(0.1)
        raise PostfixUnavailable(f"the private Postfix smtpd did not answer on 127.0.0.1:{self.port}")

    def master_pid(self) -> int | None:
        pid_file = self.queue_dir / "pid" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().strip())
        return None

    def queue_counts(self) -> dict[str, int]:
        """Messages per queue name (hold, incoming, active, deferred), from `postqueue -j`."""
        res = _run([POSTQUEUE, "-c", str(self.config_dir), "-j"], timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"postqueue -j failed: {res.stderr.strip()}")
        counts: dict[str, int] = {}
        for line in res.stdout.splitlines():
            if line.strip():
                name = str(json.loads(line).get("queue_name", "?"))
                counts[name] = counts.get(name, 0) + 1
        return counts

    def queued_files(self) -> int:
        """Messages anywhere in the queue (maildrop, incoming, active, deferred, hold), counted
        from the queue directory itself: cheap enough to poll, unlike `postqueue`."""
        count = 0
        for name in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(self.queue_dir / name):
                count += len(files)
        return count

    def delivered(self) -> dict[str, int]:
        """Delivery outcomes in the log: how many `status=sent`, `status=deferred`, ..."""
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.root / "maillog").read_text(errors="replace").splitlines():
                if " status=" in line:
                    status = line.split(" status=", 1)[1].split(" ", 1)[0]
                    counts[status] = counts.get(status, 0) + 1
        return counts

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "maillog").read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        try:
            if self.started:
                res = _run([POSTFIX, "-c", str(self.config_dir), "stop"], timeout=60)
                pid = self.master_pid()
                if res.returncode != 0 and pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 15)
                # The master exits only after its children; wait so the directory can go.
                deadline = time.monotonic() + 20
                while pid is not None and time.monotonic() < deadline:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.1)
                self.started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
