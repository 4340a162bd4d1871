"""Tests for mailwright.users.passwords (scrypt in PHC format)."""

from __future__ import annotations

import re
import time

from mailwright.users import passwords

FORMAT = re.compile(r"^\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$")


def test_round_trip_and_format() -> None:
    encoded = passwords.hash_password("correct horse")
    assert FORMAT.match(encoded)
    assert passwords.verify("correct horse", encoded)
    assert not passwords.verify("correct horsE", encoded)
    assert not passwords.verify("", encoded)
    assert not passwords.needs_rehash(encoded)


def test_salts_differ() -> None:
    assert passwords.hash_password("same") != passwords.hash_password("same")


def test_unicode_is_normalised() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert passwords.verify(decomposed, passwords.hash_password(composed))


def test_malformed_and_hostile_encodings_are_false() -> None:
    good = passwords.hash_password("pw")
    salt, digest = good.split("$")[3:5]
    for bad in [
        "",
        "plaintext",
        good.replace("$scrypt$", "$argon2id$"),
        f"$scrypt$ln=30,r=8,p=1${salt}${digest}",  # would need 128 GiB: refused, not attempted
        f"$scrypt$ln=14,r=99,p=1${salt}${digest}",
        f"$scrypt$ln=14,r=8,p=1$!!!${digest}",
        f"$scrypt$ln=14,r=8,p=1${salt}$AAAA",  # hash too short
    ]:
        start = time.perf_counter()
        assert not passwords.verify("pw", bad), bad
        assert time.perf_counter() - start < 1.0
    assert passwords.needs_rehash(f"$scrypt$ln=15,r=8,p=1${salt}${digest}")
    assert passwords.needs_rehash("junk")


def test_dummy_hash_is_a_real_current_hash() -> None:
    # The dummy must cost a full scrypt, so it must parse with the current parameters.
    assert FORMAT.match(passwords.DUMMY_HASH)
    assert not passwords.needs_rehash(passwords.DUMMY_HASH)
    assert not passwords.verify("anything", passwords.DUMMY_HASH)
