"""End to end: started as root with `user` set, the server binds its ports and runs as that user.

Real `mailwright serve` processes, started as root (CI runs as root) with `user = "nobody"`, in
both process models; smtplib over STARTTLS with AUTH, the `user` and `queue` commands run as
root beside the server, SIGHUP. Checked: every process of the server has nobody's real,
effective and saved ids; the state a root run made (users.db from `user add`) is handed over;
the queue directory is private; a key only root may read stops the start with the fix, and
`config check` says so before; a root start without `user` says so (a WARNING once other hosts
can connect).

The server must import its code as nobody, and this machine's Python may live under /root
(mode 0700): so the servers here run on a venv of the system's /usr/bin/python3 made outside
/root, with this tree installed into it as pure Python (about 25 s, once for the module; the code
under test is not among the compiled modules, and a compiled install takes ~90 s).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from spawn import PASSWORD, USER, SpawnedServer, make_server, wait_for_log

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starting as root and giving it up needs root")

REPO = Path(__file__).resolve().parents[2]
NOBODY = pwd.getpwnam("nobody")
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A directory nobody may enter (pytest's own tmp_path is root's alone, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mw-privileges-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def python(base: Path) -> str:
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 to make a venv that nobody can run (scripts/test installs it)")
    venv = base / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
        check=True,
        timeout=600,
        env=dict(os.environ, MAILWRIGHT_PURE_PYTHON="1"),
    )
    return str(venv / "bin" / "python")


def server_as_nobody(root: Path, python: str, workers: int, *, key_mode: int = 0o640) -> SpawnedServer:
    srv = make_server(root, extra='user = "nobody"', workers=workers, python=python)
    os.chmod(root, 0o755)
    key = root / "key.pem"
    os.chown(key, 0, grp.getgrnam("nogroup").gr_gid)  # the fix the server names: a group that may read it
    os.chmod(key, key_mode)
    return srv


def credentials(pid: int) -> tuple[list[int], list[int]]:
    """(real, effective, saved, filesystem) uids and gids of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()]


def server_processes(pid: int) -> list[int]:
    """The server's process and its children (the workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return [pid, *children]


def submit(srv: SpawnedServer, user: str, password: str, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = user, "bob@relay.test", subject
    msg.set_content("hello")
    context = ssl.create_default_context(cafile=str(srv.ca_file))
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="client.test", timeout=15) as smtp:
        smtp.starttls(context=context)
        smtp.login(user, password)
        smtp.send_message(msg)


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "prefork"])
def test_server_runs_as_the_user(base: Path, python: str, workers: int) -> None:
    srv = server_as_nobody(base / f"as-nobody-{workers}", python, workers)
    state = srv.root / "state"
    assert os.stat(state / "users.db").st_uid == 0  # made by `user add` as root, before any start
    srv.start(wait=30)
    try:
        assert srv.proc is not None
        pids = server_processes(srv.proc.pid)
        assert len(pids) == (1 if workers == 1 else 1 + workers)
        for pid in pids:
            uids, gids = credentials(pid)
            assert uids == [NOBODY.pw_uid] * 4, pid
            assert gids == [NOBODY.pw_gid] * 4, pid
        log = srv.log.read_text()
        assert "running as user nobody (uid 65534, gid 65534); ports bound as root" in log
        assert "gave " in log and "of the state to user nobody" in log
        assert " WARNING " not in log and "Traceback" not in log

        submit(srv, USER, PASSWORD, "first")
        for path in (state, state / "users.db", state / "queue", state / "queue" / "queue.db"):
            assert os.stat(path).st_uid == NOBODY.pw_uid, path
        assert os.stat(state / "queue").st_mode & 0o777 == 0o700

        # The operator's commands run as root beside it: what they make stays usable by the server.
        added = srv.cli("user", "add", "carol@mx.test", "--password-stdin", stdin="carol's password\n")
        assert added.returncode == 0, added.stderr
        listed = srv.cli("queue", "list")
        assert listed.returncode == 0 and listed.stdout.count("bob@relay.test") == 1, listed
        submit(srv, "carol@mx.test", "carol's password", "second")
        assert len(srv.queued()) == 2
        assert os.stat(state / "users.db").st_uid == NOBODY.pw_uid

        mark = srv.log.stat().st_size
        srv.proc.send_signal(signal.SIGHUP)
        wait_for_log(srv, "TLS certificate reloaded", since=mark, count=workers)
        submit(srv, USER, PASSWORD, "after the reload")
        assert "ERROR" not in srv.log.read_text()[mark:]
    finally:
        assert srv.stop() == 0


def test_a_key_only_root_may_read_stops_the_start_with_the_fix(base: Path, python: str) -> None:
    srv = server_as_nobody(base / "root-key", python, 2, key_mode=0o600)
    key = srv.root / "key.pem"
    os.chown(key, 0, 0)
    checked = srv.cli("config", "check")
    assert checked.returncode == 2, checked
    said = f"key file {key} is not readable by user nobody, as whom the server runs"
    assert said in checked.stderr and f"chgrp nogroup {key} && chmod g+r {key}" in checked.stderr
    with pytest.raises(RuntimeError, match="server exited"):
        srv.start(wait=30)
    assert srv.proc is not None and srv.proc.wait(5) == 2
    assert said in srv.log.read_text()


def test_a_root_start_without_user_says_so(tmp_path: Path) -> None:
    """On loopback only (as here: the suite binds nothing else) an INFO line; once another host can
    connect, a WARNING at start-up and in `config check`, which is shown without binding 0.0.0.0."""
    srv = make_server(tmp_path / "as-root", workers=1)
    srv.start()
    try:
        log = srv.log.read_text()
        assert 'INFO mailwright: running as root, every listener on loopback: set user = "mailwright"' in log
        assert " WARNING " not in log and "running as user" not in log
    finally:
        srv.stop()
    srv.config.write_text(srv.config.read_text().replace('address = "127.0.0.1"', 'address = "0.0.0.0"', 1))
    checked = srv.cli("config", "check")
    assert checked.returncode == 0, checked
    assert "warning: user is not set: started as root, the server stays root" in checked.stdout
    assert f"other hosts can connect to mx 0.0.0.0:{srv.ports['mx']} (STARTTLS)" in checked.stdout


def unreadable_by_nobody(path: Path) -> bool:
    """Whether nobody could not enter `path`, judged from the modes of it and every directory above."""
    for part in (path, *path.parents):
        st = part.stat()
        if not st.st_mode & 0o001 and st.st_uid != NOBODY.pw_uid:
            return True
    return False


def test_config_check_and_start_refuse_code_the_user_cannot_read(base: Path) -> None:
    """This suite's own Python, when it lies under /root: what the server would find after its drop."""
    stdlib = Path(os.__file__).parent
    if not unreadable_by_nobody(stdlib):
        pytest.skip(f"nobody can read {stdlib} here: no unreadable Python to run the server on")
    srv = server_as_nobody(base / "unreadable-code", sys.executable, 1)
    checked = srv.cli("config", "check")
    assert checked.returncode == 2, checked
    assert 'user = "nobody": user nobody cannot read ' in checked.stderr
    assert "where the server's Python code lies" in checked.stderr
    with pytest.raises(RuntimeError, match="server exited"):
        srv.start(wait=30)
    assert srv.proc is not None and srv.proc.wait(5) == 1
    assert "cannot start: user nobody cannot read " in srv.log.read_text()
