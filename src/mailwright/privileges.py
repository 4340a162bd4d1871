"""Giving up root: started as root, the server binds its ports, then runs as the configured `user`.

Why: every SMTP session parses what strangers send. Postfix's smtpd runs as `postfix`, Exim's
receiving process as its own user, OpenSMTPD's as `_smtpd`; a flaw in a parser of ours must give
an attacker an unprivileged account, not the machine. The whole server gives up root, the queue
master included (it reads the workers' frames, which a compromised worker writes), right after
the listening sockets are bound and before anything else is opened, so every file the server
makes afterwards belongs to that user. Like Exim (and unlike nginx, whose master stays root), the
certificate and key are then read as that user, at start-up and at every reload alike: a key only
root may read fails at start-up, with its fix, rather than at the first reload months later.

What it does:
- `RunAs.lookup(name)`: the account's uid, primary gid and groups (so that membership of a
  group such as Debian's `ssl-cert` lets it read a key), or `PrivilegeError` naming the fix.
- `hand_over(run_as, ...)`: before the drop, makes the state and queue directories exist and
  gives the server's own files in them to the account, as systemd's StateDirectory= does, so a
  state directory first made by a run as root (or by `mailwright user add` as root) keeps working.
- `drop(run_as, code)`: supplementary groups, gid, then uid (the order that leaves no way back),
  a check that root cannot be regained, and one that the user can read the server's code
  (`code_directories`): Python imports some modules only on first use.
- `RunAs.lookup` refuses an unknown account and uid 0, each with its fix (the loader reports it
  with file:line).

Invariants:
- `hand_over` changes only what root owns, reached through directories root owns, without
  following symbolic links (`os.fwalk` with directory descriptors, `follow_symlinks=False`): a
  directory the unprivileged account already owns may hold links it planted (to /etc/shadow,
  say), so nothing below one is touched. It changes only mailwright's own names (the tls
  directory, the user database and its journals, the queue directory), and refuses to hand over
  a state or queue directory holding anything else: `state_dir = "/var/lib"` must never give
  /var/lib away.
- `drop` runs before any thread is started, in the process that forks the workers, so every
  process of the server has the same credentials from the start.

Not responsible for: binding (`prefork.master.bind_listener`), the order of start-up (`app.run`),
files outside the state and queue directories (a configured key or user database: the operator's).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# What mailwright itself puts in a state directory and in a queue directory (see `queue.sqlite`,
# `users.store`, `net.tls.ensure_self_signed`); SQLite adds the -journal, -wal and -shm files.
_DB_SUFFIXES: Final = ("", "-journal", "-wal", "-shm")
QUEUE_NAMES: Final = frozenset({"queue.lock", "spool", *(f"queue.db{s}" for s in _DB_SUFFIXES)})
STATE_NAMES: Final = frozenset({"tls", "queue", *(f"users.db{s}" for s in _DB_SUFFIXES)})


class PrivilegeError(Exception):
    """The server cannot run as the configured user: what is wrong, and the fix."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem} (fix: {fix})")
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True, slots=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def lookup(cls, name: str) -> RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise PrivilegeError(
                f"user {name!r} does not exist",
                f"create it, e.g. useradd --system --no-create-home --shell /usr/sbin/nologin {name}, "
                "or name an existing unprivileged user",
            ) from None
        if entry.pw_uid == 0:
            raise PrivilegeError(f"user {name!r} is root (uid 0): it gives up nothing", "name another user")
        groups = tuple(dict.fromkeys(os.getgrouplist(name, entry.pw_gid)))
        return cls(name=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)


def hand_over(run_as: RunAs, state_dir: Path, queue_dir: Path) -> list[Path]:
    """Make the state and queue directories exist and give root's files among mailwright's own in
    them to `run_as` (see the module docstring); returns what changed owner."""
    changed: list[Path] = []
    trees = {state_dir: STATE_NAMES}
    trees[queue_dir] = trees.get(queue_dir, frozenset()) | QUEUE_NAMES
    for directory, names in trees.items():
        if not directory.exists():
            # The queue's directory is private (see queue.sqlite); the state directory only names things.
            directory.mkdir(parents=True, mode=0o700 if directory == queue_dir else 0o755)
        _hand_over_tree(run_as, directory, names, changed)
    return changed


def _hand_over_tree(run_as: RunAs, top: Path, names: frozenset[str], changed: list[Path]) -> None:
    st = os.stat(top, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        return  # not root's: nothing below may be trusted, and the account may own it already
    strangers = sorted(set(os.listdir(top)) - names)
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise PrivilegeError(
            f"{top} is owned by root and holds files that are not mailwright's ({shown}): it is not "
            f"a directory of mailwright's own, so it is not given to user {run_as.name}",
            f"point the setting at a directory of its own, or give it to the user yourself: "
            f"chown {run_as.name} {top}",
        )
    _chown(run_as, top, changed)
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        here = Path(dirpath)
        entries: Iterable[str] = filenames
        if here == top:
            entries = [n for n in filenames if n in names]
            dirnames[:] = [n for n in dirnames if n in names]
        kept = []
        for name in dirnames:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if st.st_uid == 0:
                kept.append(name)  # root's: safe to descend; the account's: left as it is
                _chown(run_as, here / name, changed, dirfd)
        dirnames[:] = kept
        for name in entries:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if st.st_uid == 0 and (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                _chown(run_as, here / name, changed, dirfd)


def _chown(run_as: RunAs, path: Path, changed: list[Path], dirfd: int | None = None) -> None:
    """`path`'s own owner (never a link's target); by name relative to `dirfd` when given."""
    if dirfd is None:
        os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)
    else:
        os.chown(path.name, run_as.uid, run_as.gid, dir_fd=dirfd, follow_symlinks=False)
    changed.append(path)


def drop(run_as: RunAs, code: Iterable[Path] = ()) -> None:
    """Become `run_as` for good: groups, gid, uid, in that order (after setuid, setgid is refused).
    Then each directory of `code` (the interpreter's and the server's modules) must be readable:
    Python imports some modules only when first used, and a server that cannot would fail in the
    middle of a session, long after start-up (a Python installed under /root, mode 0700)."""
    os.setgroups(list(run_as.groups))
    os.setgid(run_as.gid)
    os.setuid(run_as.uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError(
            f"could regain root after switching to user {run_as.name}", "report it; the server will not serve"
        )
    for directory in code:
        if not os.access(directory, os.R_OK | os.X_OK):
            raise PrivilegeError(
                f"user {run_as.name} cannot read {directory}, where the server's Python code lies, and "
                "Python loads some of it only when first used",
                "install mailwright where that user can read it, e.g. in a venv under /opt made with "
                "the system's python3 (a Python installed under /root serves nobody else)",
            )


def code_directories() -> list[Path]:
    """The directories Python code of the server is loaded from: the standard library and every
    directory holding a package it imports (site-packages, a source tree)."""
    import uvloop

    import mailwright

    stdlib = Path(os.__file__).parent
    return list(dict.fromkeys([stdlib, Path(mailwright.__file__).parent, Path(uvloop.__file__).parent]))
