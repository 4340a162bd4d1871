"""`mailwright user add|del|passwd|list`: manage the submission users in the user database.

``user add NAME [--address ADDR ...] [--cram-md5] [--password-stdin]`` asks for the password
twice on the terminal unless ``--password-stdin`` is given (then the first line of standard
input is the password, for scripts).  ``user passwd NAME [--[no-]cram-md5] [--password-stdin]``
replaces an existing user's password the same way, keeping its sender addresses; a user with a
CRAM-MD5 secret gets the new password as its secret unless ``--no-cram-md5`` (the old secret must
stop working too), and ``--cram-md5`` gives one to a user without.  ``user del NAME`` and
``user list`` do what they say.  A running server reads the database at every AUTH and MAIL, so
each change holds from the next attempt on, in every worker, with no restart.
Each takes ``--users-db PATH``; without it the default database of the default configuration
is used (the main command may supply the path from ``--config`` through ``run_*``'s ``db``).
Only ``add`` makes a missing database: the others name the path where there is none (``list``:
no users, exit 0; ``del``, ``passwd``: exit 1) and leave no directory or empty file behind.

Exit codes: 0 done; 1 the store refused (user exists, no such user, invalid name or address,
database unreadable); 2 usage (no terminal to prompt on, no password on standard input,
passwords differ, a password that is not UTF-8).  Never a traceback.

Not responsible for: storage and hashing (`mailwright.users.store`, `.passwords`), or the
top-level parser (`mailwright.cli.main`).
"""

from __future__ import annotations

import argparse
import getpass
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from mailwright.config.loader import blocking_file, load
from mailwright.users.store import MissingDatabase, UserError, UserStore

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
_LIST_FIX = "fix: `mailwright user list` shows the users it has; check --users-db or auth.users_db"


def _error(command: str, message: str) -> None:
    print(f"mailwright user {command}: error: {message}", file=sys.stderr)


def _read_password(args: argparse.Namespace, command: str) -> str | None:
    try:
        password = _ask_password(args, command)
        if password is not None:
            password.encode("utf-8")
    except UnicodeError:
        # Bytes that are not UTF-8 fail the read under a strict locale, or arrive as surrogates
        # (Python's UTF-8 mode) that cannot be hashed: the same mistake either way.
        _error(command, "the password is not UTF-8 text; nothing changed")
        return None
    return password


def _ask_password(args: argparse.Namespace, command: str) -> str | None:
    stdin = sys.stdin  # None when the descriptor was closed (`<&-`)
    if args.password_stdin:
        line = stdin.readline() if stdin is not None else ""
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            _error(command, "no password on standard input")
            return None
        return password
    if stdin is None or not stdin.isatty():
        _error(command, "standard input is not a terminal; pipe the password and pass --password-stdin")
        return None
    first = getpass.getpass(f"Password for {args.name}: ")
    second = getpass.getpass("Same password again: ")
    if first != second:
        _error(command, "the two passwords differ; nothing changed")
        return None
    if not first:
        _error(command, "empty password; nothing changed")
        return None
    return first


def run_add(args: argparse.Namespace, db: Path) -> int:
    password = _read_password(args, "add")
    if password is None:
        return EXIT_USAGE
    with UserStore(db) as store:
        info = store.add(args.name, password, addresses=args.address, cram=args.cram_md5)
    owned = ", ".join(info.addresses) or "none (sender checks will refuse every address)"
    print(f"added {info.name} to {db}; sender addresses: {owned}")
    if info.cram_md5:
        print("note: a CRAM-MD5 secret (plaintext-equivalent) is stored for this user")
    return EXIT_OK


def run_passwd(args: argparse.Namespace, db: Path) -> int:
    with UserStore(db, create=False) as store:
        info = store.get(args.name)
        if info is None:  # said before the password is asked for, not after
            _error("passwd", f"no user {args.name!r} in {db} ({_LIST_FIX})")
            return EXIT_REFUSED
        password = _read_password(args, "passwd")
        if password is None:
            return EXIT_USAGE
        # A CRAM-MD5 secret is the password itself: kept as it was, the old password would still
        # log in with CRAM-MD5.  So it follows the new password unless told otherwise.
        cram = info.cram_md5 if args.cram_md5 is None else args.cram_md5
        if not store.set_password(args.name, password, cram=cram):
            _error("passwd", f"no user {args.name!r} in {db}")  # deleted meanwhile
            return EXIT_REFUSED
    print(f"changed the password of {info.name} in {db}")
    if cram:
        print("note: a CRAM-MD5 secret (plaintext-equivalent) is stored for this user")
    return EXIT_OK


def run_del(args: argparse.Namespace, db: Path) -> int:
    with UserStore(db, create=False) as store:
        removed = store.delete(args.name)
    if not removed:
        _error("del", f"no user {args.name!r} in {db} ({_LIST_FIX})")
        return EXIT_REFUSED
    print(f"deleted {args.name} from {db}")
    return EXIT_OK


def run_list(args: argparse.Namespace, db: Path) -> int:
    try:
        with UserStore(db, create=False) as store:
            users = store.list()
    except MissingDatabase:
        if blocking_file(db.parent) is not None:
            raise  # a path that cannot be a database: said as an error (_guarded)
        # True (no users), and said with the path, so that a mistyped one shows.
        print(
            f"no users: there is no user database at {db} yet (`mailwright user add` makes it)",
            file=sys.stderr,
        )
        return EXIT_OK
    if not users:
        print(f"no users in {db}", file=sys.stderr)
    for info in users:
        flags = "  [CRAM-MD5]" if info.cram_md5 else ""
        print(f"{info.name}\t{' '.join(info.addresses) or '-'}{flags}")
    return EXIT_OK


def _guarded(
    command: str, handler: Callable[[argparse.Namespace, Path], int]
) -> Callable[[argparse.Namespace], int]:
    """Turn store and file-system errors into one line and an exit code."""

    def run(args: argparse.Namespace) -> int:
        db: Path | None = args.users_db
        try:
            if db is None:
                db = load(None).users_db
            return handler(args, db)
        except MissingDatabase as exc:
            if db is not None and blocking_file(db.parent) is not None:
                _error(command, _database_problem(db, FileNotFoundError(str(exc))))
            else:
                fix = "check --users-db or auth.users_db; `mailwright user add` makes it"
                _error(command, f"{exc} (fix: {fix})")
        except UserError as exc:
            _error(command, str(exc))
        except BrokenPipeError:
            raise  # the reader of our output has gone; the main command handles that
        except (sqlite3.Error, OSError) as exc:
            _error(command, _database_problem(db, exc))
        except (KeyboardInterrupt, EOFError):
            _error(command, "interrupted; nothing changed")
        return EXIT_REFUSED

    return run


def _database_problem(db: Path | None, exc: sqlite3.Error | OSError) -> str:
    """Why the user database could not be used, and what to do about it."""
    if db is not None:
        # SQLite says only "unable to open database file" and mkdir only "File exists"; the
        # file system can say which part of the path is wrong.
        if db.is_dir():
            return (
                f"user database {db} is a directory "
                f"(fix: give the database file, e.g. --users-db {db / 'users.db'})"
            )
        blocker = blocking_file(db.parent)
        if blocker is not None:
            return (
                f"user database {db}: {blocker} is a file, not a directory "
                "(fix: check --users-db, or auth.users_db and state_dir in the configuration)"
            )
    what = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in what:
        return (
            f"user database {db}: {what} (fix: another process has held it locked for seconds, an "
            f"open sqlite3 shell perhaps (fuser {db} names it): end it and try again; nothing changed)"
        )
    return (
        f"user database {db}: {what} (fix: check that --users-db or auth.users_db names a "
        "mailwright user database that you may read and write)"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("user", help="manage submission users")
    commands = parser.add_subparsers(dest="user_command", metavar="{add,del,passwd,list}")

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    parser.set_defaults(func=usage)
    add = commands.add_parser("add", help="add a user (prompts for the password)")
    add.add_argument("name")
    add.add_argument(
        "--address",
        action="append",
        metavar="ADDR",
        help="a sender address the user owns, or @domain for all of a domain (repeatable; "
        "default: NAME when it is an address)",
    )
    add.add_argument(
        "--cram-md5",
        action="store_true",
        help="also store a plaintext-equivalent secret so CRAM-MD5 works for this user",
    )
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    delete = commands.add_parser("del", help="delete a user")
    delete.add_argument("name")
    passwd = commands.add_parser("passwd", help="change a user's password (prompts for it)")
    passwd.add_argument("name")
    passwd.add_argument(
        "--cram-md5",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store (or with --no-cram-md5 drop) the CRAM-MD5 secret; default: as the user had it",
    )
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    listing = commands.add_parser("list", help="list users and their sender addresses")
    handlers = (
        (add, "add", run_add),
        (delete, "del", run_del),
        (passwd, "passwd", run_passwd),
        (listing, "list", run_list),
    )
    for sub, name, handler in handlers:
        sub.add_argument(
            "--users-db",
            type=Path,
            default=None,
            metavar="PATH",
            help="user database (default: users.db in the state directory)",
        )
        sub.set_defaults(func=_guarded(name, handler))
