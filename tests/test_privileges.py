"""Unit tests of `mailwright.privileges`: the account lookup, the hand-over of the state, the drop.

They change file owners and process credentials, so they need root (CI runs as root); the
account is `nobody`, which every Debian system has. The server's own use of them, with real
clients, is in tests/e2e/test_privileges.py.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from mailwright.privileges import PrivilegeError, RunAs, code_directories, drop, hand_over

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners and credentials needs root")

NOBODY = pwd.getpwnam("nobody")


def owner(path: Path) -> int:
    return os.stat(path, follow_symlinks=False).st_uid


def test_lookup_names_the_account_and_refuses_unknown_and_root() -> None:
    run_as = RunAs.lookup("nobody")
    assert (run_as.uid, run_as.gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert NOBODY.pw_gid in run_as.groups
    with pytest.raises(PrivilegeError) as unknown:
        RunAs.lookup("no-such-user-here")
    assert "does not exist" in unknown.value.problem and "useradd --system" in unknown.value.fix
    with pytest.raises(PrivilegeError) as root:
        RunAs.lookup("root")
    assert "gives up nothing" in root.value.problem


def make_root_state(state: Path) -> None:
    """A state directory as a run as root leaves it."""
    (state / "tls").mkdir(parents=True, mode=0o700)
    (state / "tls" / "selfsigned-key.pem").write_text("key")
    (state / "users.db").write_text("db")
    (state / "queue" / "spool").mkdir(parents=True)
    (state / "queue" / "queue.db").write_text("q")
    (state / "queue" / "queue.db-wal").write_text("w")
    (state / "queue" / "spool" / "1M98S6W2Q0000").write_text("body")


def test_hand_over_gives_a_root_made_state_to_the_user(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_root_state(state)
    changed = hand_over(RunAs.lookup("nobody"), state, state / "queue")
    every = [state, *state.rglob("*")]
    assert {owner(p) for p in every} == {NOBODY.pw_uid}
    assert sorted(changed) == sorted(every)
    assert hand_over(RunAs.lookup("nobody"), state, state / "queue") == []  # nothing left to do


def test_hand_over_makes_missing_directories_and_the_queue_private(tmp_path: Path) -> None:
    state, queue = tmp_path / "state", tmp_path / "elsewhere" / "queue"
    hand_over(RunAs.lookup("nobody"), state, queue)
    assert owner(state) == owner(queue) == NOBODY.pw_uid
    assert os.stat(queue).st_mode & 0o777 == 0o700


def test_hand_over_follows_no_link_and_enters_no_directory_of_the_user(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_root_state(state)
    victim = tmp_path / "victim"  # stands for /etc/shadow
    victim.write_text("secret")
    (state / "queue" / "spool" / "planted").symlink_to(victim)
    (state / "tls" / "planted").symlink_to(victim)
    users = state / "queue" / "spool" / "users-dir"
    users.mkdir()
    os.chown(users, NOBODY.pw_uid, NOBODY.pw_gid)  # the account's own: may hold anything
    inside = users / "root-file"
    inside.write_text("x")
    hand_over(RunAs.lookup("nobody"), state, state / "queue")
    assert owner(victim) == 0
    assert owner(state / "queue" / "spool" / "planted") == 0  # the link itself is left as well
    assert owner(inside) == 0
    assert owner(state / "queue" / "spool" / "1M98S6W2Q0000") == NOBODY.pw_uid


def test_hand_over_refuses_a_directory_that_is_not_mailwrights_own(tmp_path: Path) -> None:
    shared = tmp_path / "var-lib"  # state_dir = "/var/lib" by mistake
    (shared / "dpkg").mkdir(parents=True)
    (shared / "users.db").write_text("db")
    with pytest.raises(PrivilegeError) as exc:
        hand_over(RunAs.lookup("nobody"), shared, shared / "queue")
    assert "dpkg" in exc.value.problem and f"chown nobody {shared}" in exc.value.fix
    assert owner(shared) == owner(shared / "dpkg") == owner(shared / "users.db") == 0


def test_hand_over_leaves_a_directory_the_user_owns(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_root_state(state)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    hand_over(RunAs.lookup("nobody"), state, tmp_path / "q")
    assert owner(state / "users.db") == 0  # below a directory the user owns: untouched


def test_queue_in_the_state_directory_itself(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for name in ("queue.db", "queue.lock", "users.db"):
        (state / name).write_text("x")
    hand_over(RunAs.lookup("nobody"), state, state)
    assert {owner(p) for p in state.iterdir()} == {NOBODY.pw_uid}


def run_in_child(body: Callable[[], str]) -> tuple[int, str]:
    """Run `body` (which may call drop) in a forked child; its exit status and what it returned,
    or the exception it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_end)
            os.write(write_end, body().encode())
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        said = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), said


def test_drop_gives_up_root_for_good() -> None:
    def body() -> str:
        drop(RunAs.lookup("nobody"))
        ids = repr((os.getresuid(), os.getresgid(), os.getgroups()))
        try:
            os.setuid(0)
        except PermissionError:
            return f"{ids}\nno way back"
        return f"{ids}\nroot again"

    code, said = run_in_child(body)
    assert code == 0, said
    ids, back = said.splitlines()
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    assert ids == repr(((uid, uid, uid), (gid, gid, gid), [gid]))
    assert back == "no way back"


def test_drop_refuses_code_the_user_cannot_read(tmp_path: Path) -> None:
    private = tmp_path / "private"  # as a Python installed under /root (mode 0700)
    private.mkdir(mode=0o700)
    code, said = run_in_child(lambda: drop(RunAs.lookup("nobody"), [private]) or "dropped")
    assert code == 1
    assert said.startswith(f"PrivilegeError: user nobody cannot read {private}"), said
    assert "venv under /opt" in said


def test_code_directories_name_the_standard_library_and_mailwright() -> None:
    dirs = code_directories()
    assert Path(os.__file__).parent in dirs
    assert any((d / "privileges.py").exists() for d in dirs)
