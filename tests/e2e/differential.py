"""What the differential tests share: a raw SMTP reply reader, the reply class, the mailwright server
each module runs, the private Postfix smtpd they compare it with, the private Dovecot auth service
behind it for the two that authenticate, and the DELIBERATE rule.

The five modules (test_envelope_, test_auth_, test_data_, test_command_ and test_relay_differential.py)
each send a table of cases to a real `mailwright serve` and hold every reply to the code the RFCs ask
for; as root they send the same table to a reference and require the same reply class (2xx/3xx/4xx/5xx)
except for the cases on their own `DELIBERATE` list, which must be exact: a difference not on it
fails, and so does a case on it that no longer differs, so the list never hides a change.

Here is only what is the same in all of them. What differs stays in the module, explicit: how many
replies a case reads and how it is judged, the envelope and data limits (`max_message_size`, the
`mailwright_server` and `private_postfix` arguments), the command module's record of reply lines
over RFC 5321's 512 octets and its STARTTLS (a `Wire` subclass), the data module's stored messages
read back on both sides (and its `Wire` that takes a peer silent once as silent from then on), and
the AUTH module's TLS client and per-case client addresses, the relay module's users, owned senders
and Postfix restrictions.

Replies are read whole to a deadline: a peer that says nothing is a reply "hung", one that closes a
reply "closed": reading a reply never raises, so a case always ends in a list of replies. The enhanced
status code (RFC 3463) is taken from the first line where it stands there (RFC 2034 3: not on the
greeting nor on a reply to HELO/EHLO).

Not responsible for: what either server should answer (the modules' tables), starting Postfix
(bench/postfix_instance.py) or mailwright (tests/spawn.py) themselves.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme

import spawn

if TYPE_CHECKING:
    from bench.postfix_instance import PostfixInstance

TIMEOUT = 5.0  # seconds for a whole reply
ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)")


@dataclass(frozen=True)
class Got:
    """One reply as received: code ("closed" or "hung" where none came), enhanced code, and the
    text of each line (of the first, what follows the enhanced code)."""

    code: str
    enhanced: str | None = None
    lines: tuple[str, ...] = ()

    @property
    def first(self) -> str:
        """The first line's text."""
        return self.lines[0] if self.lines else ""

    @property
    def text(self) -> str:
        """All lines' text, joined by " / "."""
        return " / ".join(self.lines)

    def shape(self) -> str:
        """As the tables write a reply: "code enhanced", "code" or "closed"."""
        return f"{self.code} {self.enhanced}" if self.enhanced else self.code

    def __str__(self) -> str:
        return " ".join(x for x in (self.code, self.enhanced or "", self.text) if x)


def reply_class(code: str) -> str:
    """A reply code's class: "2xx" for "250"; "closed" and "hung" stay what they are."""
    return code[0] + "xx" if code[:1] in ("2", "3", "4", "5") else code


class Wire:
    """A line client over a socket, plain or TLS, that reads whole (multi-line) replies."""

    def __init__(self, sock: socket.socket, timeout: float = TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: bytes) -> Got:
        """`line` with CRLF, then its reply."""
        self.send(line + b"\r\n")
        return self.reply()

    def seen(self, line: bytes) -> None:
        """Each reply line as read, without its CRLF; a subclass may keep some."""

    def _line(self, deadline: float) -> bytes | None:
        """The next line; None when none came by `deadline`, b"" when the peer closed."""
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except (ConnectionError, ssl.SSLError):
                chunk = b""
            if not chunk:
                return b""
            self.buf += chunk
        out, self.buf = self.buf.split(b"\r\n", 1)
        self.seen(out)
        return out

    def reply(self) -> Got:
        deadline = time.monotonic() + self.timeout
        texts: list[str] = []
        while True:
            raw = self._line(deadline)
            if raw is None:
                return Got("hung", None, tuple(texts))
            if raw == b"":
                return Got("closed", None, tuple(texts))
            line = raw.decode("utf-8", "replace")
            texts.append(line[4:])
            if line[3:4] != "-":
                break
        m = ENHANCED.match(texts[0])
        if m is not None:
            texts[0] = texts[0][m.end() :]
        return Got(line[:3], m.group(1) if m else None, tuple(texts))


def mailwright_server(name: str, **kwargs: object) -> Callable[..., Iterator[spawn.SpawnedServer]]:
    """A module fixture: a one-worker `mailwright serve` under a temporary directory `name`, with the
    given tests/spawn.py settings (limits=, auth=)."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spawn.SpawnedServer]:
        with spawn.running_server(tmp_path_factory.mktemp(name), workers=1, **kwargs) as srv:
            yield srv

    return server


# As mailwright's mx listener: mail for spawn.LOCAL_DOMAIN is taken (and held in the queue, never
# delivered), no relaying from loopback either, SMTPUTF8 on, no DNS, no sleep before an error reply.
HOLDING: dict[str, str] = {
    "smtpd_peername_lookup": "no",
    "smtpd_relay_restrictions": "reject_unauth_destination",
    "smtpd_recipient_restrictions": "check_client_access static:HOLD, permit",
    "smtputf8_enable": "yes",
    "smtpd_error_sleep_time": "0",
}


@contextlib.contextmanager
def private_postfix(
    settings: Mapping[str, str] | None = None, *, tls: bool = False, services: str = ""
) -> Iterator[PostfixInstance]:
    """A private Postfix smtpd (bench/postfix_instance.py) set up as `HOLDING`, then `settings`;
    with `tls`, STARTTLS offered with a trustme certificate; `services`, further master.cf lines.
    Skips without root or Postfix; fails when Postfix is there but does not start."""
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (CI runs as root)")
    from bench.postfix_instance import POSTFIX, PostfixInstance, PostfixUnavailable

    if not Path(POSTFIX).exists():
        pytest.skip("Postfix is not installed")
    pf = PostfixInstance(
        spawn.free_ports(1)[0],
        spawn.LOCAL_DOMAIN,
        settings={**HOLDING, **(settings or {})},
        services=services,
    )
    try:
        if tls:
            cert = trustme.CA().issue_cert("postfix.bench.test")
            cert.private_key_pem.write_to_path(str(pf.root / "key.pem"))
            cert.cert_chain_pems[0].write_to_path(str(pf.root / "cert.pem"))
            pf.settings.update(
                {
                    "smtpd_tls_security_level": "may",
                    "smtpd_tls_cert_file": str(pf.root / "cert.pem"),
                    "smtpd_tls_key_file": str(pf.root / "key.pem"),
                }
            )
        try:
            pf.start()
        except PostfixUnavailable as exc:
            pytest.fail(f"the private Postfix instance did not start: {exc}")
        yield pf
    finally:
        pf.stop()


DOVECOT = "/usr/sbin/dovecot"

_DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
protocols = none
listen = 127.0.0.1
log_path = {root}/dovecot.log
auth_mechanisms = plain login cram-md5
disable_plaintext_auth = no
# Dovecot waits 2 s before each failure by default; the tables have many.
auth_failure_delay = 0
ssl = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {root}/sock/auth {{
    mode = 0666
  }}
}}
# Nor a growing penalty per client address (Dovecot's documented way to turn it off).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


@contextlib.contextmanager
def private_dovecot(passwords: Mapping[str, str]) -> Iterator[Path]:
    """A private Dovecot auth service knowing `passwords` (user -> password), for a private
    Postfix's `smtpd_sasl_type = dovecot`: yields the path for `smtpd_sasl_path`. Skips without
    root, without Dovecot, or when it does not start (the reason in the message)."""
    if os.geteuid() != 0:
        pytest.skip("a private Dovecot needs root (CI runs as root)")
    if not Path(DOVECOT).exists():
        pytest.skip(f"{DOVECOT} is missing (install the Debian package dovecot-core)")
    root = Path(tempfile.mkdtemp(prefix="mailwright-dovecot-"))
    conf = root / "dovecot.conf"
    try:
        os.chmod(root, 0o755)
        for sub in ("run", "state", "sock"):
            (root / sub).mkdir(mode=0o755)
        (root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in passwords.items()))
        conf.write_text(_DOVECOT_CONF.format(root=root))
        # Output to a file, not a pipe: the daemon's children keep it open, and reading would not end.
        with (root / "start.log").open("w+") as out:
            res = subprocess.run([DOVECOT, "-c", str(conf)], stdout=out, stderr=out, timeout=30, check=False)
            out.seek(0)
            said = out.read()
        if res.returncode != 0:
            pytest.skip(f"dovecot did not start: {said.strip()[-300:]}")
        socket_path = root / "sock" / "auth"
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield socket_path
    finally:
        subprocess.run([DOVECOT, "-c", str(conf), "stop"], capture_output=True, timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)


def assert_table_ids(ids: Sequence[str], deliberate: Mapping[str, str], at_least: int) -> None:
    """A table's case ids are distinct, at least `at_least` of them, and DELIBERATE names only those."""
    assert len(ids) == len(set(ids)), sorted(i for i in set(ids) if ids.count(i) > 1)
    assert len(ids) >= at_least, f"{len(ids)} cases, fewer than {at_least}"
    assert set(deliberate) <= set(ids), set(deliberate) - set(ids)


@dataclass
class Disagreements:
    """The cases where the reference's replies are of another class than mailwright's, held against
    a module's DELIBERATE list: `check` fails on a difference not on it and on a listed case that
    no longer differs."""

    deliberate: Mapping[str, str]
    unexpected: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def note(self, case_id: str, differs: bool, row: str) -> None:
        if differs and case_id not in self.deliberate:
            self.unexpected.append(row)
        elif not differs and case_id in self.deliberate:
            self.stale.append(row)

    def check(self) -> None:
        assert not self.unexpected, "replies of another class than Postfix's:\n" + "\n".join(self.unexpected)
        assert not self.stale, "no longer differ from Postfix (take them off DELIBERATE):\n" + "\n".join(
            self.stale
        )
