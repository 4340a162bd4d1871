"""Tests for `mailwright user add|del|list` handlers (mailwright.cli.user_cmd)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from mailwright.cli import user_cmd
from mailwright.users.store import UserInfo, UserStore


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
    args = argparse.Namespace(name="x", users_db=None)
    assert user_cmd.run_del(args, db) == 1
    assert db.exists()
