"""Audit of the command line's error paths: every subcommand, and a real `serve` that cannot start.

Each case runs `mailwright` as a real process (tests/cli_run.py) and holds it to the standard:
the exit status (2 usage or configuration, 1 a refusal at run time), nothing on standard
output, no traceback, a message that names the argument, id, path or setting and says what to
do; `serve` that cannot start exits at once, having listened on nothing ("never half-started").

The cases: argparse's usage errors; `--config` naming nothing, for every subcommand; `queue`
with unknown ids and ids of the wrong form (Postfix's postsuper tells "invalid mail queue id"
from a message not found, and so do we), a queue directory that is missing, a file, corrupt, of a
future schema, locked; `user` with standard input closed or empty, passwords no AUTH can carry
(a NUL, RFC 4616 2; longer than a SASL line, RFC 4954 4), names and databases that are wrong;
`serve` on a port in use, a port it may not bind (setpriv drops CAP_NET_BIND_SERVICE), an
address this machine does not have, a state directory it may not write (setpriv drops
CAP_DAC_OVERRIDE), a user database that is corrupt, a directory or newer, a file where the
self-signed certificate's directory goes.

Not covered here: configuration files (tests/config/test_config_audit.py), the commands' normal
output (tests/queue, tests/users, tests/e2e/test_*_cmd_live.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trustme

from cli_run import Done, mailwright, refused
from mailwright.queue.sqlite import SQLiteQueueStore
from mailwright.users.store import UserStore

SETPRIV = shutil.which("setpriv")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A queue (empty), a user database with amy@example.org, and files that are neither."""

    async def make_queue() -> None:
        await SQLiteQueueStore(tmp_path / "queue").close()

    asyncio.run(make_queue())
    with UserStore(tmp_path / "users.db") as users:
        users.add("amy@example.org", "pw")
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "queue.db").write_bytes(b"this is not a database" * 100)
    (tmp_path / "corrupt.db").write_bytes(b"this is not a database" * 100)
    for newer in (tmp_path / "newer" / "queue.db", tmp_path / "newer.db"):
        newer.parent.mkdir(exist_ok=True)
        db = sqlite3.connect(newer)
        db.execute("PRAGMA user_version = 99")
        db.close()
    return tmp_path


USAGE = [
    ([], "usage: mailwright"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["serve", "extra"], "unrecognized arguments: extra"),
    (["serve", "--port", "25"], "unrecognized arguments: --port 25"),
    (["config"], "usage: mailwright config"),
    (["config", "frob"], "invalid choice: 'frob'"),
    (["config", "check", "--config"], "argument --config: expected one argument"),
    (["queue"], "the following arguments are required: COMMAND"),
    (["queue", "show"], "the following arguments are required: id"),
    (["queue", "list", "extra"], "unrecognized arguments: extra"),
    (["user"], "usage: mailwright user"),
    (["user", "add"], "the following arguments are required: name"),
    (["user", "passwd", "--cram-md5"], "the following arguments are required: name"),
]


@pytest.mark.parametrize(("argv", "says"), USAGE, ids=[" ".join(a) or "nothing" for a, _ in USAGE])
def test_usage_errors(home: Path, argv: list[str], says: str) -> None:
    refused(mailwright(*argv, home=home), 2, says)


@pytest.mark.parametrize(
    "argv",
    [["config", "check"], ["config", "show"], ["queue", "list"], ["user", "list"], ["serve"]],
    ids=lambda argv: " ".join(argv),
)
def test_config_that_names_nothing(home: Path, argv: list[str]) -> None:
    for config, says in [
        (home / "absent.toml", "cannot read the configuration file: No such file or directory"),
        (home, "the configuration file is a directory"),
        (b"/nonexistent/\xff.toml", "cannot read the configuration file"),
    ]:
        err = refused(mailwright("--config", config, *argv, home=home), 2, says)
        assert len(err.splitlines()) == 1, err


def queue(home: Path, *argv: str | bytes, where: str = "queue") -> Done:
    return mailwright("queue", *argv, "--queue-dir", home / where, home=home)


# (command, id, what the message says). Before: every one of these was "no message with id ..."
# (a 5000-character id in full, the path as if it could be one).
BAD_IDS = [
    ("show", "../../etc/passwd", "'../../etc/passwd' is not a queue id (fix: copy the id from"),
    ("hold", "", "'' is not a queue id"),
    (
        "release",
        "1M8PEDCK5H8A",
        "'1M8PEDCK5H8A' is not a queue id (fix: copy the id from `mailwright queue list`: 13",
    ),
    ("delete", "1M8PEDCK5H8A3U", "is not a queue id"),
    ("show", "A" * 5000, "'" + "A" * 64 + "...' is not a queue id"),
    ("show", "\x1b[31mred", "'\\x1b[31mred' is not a queue id"),
    ("hold", b"\xff\xfe", "is not a queue id"),
]


@pytest.mark.parametrize(("command", "qid", "says"), BAD_IDS, ids=[f"{c}-{i!r:.20}" for c, i, _ in BAD_IDS])
def test_ids_of_the_wrong_form(home: Path, command: str, qid: str | bytes, says: str) -> None:
    err = refused(queue(home, command, qid), 1, says)
    assert len(err.splitlines()) == 1 and len(err) < 400, err


@pytest.mark.parametrize("command", ["show", "hold", "release", "delete"])
def test_ids_not_in_the_queue(home: Path, command: str) -> None:
    # Upper or lower case, an id of the right form that is not there: not found, with where to look.
    for qid in ("1M8PEDCK5H8A3", "1m8pedck5h8a3"):
        refused(
            queue(home, command, qid),
            1,
            f"no message with id '{qid}' in the queue (fix: `mailwright queue list`",
        )


QUEUE_DIRS = [
    ("nowhere", "no queue in", "(fix: the server creates it when it first starts"),
    ("afile", "is a file, not a queue directory", "(fix: give --queue-dir the directory that holds queue.db"),
    ("corrupt", "file is not a database", "(fix: check that --queue-dir"),
    ("newer", "has schema version 99, this mailwright reads version", "(fix: run the newer mailwright"),
]


@pytest.mark.parametrize(("where", "says", "fix"), QUEUE_DIRS, ids=[q[0] for q in QUEUE_DIRS])
def test_queue_directories_that_are_no_queue(home: Path, where: str, says: str, fix: str) -> None:
    # Before: a file given as --queue-dir was "no queue in FILE (the server creates it ...)".
    for argv in (["list"], ["hold", "1M8PEDCK5H8A3"]):
        refused(queue(home, *argv, where=where), 1, f"{home / where}", says, fix)
    assert not (home / "nowhere").exists()  # looking never creates a queue


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    """`db` locked for writing by another process, as an open `sqlite3` shell in a transaction
    holds it (a thread here, with its own connection, is another process to SQLite's locks)."""
    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        ready.set()
        done.wait(60)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    ready.wait(10)
    try:
        yield
    finally:
        done.set()
        holder.join()


def user(home: Path, *argv: str | bytes, stdin: bytes | None = b"", db: str = "users.db") -> Done:
    return mailwright("user", *argv, "--users-db", home / db, home=home, stdin=stdin)


# (arguments, standard input, exit status, what it says). None: standard input closed.
USERS = [
    (["add", "bob@example.org", "--password-stdin"], None, 2, "no password on standard input"),
    (["add", "bob@example.org", "--password-stdin"], b"", 2, "no password on standard input"),
    (
        ["add", "bob@example.org"],
        b"pw\n",
        2,
        "standard input is not a terminal; pipe the password and pass --password-stdin",
    ),
    (["add", "bob@example.org", "--password-stdin"], b"\xff\xfe\n", 2, "the password is not UTF-8 text"),
    (
        ["add", "bob@example.org", "--password-stdin"],
        b"pass\x00word\n",
        1,
        "must not contain a NUL character, which AUTH PLAIN cannot carry",
    ),
    (
        ["add", "bob@example.org", "--password-stdin"],
        b"x" * 8193 + b"\n",
        1,
        "password must be at most 8192 bytes",
    ),
    (
        ["add", "amy@example.org", "--password-stdin"],
        b"pw\n",
        1,
        "user 'amy@example.org' already exists (fix: `mailwright user passwd`",
    ),
    (["add", "", "--password-stdin"], b"pw\n", 1, "username must be 1 to 255 characters"),
    (["add", b"b\xffb@example.org", "--password-stdin"], b"pw\n", 1, "username must be UTF-8 text"),
    (
        ["add", "e\x1b@example.org", "--password-stdin"],
        b"pw\n",
        1,
        "username must not contain control characters",
    ),
    (
        ["add", "bob@example.org", "--address", "not an address", "--password-stdin"],
        b"pw\n",
        1,
        "is not a sender address (write user@example.org or @example.org)",
    ),
    (
        ["passwd", "zed@example.org", "--password-stdin"],
        b"pw\n",
        1,
        "(fix: `mailwright user list` shows the users it has",
    ),
    (["del", "zed@example.org"], b"", 1, "(fix: `mailwright user list` shows the users it has"),
]


@pytest.mark.parametrize(
    ("argv", "stdin", "code", "says"), USERS, ids=[f"{a[0]}-{s!r:.12}-{w[:24]}" for a, s, _, w in USERS]
)
def test_user_commands(
    home: Path, argv: list[str | bytes], stdin: bytes | None, code: int, says: str
) -> None:
    # Before: a password with a NUL, or longer than any AUTH line, was stored and never logged in.
    before = (home / "users.db").read_bytes()
    done = user(home, *argv, stdin=stdin)
    assert "Traceback" not in done.err and done.code == code and done.out == "", done
    assert says in done.err and len(done.lines) == 1, done.err
    assert (home / "users.db").read_bytes() == before, "a refused command changed the database"


USER_DBS = [
    ("corrupt.db", "file is not a database", "(fix: check that --users-db"),
    ("newer.db", "was written by a newer mailwright (schema 99;", "fix: run the newer mailwright"),
    ("afile/users.db", "afile is a file, not a directory", "(fix: check --users-db"),
    ("queue", "is a directory (fix: give the database file", ""),
    ("queue/queue.db", "is not a mailwright user database (its tables: ", "fix: check --users-db"),
    (
        "absent.db",
        "no user database at",
        "(fix: check --users-db or auth.users_db; `mailwright user add` makes it)",
    ),
]


@pytest.mark.parametrize(("db", "says", "fix"), USER_DBS, ids=[d[0] for d in USER_DBS])
def test_user_databases_that_cannot_be_used(home: Path, db: str, says: str, fix: str) -> None:
    # Before: a newer database said so and nothing more.
    for argv, stdin in (
        (["del", "amy@example.org"], b""),
        (["passwd", "amy@example.org", "--password-stdin"], b"pw\n"),
    ):
        done = user(home, *argv, stdin=stdin, db=db)
        refused(done, 1, says, fix)
    assert not (home / "absent.db").exists()


def test_locked_databases_name_what_to_do(home: Path) -> None:
    """Locked for longer than the commands wait (the queue 10 s, the users 5 s), both at once.
    Before: "database is locked (fix: check that --queue-dir [--users-db] names a mailwright queue
    [user database] you may read)", which it does. The server commits in milliseconds: seconds of
    waiting mean someone else, an open sqlite3 shell say."""
    with locked(home / "queue" / "queue.db"), locked(home / "users.db"), ThreadPoolExecutor(2) as pool:
        held = pool.submit(queue, home, "hold", "1M8PEDCK5H8A3")
        deleted = pool.submit(user, home, "del", "amy@example.org")
        for done in (held.result(), deleted.result()):
            refused(done, 1, "database is locked", "fuser", "end it and try again")


def serve(home: Path, text: str, *, state: Path | None = None, prefix: tuple[str, ...] = ()) -> Done:
    """`serve` with this configuration, which must not start: it must exit, not listen."""
    config = home / "serve.toml"
    config.write_text(f'state_dir = "{state or home / "state"}"\n{text}', encoding="utf-8")
    done = mailwright("--config", config, "serve", home=home, prefix=prefix, timeout=60)
    assert "mailwright ready" not in done.err and ": listening on " not in done.err, done.err
    return done


def one_error(done: Done, code: int, *says: str) -> str:
    """The log's one ERROR line, after `refused`'s checks."""
    refused(done, code, *says)
    (line,) = [line for line in done.lines if " ERROR " in line]
    return line


def listener(port: int, address: str = "127.0.0.1") -> str:
    return f'[[listeners]]\nrole = "mx"\naddress = "{address}"\nport = {port}\n'


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_port_in_use(home: Path, workers: int) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = serve(home, f"workers = {workers}\n{listener(port)}")
    one_error(done, 1, f"('127.0.0.1', {port}): address already in use (fix: another server")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_an_address_this_machine_does_not_have(home: Path, workers: int) -> None:
    # Before: "cannot assign requested address" and nothing to do about it.
    done = serve(home, f"workers = {workers}\n{listener(2525, '192.0.2.1')}")
    one_error(
        done,
        1,
        "cannot assign requested address (fix: that is no address of this machine",
        "ip -brief address",
    )


def test_serve_on_a_name_that_does_not_resolve(home: Path) -> None:
    done = serve(home, f"workers = 1\n{listener(2525, 'host.invalid')}")
    one_error(done, 1, "cannot resolve the listener address 'host.invalid'", "(fix: write an IP address")


@pytest.mark.skipif(SETPRIV is None, reason="no setpriv (util-linux)")
def test_serve_on_a_port_it_may_not_bind(home: Path) -> None:
    drop = (str(SETPRIV), "--bounding-set=-net_bind_service", "--")
    done = serve(home, f"workers = 1\n{listener(25)}", prefix=drop)
    one_error(
        done,
        1,
        "('127.0.0.1', 25): permission denied (fix: ports below 1024 need root or CAP_NET_BIND_SERVICE",
    )


@pytest.mark.skipif(SETPRIV is None, reason="no setpriv (util-linux)")
def test_serve_with_a_state_directory_it_may_not_write(home: Path) -> None:
    # Before: "[Errno 13] Permission denied: '.../state' (fix: ports below 1024 need root ...)".
    # Root without CAP_DAC_OVERRIDE meets file modes as any user does.
    locked_dir = home / "readonly"
    locked_dir.mkdir(mode=0o555)
    drop = (str(SETPRIV), "--bounding-set=-dac_override,-dac_read_search", "--")
    done = serve(home, listener(2525), state=locked_dir / "state", prefix=drop)
    line = one_error(done, 1, f"Permission denied: '{locked_dir / 'state'}'", "may not create or write there")
    assert "ports below 1024" not in line, line


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        ("corrupt", "user database {state}/users.db: file is not a database (fix: check auth.users_db"),
        ("newer", "{state}/users.db was written by a newer mailwright (schema 99; fix: run the newer"),
        (
            "directory",
            "user database {state}/users.db is a directory (fix: set auth.users_db to a file in it",
        ),
        (
            "tls-file",
            "self-signed certificate into {state}/tls: {state}/tls is a file, not a directory (fix: move",
        ),
    ],
)
def test_serve_with_state_it_cannot_use(home: Path, setup: str, says: str) -> None:
    # Before: "user database: file is not a database" (which file?), "unable to open database
    # file" for a directory, and "File exists; make the directory writable" for a file.
    state = home / "state"
    state.mkdir()
    if setup == "corrupt":
        (state / "users.db").write_bytes(b"this is not a database" * 100)
    elif setup == "newer":
        shutil.copy(home / "newer.db", state / "users.db")
    elif setup == "directory":
        (state / "users.db").mkdir()
    else:
        (state / "tls").write_text("in the way\n")
    done = serve(home, f"workers = 1\n{listener(2525)}")
    one_error(done, 2 if setup == "tls-file" else 1, says.format(state=state))


def test_serve_with_certificate_and_key_the_other_way_round(home: Path) -> None:
    # The loader finds both files readable; the server's own load says what is in them. Before:
    # "holds no PEM certificate ...; a DER file converts with: openssl x509 -inform der ...".
    ca = trustme.CA()
    leaf = ca.issue_cert("mail.example.org")
    cert, key = home / "fullchain.pem", home / "privkey.pem"
    leaf.private_key_pem.write_to_path(str(cert))
    cert.with_name("privkey.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    done = serve(home, f'workers = 1\n[tls]\ncert = "{cert}"\nkey = "{key}"\n{listener(2525)}')
    one_error(done, 2, f"certificate file {cert} holds a private key, not a certificate", "(fix: cert names")
