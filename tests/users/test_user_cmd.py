"""Tests for `mailwright user add|del|list` handlers (mailwright.cli.user_cmd)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from mailwright.cli import user_cmd
from mailwright.users.store import UserError, UserInfo, UserStore


class FakeStdin(io.StringIO):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mailwright")
    user_cmd.register(p.add_subparsers())
    args = p.parse_args(argv)
    result: int = args.func(args)
    return result


def test_add_with_password_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "users.db"
    monkeypatch.setattr("sys.stdin", FakeStdin("pa ss\r\nignored\n", tty=False))
    argv = [
        "user",
        "add",
        "alice@example.org",
        "--users-db",
        str(db),
        "--password-stdin",
        "--address",
        "alice@example.org",
        "--address",
        "@example.net",
        "--cram-md5",
    ]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert f"added alice@example.org to {db}; sender addresses: alice@example.org, @example.net" in out
    assert "CRAM-MD5" in out
    with UserStore(db) as users:
        assert users.verify_password("alice@example.org", "pa ss")
        assert users.cram_secret("alice@example.org") == "pa ss"
        assert users.owns_sender("alice@example.org", "bob@example.net")


def test_add_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "users.db")
    monkeypatch.setattr("sys.stdin", FakeStdin("pw\n", tty=False))
    assert run(["user", "add", "bob", "--users-db", db, "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", FakeStdin("pw\n", tty=False))
    assert run(["user", "add", "bob", "--users-db", db, "--password-stdin"]) == 1
    assert "mailwright user add: error: user 'bob' already exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", FakeStdin("pw\n", tty=False))
    assert run(["user", "add", "carol", "--users-db", db, "--password-stdin", "--address", "nope"]) == 1
    assert "'nope' is not a sender address" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", FakeStdin("", tty=False))
    assert run(["user", "add", "carol", "--users-db", db, "--password-stdin"]) == 2
    assert "no password on standard input" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", FakeStdin("pw\n", tty=False))
    assert run(["user", "add", "carol", "--users-db", db]) == 2
    err = capsys.readouterr().err
    assert "--password-stdin" in err and "Traceback" not in err
    with UserStore(Path(db)) as users:
        assert [u.name for u in users.list()] == ["bob"]


def test_add_prompts_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "users.db"
    monkeypatch.setattr("sys.stdin", FakeStdin("", tty=True))
    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run(["user", "add", "dave", "--users-db", str(db)]) == 2
    assert "the two passwords differ" in capsys.readouterr().err
    assert run(["user", "add", "dave", "--users-db", str(db)]) == 0
    with UserStore(db) as users:
        assert users.verify_password("dave", "same")


def test_list_and_del(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "users.db"
    assert run(["user", "list", "--users-db", str(db)]) == 0
    assert f"no users: there is no user database at {db} yet" in capsys.readouterr().err
    with UserStore(db) as users:
        pass
    assert run(["user", "list", "--users-db", str(db)]) == 0
    assert f"no users in {db}" in capsys.readouterr().err
    with UserStore(db) as users:
        users.add("zed@example.org", "pw")
        users.add("amy", "pw", addresses=["@example.org"], cram=True)
    assert run(["user", "list", "--users-db", str(db)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "amy\t@example.org  [CRAM-MD5]",
        "zed@example.org\tzed@example.org",
    ]
    assert run(["user", "del", "amy", "--users-db", str(db)]) == 0
    assert run(["user", "del", "amy", "--users-db", str(db)]) == 1
    assert f"no user 'amy' in {db}" in capsys.readouterr().err
    with UserStore(db) as users:
        assert users.list() == [UserInfo("zed@example.org", ("zed@example.org",), False)]


def test_unusable_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_db = tmp_path / "users.db"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    assert run(["user", "list", "--users-db", str(not_a_db)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"mailwright user list: error: user database {not_a_db}:") and "Traceback" not in err
    )


def test_run_functions_take_the_db_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "users.db"
    UserStore(db).close()
    args = argparse.Namespace(name="x", users_db=None)
    assert user_cmd.run_del(args, db) == 1
    assert f"no user 'x' in {db}" in capsys.readouterr().err


NOT_UTF8 = b"\xff".decode("utf-8", "surrogateescape")  # how a non-UTF-8 argument byte arrives


def test_names_and_addresses_that_are_not_utf8_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: UnicodeEncodeError from SQLite, a traceback.
    db = str(tmp_path / "users.db")
    monkeypatch.setattr("sys.stdin", FakeStdin("pw\n", tty=False))
    assert run(["user", "add", f"x{NOT_UTF8}", "--users-db", db, "--password-stdin"]) == 1
    assert capsys.readouterr().err == "mailwright user add: error: username must be UTF-8 text\n"
    assert run(["user", "del", NOT_UTF8, "--users-db", db]) == 1
    assert capsys.readouterr().err == "mailwright user del: error: username must be UTF-8 text\n"
    monkeypatch.setattr("sys.stdin", FakeStdin("pw\n", tty=False))
    argv = [
        "user",
        "add",
        "eve",
        "--users-db",
        db,
        "--password-stdin",
        "--address",
        f"{NOT_UTF8}@example.org",
    ]
    assert run(argv) == 1
    assert "is not a sender address (write user@example.org or @example.org)" in capsys.readouterr().err
    with UserStore(Path(db)) as users:
        assert users.list() == []


@pytest.mark.parametrize("strict", [False, True], ids=["utf8-mode", "strict-locale"])
def test_password_that_is_not_utf8_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], strict: bool
) -> None:
    # Before: UnicodeEncodeError from the hash (or UnicodeDecodeError from the read), a traceback.
    db = tmp_path / "users.db"
    errors = "strict" if strict else "surrogateescape"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"p\xffw\n"), "utf-8", errors))
    assert run(["user", "add", "frank", "--users-db", str(db), "--password-stdin"]) == 2
    assert capsys.readouterr().err == (
        "mailwright user add: error: the password is not UTF-8 text; nothing changed\n"
    )
    with UserStore(db) as users:
        assert users.list() == []


def test_store_refuses_a_password_that_is_not_utf8(tmp_path: Path) -> None:
    with UserStore(tmp_path / "users.db") as users, pytest.raises(UserError, match="password must be UTF-8"):
        users.add("gina", f"p{NOT_UTF8}w")


def test_closed_stdin_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `user add ... <&-` leaves sys.stdin None.  Before: AttributeError, a traceback.
    db = str(tmp_path / "users.db")
    monkeypatch.setattr("sys.stdin", None)
    assert run(["user", "add", "hal", "--users-db", db, "--password-stdin"]) == 2
    assert capsys.readouterr().err == "mailwright user add: error: no password on standard input\n"
    assert run(["user", "add", "hal", "--users-db", db]) == 2
    assert "standard input is not a terminal; pipe the password and pass --password-stdin" in (
        capsys.readouterr().err
    )


def test_database_path_problems_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: "unable to open database file" and "File exists", with nothing to do about it.
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    assert run(["user", "list", "--users-db", str(tmp_path / "adir")]) == 1
    assert capsys.readouterr().err == (
        f"mailwright user list: error: user database {tmp_path / 'adir'} is a directory "
        f"(fix: give the database file, e.g. --users-db {tmp_path / 'adir' / 'users.db'})\n"
    )
    assert run(["user", "list", "--users-db", str(tmp_path / "afile" / "users.db")]) == 1
    assert capsys.readouterr().err == (
        f"mailwright user list: error: user database {tmp_path / 'afile' / 'users.db'}: "
        f"{tmp_path / 'afile'} is a file, not a directory "
        "(fix: check --users-db, or auth.users_db and state_dir in the configuration)\n"
    )
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    assert run(["user", "list", "--users-db", str(not_a_db)]) == 1
    assert capsys.readouterr().err == (
        f"mailwright user list: error: user database {not_a_db}: file is not a database (fix: check "
        "that --users-db or auth.users_db names a mailwright user database that you may read and write)\n"
    )


def test_a_mistyped_database_path_is_said_and_nothing_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only `add` makes a database: `list`, `del` and `passwd` on a path where there is none
    name it and leave no directories and no empty database behind."""
    db = tmp_path / "typo" / "users.db"
    assert run(["user", "list", "--users-db", str(db)]) == 0
    assert f"there is no user database at {db} yet" in capsys.readouterr().err
    assert run(["user", "del", "amy", "--users-db", str(db)]) == 1
    err = capsys.readouterr().err
    assert f"no user database at {db} (fix: check --users-db or auth.users_db" in err
    assert err.count("\n") == 1, err
    assert run(["user", "passwd", "amy", "--users-db", str(db), "--password-stdin"]) == 1
    assert f"no user database at {db}" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
