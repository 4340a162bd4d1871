"""`mailwright user add|del|passwd|list` run while a real server answers AUTH, in both process models.

What an operator coming from Postfix+Dovecot or Mailpit expects, checked with real peers (smtplib
clients doing STARTTLS, AUTH PLAIN/LOGIN/CRAM-MD5 and a message, over and over, from 127.0.0.1)
while the `user` command changes the database under them:
- a user added while the server runs logs in on the next attempt, on every worker (the log names
  the process that answered each probe), and its mail is queued: nothing is cached;
- a deleted user, and the old password after `user passwd`, get 535 5.7.8 on the next attempt on
  every worker, CRAM-MD5 included, and the new password works at once;
- a session that authenticated before `user del` or `user passwd` loses its authentication at its
  next MAIL: 421 4.7.0 naming why, and the connection is closed (Postfix and Dovecot would let it
  go on, so a stolen password outlived the operator's change in any session kept busy); a session
  authenticated after the change goes on, and so does one whose password is still valid in a
  users.db put in place of the old one (the same password hashed afresh);
- 50 CLI runs (add and del of throw-away users, two loops side by side) during the load: every
  one exits 0 with no traceback and no "locked", the load only ever sees 235 and 250, the log
  nothing above INFO, and the AUTH round trip is measured with and without the CLI (printed: -s);
- bad input to the CLI (a database path that is a directory, an unwritable parent or database, a
  duplicate add, deleting or changing a missing user, a file that is no user database): one line
  on standard error, the documented exit code (user_cmd: 1 refused, 2 usage), never a traceback,
  and the running server goes on answering 235; the queue's database or another program's, named
  by mistake, is refused as what it is and left unchanged;
- a users.db put in place of the server's (renamed over it, or removed and made again with
  `user add`) is read by every worker from the next attempt on.

Probes come from a source address of their own each (127.1.x.y): a deliberate failure then never
adds to another's failure count (auth.max_failures = 3, 5 s lock-out in spawn's configuration) and
waits only the first failure's delay (0.25 s); the log line "AUTH <mech> ok for <user> from <ip>" or
"AUTH <mech> failed from <ip>" then tells which worker answered.

Not covered here: the store's own rules (tests/users/), the lock-out itself (tests/interop,
tests/e2e/test_workers.py).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import smtplib
import sqlite3
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import spawn

from .conftest import QUEUED, ServerFactory, log_size

RCPT = "bob@mx.test"
MECHS = {"PLAIN": "auth_plain", "LOGIN": "auth_login", "CRAM-MD5": "auth_cram_md5"}
LOG_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) |Traceback|database is locked", re.M)
# Each probe's own client address: 127.1.0.1, 127.1.0.2, ... (the whole of 127/8 is loopback).
_SOURCES = (f"127.1.{n // 250}.{n % 250 + 1}" for n in itertools.count())
_SOURCES_LOCK = threading.Lock()


def next_source() -> str:
    with _SOURCES_LOCK:
        return next(_SOURCES)


def tls_context(srv: spawn.SpawnedServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(srv.ca_file))


def message(sender: str, marker: str) -> bytes:
    return f"From: {sender}\r\nTo: {RCPT}\r\nSubject: {marker}\r\n\r\n{marker}\r\n".encode()


def authenticate(smtp: smtplib.SMTP, user: str, password: str, mech: str) -> tuple[int, str]:
    """One AUTH exchange; the reply code and text whatever it is (smtplib raises on 535)."""
    smtp.user, smtp.password = user, password
    text: bytes | str
    try:
        code, text = smtp.auth(mech, getattr(smtp, MECHS[mech]), initial_response_ok=True)
    except smtplib.SMTPAuthenticationError as exc:
        code, text = exc.smtp_code, exc.smtp_error
    return code, text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def connect(srv: spawn.SpawnedServer, source: str, port: str = "submission") -> smtplib.SMTP:
    """A session on a submission port with TLS up (STARTTLS, certificate verified)."""
    smtp = smtplib.SMTP(
        "127.0.0.1", srv.ports[port], local_hostname="client.test", source_address=(source, 0), timeout=20
    )
    smtp.starttls(context=tls_context(srv))
    smtp.ehlo()
    return smtp


def send(smtp: smtplib.SMTP, sender: str) -> tuple[int, str]:
    """MAIL, RCPT, DATA; the first refusal's code and text, or 250 and the queue id."""
    code, text = smtp.mail(sender)
    if code == 250:
        code, text = smtp.rcpt(RCPT)
    if code == 250:
        code, text = smtp.data(message(sender, f"M-{uuid.uuid4().hex}"))
    out = text.decode("utf-8", "replace")
    match = QUEUED.search(out)
    return (code, match.group(1) if code == 250 and match else out)


def cli(srv: spawn.SpawnedServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`mailwright user ...` for this server; never a traceback or a lock failure, whatever it says."""
    res = srv.cli("user", *args, stdin=stdin)
    both = res.stdout + res.stderr
    assert "Traceback" not in both and "locked" not in both.lower(), f"user {' '.join(args)}:\n{both}"
    return res


def cli_ok(srv: spawn.SpawnedServer, *args: str, stdin: str | None = None) -> None:
    res = cli(srv, *args, stdin=stdin)
    assert res.returncode == 0, f"user {' '.join(args)} exited {res.returncode}:\n{res.stderr}"


def log_since(srv: spawn.SpawnedServer, mark: int) -> str:
    with srv.log.open("rb") as f:
        f.seek(mark)
        return f.read().decode("utf-8", "replace")


def log_problems(srv: spawn.SpawnedServer, mark: int) -> list[str]:
    text = log_since(srv, mark)
    return [line for line in text.splitlines() if LOG_PROBLEM.search(line)]


# -- probes: one session each, from an address of its own ------------------------------------------


@dataclass
class Probe:
    mech: str
    source: str
    code: int
    text: str
    pid: int  # the process that answered the AUTH, from its log line
    queued: str | None = None  # the queue id of the message sent after a 235


def answered_by(srv: spawn.SpawnedServer, source: str, mark: int, timeout: float = 10.0) -> int:
    """The pid of the process whose log line answered `source`'s AUTH (written before the reply is
    sent); the single process's log lines carry no pid: then it is the server's own."""
    line = re.compile(rf"(?:\[(\d+)\])?: AUTH \S+ (?:ok for \S+|failed) from {re.escape(source)}$", re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = line.search(log_since(srv, mark))
        if found:
            assert srv.proc is not None
            return int(found.group(1)) if found.group(1) else srv.proc.pid
        time.sleep(0.02)
    raise AssertionError(f"no AUTH line for {source} in the log:\n{log_since(srv, mark)[-3000:]}")


def probe(srv: spawn.SpawnedServer, user: str, password: str, mech: str) -> Probe:
    """Connect, STARTTLS, AUTH; after a 235 send one message as `user`."""
    source, mark = next_source(), log_size(srv)
    with connect(srv, source) as smtp:
        code, text = authenticate(smtp, user, password, mech)
        queued = None
        if code == 235:
            sent, queued = send(smtp, user)
            assert sent == 250, f"{user} authenticated with {mech} but its message got {sent} {queued}"
    return Probe(mech, source, code, text, answered_by(srv, source, mark), queued)


def on_every_worker(
    srv: spawn.SpawnedServer, user: str, password: str, expect: int, *, most: int = 24
) -> list[Probe]:
    """Probe with PLAIN, LOGIN and CRAM-MD5 in turn until every mechanism and every worker has
    answered; every single answer (the first on each worker included) must be `expect`."""
    mechs = itertools.cycle(MECHS)
    probes: list[Probe] = []
    workers = expected_pids(srv)
    for _ in range(most):
        got = probe(srv, user, password, next(mechs))
        probes.append(got)
        assert got.code == expect, (
            f"{got.mech} for {user} from {got.source} answered {got.code} {got.text!r} by pid {got.pid},"
            f" expected {expect}; before it: {[(p.mech, p.code, p.pid) for p in probes[:-1]]}"
        )
        if got.code == 535:
            assert got.text.startswith("5.7.8"), got.text
        if {p.pid for p in probes} == workers and len(probes) >= len(MECHS):
            return probes
    raise AssertionError(
        f"workers {workers}: only {sorted({p.pid for p in probes})} answered in {most} probes"
    )


def expected_pids(srv: spawn.SpawnedServer) -> set[int]:
    assert srv.proc is not None
    master = srv.proc.pid
    if srv.workers == 1:
        return {master}
    return {int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def revoked(srv: spawn.SpawnedServer, smtp: smtplib.SMTP, user: str, change: str) -> None:
    """The session authenticated as `user` before `change`: its next MAIL ends it with 421 4.7.0."""
    mark = srv.log.stat().st_size
    with smtp:
        code, text = smtp.mail(user)
        print(f"session authenticated before `{change}`: its next MAIL got {code} {text.decode()}")
        assert (code, text.decode()) == (
            421,
            "4.7.0 Credentials revoked (user removed or password changed), closing connection",
        )
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
    spawn.wait_for_log(srv, f"session of {user} from ", since=mark)


def session_as(srv: spawn.SpawnedServer, user: str, password: str, mech: str = "PLAIN") -> smtplib.SMTP:
    """An authenticated session, kept open by the caller."""
    smtp = connect(srv, next_source())
    code, text = authenticate(smtp, user, password, mech)
    assert code == 235, (code, text)
    return smtp


# -- the load: clients that authenticate as spawn.USER and send, over and over ---------------------


@dataclass
class AuthLoad:
    """`clients` threads, each: connect, STARTTLS, AUTH (PLAIN, LOGIN, CRAM-MD5 in turn), one
    message, QUIT; at most `rounds` times each. Every AUTH must be 235 and every message 250."""

    srv: spawn.SpawnedServer
    clients: int = 2
    rounds: int = 400
    pause: float = 0.05  # between a client's sessions: a steady load that leaves the CLI some CPU
    samples: list[tuple[float, str, float]] = field(default_factory=list)  # (start, mech, AUTH seconds)
    problems: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            self.threads.append(thread)
            thread.start()
        while not self.samples and not self.problems:  # the load runs before the test goes on
            time.sleep(0.02)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive(), "a load client hung"

    def _client(self, n: int) -> None:
        mechs = itertools.islice(itertools.cycle(MECHS), n, None)
        port = ("submission", "alt")[n % 2]
        for _ in range(self.rounds):
            if self.stop_event.is_set():
                return
            mech = next(mechs)
            self.stop_event.wait(self.pause)
            try:
                with connect(self.srv, "127.0.0.1", port) as smtp:
                    began = time.monotonic()
                    code, text = authenticate(smtp, spawn.USER, spawn.PASSWORD, mech)
                    took = time.monotonic() - began
                    if code != 235:
                        self._problem(f"load AUTH {mech}: {code} {text}")
                        continue
                    sent, what = send(smtp, spawn.USER)
                    if sent != 250:
                        self._problem(f"load message after AUTH {mech}: {sent} {what}")
                with self.lock:
                    self.samples.append((began, mech, took))
            except (OSError, smtplib.SMTPException) as exc:
                self._problem(f"load client {n}: {exc!r}")

    def _problem(self, what: str) -> None:
        with self.lock:
            self.problems.append(what)

    def between(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [took for began, _, took in self.samples if start <= began < end]


def figures(times: list[float]) -> str:
    if len(times) < 2:
        return f"n={len(times)}"
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    p50, p99, most = cuts[49] * 1000, cuts[98] * 1000, max(times) * 1000
    return f"n={len(times)} p50={p50:.0f} ms p99={p99:.0f} ms max={most:.0f} ms"


# Checks 1 and 2 run in both process models. The CLI loop (3) and the bad input (4) cost ~10-20 s
# each on a 2-core machine, mostly the CLI's own start-up: the loop runs against two workers (the
# model where a change must reach every process), the bad input against the single process (it
# tests the CLI beside a running server, not the server's process model).
_MODELS = {1: pytest.param(1, id="one-process"), 2: pytest.param(2, id="two-workers")}


def models(*chosen: int) -> list[object]:
    return [_MODELS[n] for n in chosen]


@pytest.fixture
def loaded(make_server: ServerFactory, workers: int) -> Iterator[tuple[spawn.SpawnedServer, AuthLoad, int]]:
    """A started server under AUTH load; afterwards the load saw only 235/250, the log nothing
    above INFO, and the server stops with exit 0."""
    srv = make_server(f"live{workers}", workers=workers)
    mark = log_size(srv)
    load = AuthLoad(srv)
    load.start()
    try:
        yield srv, load, mark
    finally:
        load.stop()
    assert load.problems == [], load.problems[:10]
    assert log_problems(srv, 0) == [], log_problems(srv, 0)[:10]
    assert srv.stop() == 0
    assert "mailwright stopped" in log_since(srv, mark)


# -- 1 and 2: add, passwd, del take effect at once, on every worker --------------------------------


@pytest.mark.parametrize("workers", models(1, 2))
def test_add_passwd_del_take_effect_at_once_on_every_worker(
    loaded: tuple[spawn.SpawnedServer, AuthLoad, int],
) -> None:
    srv, load, _ = loaded
    user, first, second = "carol@mx.test", "first pass phrase", "second pass phrase"

    # Every worker has answered "no such user" (whatever it could have cached) ...
    on_every_worker(srv, user, first, 535)
    cli_ok(srv, "add", user, "--cram-md5", "--password-stdin", stdin=first + "\n")
    # ... and the very next attempt on each of them succeeds, with each mechanism, and mail flows.
    added = on_every_worker(srv, user, first, 235)
    queued = srv.queued()
    for p in added:
        assert p.queued in queued, f"{p.queued} got 250 after {p.mech} by pid {p.pid} but is not queued"

    # A session authenticated with the old password, still open when the password changes.
    before_passwd = session_as(srv, user, first)
    cli_ok(srv, "passwd", user, "--password-stdin", stdin=second + "\n")
    on_every_worker(srv, user, first, 535)  # the old password: refused at once, CRAM-MD5 too
    on_every_worker(srv, user, second, 235)  # the new one works at once, CRAM-MD5 too
    listed = cli(srv, "list")  # the sender addresses and the CRAM-MD5 secret are kept
    assert f"{user}\t{user}  [CRAM-MD5]" in listed.stdout.splitlines(), listed.stdout
    revoked(srv, before_passwd, user, "user passwd")

    before_del = session_as(srv, user, second, "CRAM-MD5")
    after_passwd = session_as(srv, user, second)
    assert send(after_passwd, user)[0] == 250, "a session with the new password goes on"
    cli_ok(srv, "del", user)
    on_every_worker(srv, user, second, 535)
    revoked(srv, before_del, user, "user del")
    revoked(srv, after_passwd, user, "user del")
    listed = cli(srv, "list")
    assert listed.returncode == 0 and user not in listed.stdout, listed
    assert load.samples, "the load ran"


# -- 3: the CLI over and over while the load runs ------------------------------------------------

CLI_RUNS = 50
CLI_LOOPS = 2  # loops side by side, so that CLI runs also meet each other in the database


@pytest.mark.parametrize("workers", models(2))
def test_fifty_cli_runs_under_auth_load(loaded: tuple[spawn.SpawnedServer, AuthLoad, int]) -> None:
    srv, load, _ = loaded
    time.sleep(1.5)  # the baseline: load alone
    cli_began = time.monotonic()
    base = load.between(0, cli_began)
    outcomes: list[tuple[str, int, str]] = []
    checks: list[str] = []

    def loop(n: int) -> None:
        try:
            cli_loop(n)
        except Exception as exc:  # an assertion in a thread: make it the test's
            checks.append(f"CLI loop {n}: {exc!r}")

    def cli_loop(n: int) -> None:
        for pair in range(n, CLI_RUNS // 2, CLI_LOOPS):
            name = f"tmp{pair}@mx.test"
            password = f"pw {pair}"
            for args, stdin in (
                (("add", name, "--cram-md5", "--password-stdin"), password + "\n"),
                (("del", name), None),
            ):
                res = cli(srv, *args, stdin=stdin)
                outcomes.append((" ".join(args), res.returncode, res.stderr))
                # Now and then, the right answer for the throw-away user on the next attempt.
                if pair % 6 == 0:
                    expect = 235 if args[0] == "add" else 535
                    got = probe(srv, name, password, "CRAM-MD5" if pair % 12 else "PLAIN")
                    if got.code != expect:
                        checks.append(f"after {args[0]} {name}: {got.code} {got.text} (pid {got.pid})")

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(CLI_LOOPS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    cli_ended = time.monotonic()
    during = load.between(cli_began, cli_ended)
    print(
        f"\nAUTH round trip, {srv.workers} worker(s), {load.clients} clients, all mechanisms:"
        f"\n  load alone:           {figures(base)}"
        f"\n  with {len(outcomes)} CLI runs ({cli_ended - cli_began:.1f} s): {figures(during)}"
    )
    for mech in MECHS:
        by_mech = [t for b, m, t in load.samples if m == mech and cli_began <= b < cli_ended]
        alone = [t for b, m, t in load.samples if m == mech and b < cli_began]
        print(f"  {mech:8} alone {figures(alone)}; with CLI {figures(by_mech)}")
    assert len(outcomes) == CLI_RUNS
    assert [o for o in outcomes if o[1] != 0] == []
    assert checks == []
    assert during, "the load ran during the CLI runs"
    # A reader that waited out SQLite's busy time-out (5 s) would show here even if it then won.
    assert max(during) < 4.0, figures(during)


# -- 4: bad input to the CLI while the server runs ----------------------------------------------


def one_line_refusal(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailwright user "), res.stderr
    assert all(w in lines[0] for w in words), (words, lines[0])
    assert "Traceback" not in res.stdout + res.stderr


def without_dac_override(
    srv: spawn.SpawnedServer, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`mailwright user ...` as root without CAP_DAC_OVERRIDE/DAC_READ_SEARCH: file modes bind it."""
    cmd = [sys.executable, "-m", "mailwright.cli.main", "--config", str(srv.config), "user", *args]
    setpriv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(setpriv + cmd, input=stdin, capture_output=True, text=True, timeout=60)


def can_drop_dac_override() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    res = subprocess.run(["setpriv", "--bounding-set=-dac_override", "true"], capture_output=True)
    return res.returncode == 0


@pytest.mark.parametrize("workers", models(1))
def test_bad_input_gets_one_line_and_leaves_the_server_alone(
    loaded: tuple[spawn.SpawnedServer, AuthLoad, int], tmp_path: Path
) -> None:
    srv, _, _ = loaded
    pw = "some pass phrase\n"
    users_db = srv.root / "state" / "users.db"
    before = users_db.read_bytes()

    one_line_refusal(
        cli(srv, "add", "x@mx.test", "--password-stdin", "--users-db", str(tmp_path), stdin=pw),
        1,
        "is a directory",
    )
    one_line_refusal(cli(srv, "list", "--users-db", str(tmp_path)), 1, "is a directory")
    one_line_refusal(cli(srv, "add", spawn.USER, "--password-stdin", stdin=pw), 1, "already exists")
    one_line_refusal(cli(srv, "del", "nobody@mx.test"), 1, "no user")
    one_line_refusal(cli(srv, "passwd", "nobody@mx.test", "--password-stdin", stdin=pw), 1, "no user")
    one_line_refusal(cli(srv, "add", "bad\x01name", "--password-stdin", stdin=pw), 1, "control")
    one_line_refusal(cli(srv, "add", "y@mx.test", "--password-stdin", stdin=""), 2, "no password")
    one_line_refusal(
        cli(srv, "add", "y@mx.test", "--password-stdin", "--users-db", str(srv.config), stdin=pw), 1
    )
    assert srv.config.read_text().startswith("\nhostname"), "a file that is no database is left alone"
    blocked = tmp_path / "file"
    blocked.write_text("")
    one_line_refusal(
        cli(srv, "add", "y@mx.test", "--password-stdin", "--users-db", str(blocked / "users.db"), stdin=pw),
        1,
        "is a file",
    )

    if can_drop_dac_override():
        # As root, only a process without CAP_DAC_OVERRIDE meets file modes: a parent directory
        # root may not write, and a database file it may only read.
        parent = tmp_path / "not-yours"
        parent.mkdir()
        os.chown(parent, 65534, 65534)
        res = without_dac_override(
            srv, "add", "y@mx.test", "--password-stdin", "--users-db", str(parent / "users.db"), stdin=pw
        )
        one_line_refusal(res, 1, "Permission denied")
        readonly = tmp_path / "readonly.db"
        readonly.write_bytes(before)
        readonly.chmod(0o400)
        for args in (("add", "y@mx.test", "--password-stdin"), ("passwd", spawn.USER, "--password-stdin")):
            res = without_dac_override(srv, *args, "--users-db", str(readonly), stdin=pw)
            one_line_refusal(res, 1, "readonly")
    else:
        print("\nnot root or no setpriv: the unwritable parent and database are not tried")

    assert users_db.read_bytes() == before, "no refusal changed the server's user database"
    on_every_worker(srv, spawn.USER, spawn.PASSWORD, 235)


def test_another_database_is_refused_as_such_and_left_alone(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """The running server's queue database, or another program's, given as the user database by
    mistake: refused as what it is (not "written by a newer mailwright", which says: upgrade), and
    no users table (nor user_version) is written into it."""
    srv = make_server("foreign", workers=1)
    pw = "some pass phrase\n"
    res = cli(srv, "add", "y@mx.test", "--password-stdin", "--users-db", str(srv.queue_db), stdin=pw)
    one_line_refusal(res, 1, "not a mailwright user database")
    foreign = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(foreign)) as app:
        app.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
    for args in (("add", "y@mx.test", "--password-stdin"), ("list",), ("del", "y@mx.test")):
        res = cli(srv, *args, "--users-db", str(foreign), stdin=pw)
        one_line_refusal(res, 1, "not a mailwright user database")
    with contextlib.closing(sqlite3.connect(foreign)) as app:
        assert app.execute("SELECT name FROM sqlite_master").fetchall() == [("accounts",)]
        assert app.execute("PRAGMA user_version").fetchone() == (0,)
    with contextlib.closing(sqlite3.connect(srv.queue_db, timeout=10)) as queue:
        assert queue.execute("SELECT name FROM sqlite_master WHERE name = 'users'").fetchall() == []
    assert probe(srv, spawn.USER, spawn.PASSWORD, "PLAIN").code == 235
    assert log_problems(srv, 0) == []


@pytest.mark.parametrize("workers", models(2))
def test_a_database_put_in_place_of_the_old_one_is_read_at_once(
    loaded: tuple[spawn.SpawnedServer, AuthLoad, int],
) -> None:
    """A users.db renamed over the server's (a backup restored, configuration management's copy)
    or removed and made again with `user add`: every worker reads the new file from the next
    attempt on, as Postfix (a changed table restarts its daemons) and Dovecot (a passwd-file is
    re-read when it changes) do; not the old, unlinked one until a restart."""
    srv, load, _ = loaded
    db = srv.root / "state" / "users.db"
    staged = srv.root / "users.db.new"
    # The load's own user goes into the new file too: the load must not notice the swap.
    for user, password in ((spawn.USER, spawn.PASSWORD), ("dave@mx.test", "dave's phrase")):
        cli_ok(
            srv,
            "add",
            user,
            "--cram-md5",
            "--password-stdin",
            "--users-db",
            str(staged),
            stdin=password + "\n",
        )
    on_every_worker(srv, "dave@mx.test", "dave's phrase", 535)
    # Sessions authenticated before the swap: the new file holds the same passwords, hashed afresh.
    before_swap = [session_as(srv, spawn.USER, spawn.PASSWORD, mech) for mech in ("PLAIN", "CRAM-MD5")]
    staged.replace(db)
    on_every_worker(srv, "dave@mx.test", "dave's phrase", 235)
    for smtp in before_swap:
        with smtp:
            assert send(smtp, spawn.USER)[0] == 250, "the same password in a new file: the session goes on"
            assert send(smtp, spawn.USER)[0] == 250

    # Removed and made again: the old file's users are gone with it. The load's user too, so the
    # load stops first (its failures would lock 127.0.0.1 out).
    load.stop()
    db.unlink()
    on_every_worker(srv, "dave@mx.test", "dave's phrase", 535)  # no file: no users
    cli_ok(srv, "add", "erin@mx.test", "--cram-md5", "--password-stdin", stdin="erin's phrase\n")
    on_every_worker(srv, "erin@mx.test", "erin's phrase", 235)
    on_every_worker(srv, "dave@mx.test", "dave's phrase", 535)
