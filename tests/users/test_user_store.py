"""Tests for mailwright.users.store.UserStore over a real SQLite file."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from mailwright.users import passwords
from mailwright.users.store import UserError, UserInfo, UserStore


@pytest.fixture
def users(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "sub" / "users.db")


def test_add_verify_and_wrong_password(users: UserStore) -> None:
    info = users.add("alice@example.org", "s3cret")
    assert info == UserInfo("alice@example.org", ("alice@example.org",), False)
    assert users.verify_password("alice@example.org", "s3cret")
    assert not users.verify_password("alice@example.org", "S3cret")
    assert users.cram_secret("alice@example.org") is None


def test_unknown_user_runs_dummy_hash(users: UserStore, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = passwords.verify

    def spy(password: str, encoded: str) -> bool:
        seen.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(passwords, "verify", spy)
    assert not users.verify_password("nobody@example.org", "guess")
    assert not users.verify_password("bad\x00name", "guess")
    assert seen == [passwords.DUMMY_HASH, passwords.DUMMY_HASH]


def test_file_permissions_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "state" / "users.db"
    with UserStore(path) as first:
        first.add("bob", "pw", addresses=["bob@example.org"])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with UserStore(path) as second:  # another process (the CLI) sees the same rows
            assert second.get("bob") == UserInfo("bob", ("bob@example.org",), False)
            assert second.delete("bob")
        assert first.get("bob") is None


def test_names_are_validated_and_domain_folded(users: UserStore) -> None:
    users.add("Bob@Example.ORG", "pw")
    assert users.get("Bob@example.org") == UserInfo("Bob@example.org", ("Bob@example.org",), False)
    assert users.verify_password("Bob@EXAMPLE.org", "pw")
    assert users.get("bob@example.org") is None  # the local part stays case-sensitive
    with pytest.raises(UserError, match="already exists"):
        users.add("Bob@example.org", "other")
    for bad in ["", "a" * 256, "tab\there", "nul\x00", " padded"]:
        with pytest.raises(UserError):
            users.add(bad, "pw")
    with pytest.raises(UserError, match="empty"):
        users.add("carol", "")


def test_owns_sender_patterns(users: UserStore) -> None:
    users.add("alice@example.org", "pw")
    users.add("ops", "pw", addresses=["@Example.NET", "postmaster@example.com"])
    assert users.owns_sender("alice@example.org", "alice@EXAMPLE.org")
    assert not users.owns_sender("alice@example.org", "Alice@example.org")
    assert not users.owns_sender("alice@example.org", "bob@example.org")
    assert users.owns_sender("ops", "anyone@example.net")
    assert users.owns_sender("ops", "x@EXAMPLE.NET")
    assert not users.owns_sender("ops", "x@sub.example.net")
    assert users.owns_sender("ops", "postmaster@example.com")
    assert not users.owns_sender("ops", "")
    assert not users.owns_sender("ops", "@example.net")
    assert not users.owns_sender("nobody", "x@example.net")
    users.add("plain-name", "pw")
    assert users.get("plain-name") == UserInfo("plain-name", (), False)
    with pytest.raises(UserError, match="not a sender address"):
        users.add("dave", "pw", addresses=["no-at-sign"])
    with pytest.raises(UserError):
        users.add("erin", "pw", addresses=["a b@example.org"])


def test_owns_sender_idn(users: UserStore) -> None:
    users.add("ida", "pw", addresses=["@b\u00fccher.example"])
    assert users.get("ida") == UserInfo("ida", ("@xn--bcher-kva.example",), False)
    assert users.owns_sender("ida", "x@xn--bcher-kva.example")
    assert users.owns_sender("ida", "x@B\u00fccher.example")


def test_owned_domains_compare_as_idna2008(users: UserStore) -> None:
    """ "faß.example" and "fass.example" are two domains (IDNA2008, as relay policy compares them):
    the owner of one may not send as the other, and "faß"'s A-label is its own domain."""
    users.add("erin", "pw", addresses=["@fa\u00df.example"])
    users.add("fass-owner", "pw", addresses=["@fass.example"])
    users.add("x@fa\u00df.example", "pw")
    assert users.get("erin") == UserInfo("erin", ("@xn--fa-hia.example",), False)
    assert users.owns_sender("erin", "x@fa\u00df.example")
    assert users.owns_sender("erin", "x@FA\u00df.example")
    assert users.owns_sender("erin", "x@xn--fa-hia.example")
    assert not users.owns_sender("erin", "x@fass.example")
    assert not users.owns_sender("fass-owner", "x@fa\u00df.example")
    assert users.owns_sender("x@fa\u00df.example", "x@xn--fa-hia.example")
    assert not users.owns_sender("x@fa\u00df.example", "x@fass.example")
    assert users.get("x@fass.example") is None
    assert users.verify_password("x@xn--fa-hia.example", "pw")


def test_cram_secret_only_when_asked(users: UserStore) -> None:
    users.add("carol", "cram-pw", cram=True)
    users.add("dave", "pw")
    assert users.cram_secret("carol") == "cram-pw"
    assert users.cram_secret("dave") is None
    assert users.cram_secret("nobody") is None
    assert [u.name for u in users.list()] == ["carol", "dave"]
    assert users.list()[0].cram_md5
    assert users.set_password("carol", "new-pw")
    assert users.cram_secret("carol") is None and users.verify_password("carol", "new-pw")
    assert not users.set_password("nobody", "x")
    assert not users.delete("nobody")


def test_averify_does_not_block_the_loop(users: UserStore) -> None:
    users.add("alice", "pw")

    async def main() -> tuple[bool, bool, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        good, bad = await asyncio.gather(
            users.averify_password("alice", "pw"), users.averify_password("alice", "x")
        )
        task.cancel()
        return good, bad, ticks

    good, bad, ticks = asyncio.run(main())
    assert good and not bad
    assert ticks >= 5  # the loop kept running while scrypt ran in threads


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(UserError, match="newer mailwright"):
        UserStore(path)


def test_a_replacement_that_is_no_user_database_keeps_the_one_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users.db"
    store = UserStore(path)
    store.add("alice@example.org", "old password")
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database at all" * 100)
    os.replace(broken, path)
    with caplog.at_level(logging.ERROR, logger="mailwright.users"):
        assert store.verify_password("alice@example.org", "old password")  # still the old file
        assert store.verify_password("alice@example.org", "old password")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "no usable user database" in said[0] and str(path) in said[0], said
    # A good file put there later is taken at the next call.
    good_path = tmp_path / "good.db"
    with UserStore(good_path) as good:
        good.add("bob@example.org", "new password")
    os.replace(good_path, path)
    assert store.verify_password("bob@example.org", "new password")
    assert not store.verify_password("alice@example.org", "old password")
    store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file for another user needs root")
def test_a_database_root_makes_beside_a_server_that_gave_up_root_is_the_servers(tmp_path: Path) -> None:
    """`mailwright user add` as root, in the state directory a server running as `user` owns (see
    mailwright.privileges): the new users.db, and the journal SQLite writes, are that user's, so
    the server can read it; in a directory root owns the file stays root's."""
    nobody = 65534
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, nobody, nobody)
    store = UserStore(state / "users.db")
    store.add("alice@example.org", "pw")  # a write: SQLite's journal comes and goes
    store.close()
    assert (os.stat(state / "users.db").st_uid, os.stat(state / "users.db").st_gid) == (nobody, nobody)
    assert {os.stat(p).st_uid for p in state.iterdir()} == {nobody}
    own = UserStore(tmp_path / "root" / "users.db")
    own.close()
    assert os.stat(tmp_path / "root" / "users.db").st_uid == 0
