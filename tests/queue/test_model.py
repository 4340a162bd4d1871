"""Queue numbers and ids: uniqueness, time order, text form and back; error mapping of the spool."""

from __future__ import annotations

import errno
import re

from hypothesis import given
from hypothesis import strategies as st

from mailwright.protocol.reply import R
from mailwright.queue.model import (
    _CROCKFORD,
    QUEUE_ID_LENGTH,
    next_queue_number,
    queue_id_number,
    queue_id_text,
)
from mailwright.queue.spool import storage_error

T = 1_700_000_000.0  # 2023-11-14T22:13:20Z
LARGEST = 2**63 - 1


def test_numbers_in_one_millisecond_count_up_from_its_first() -> None:
    first = next_queue_number(0, T)
    assert first == 1_700_000_000_000 << 20
    numbers = [first]
    for _ in range(999):
        numbers.append(next_queue_number(numbers[-1], T + 0.0004))
    assert numbers == list(range(first, first + 1000))
    assert len({queue_id_text(n) for n in numbers}) == 1000


def test_a_later_millisecond_starts_afresh_and_a_clock_stepped_back_never_repeats() -> None:
    a = next_queue_number(0, T)
    b = next_queue_number(a, T + 0.001)
    assert b == a + (1 << 20)
    back = next_queue_number(b, T - 3600)  # the clock stepped back an hour
    assert back == b + 1
    assert next_queue_number(back, T + 0.001) == back + 1


@given(st.lists(st.integers(0, LARGEST), min_size=2, max_size=2, unique=True))
def test_ids_sort_as_their_numbers_do(pair: list[int]) -> None:
    a, b = sorted(pair)
    assert queue_id_text(a) < queue_id_text(b)


@given(st.integers(0, LARGEST))
def test_an_id_is_the_number_in_13_crockford_characters_and_reads_back(number: int) -> None:
    text = queue_id_text(number)
    assert len(text) == QUEUE_ID_LENGTH and text == reference_encode(number, 13)
    assert re.fullmatch(r"[0-7][0-9A-HJKMNP-TV-Z]{12}", text)  # file-name safe
    assert queue_id_number(text) == number
    assert queue_id_number(text.lower()) == number  # as an operator may type it


def test_an_id_of_this_era() -> None:
    # A ULID of this instant (also Crockford base32 of its milliseconds) starts "01HF7YAT00"; ours
    # holds the same 45 bits in nine characters, then four characters of sequence.
    assert queue_id_text(next_queue_number(0, T)) == "1HF7YAT00" + "0000"
    assert queue_id_text(0) == "0" * 13 and queue_id_text(LARGEST) == "7" + "Z" * 12


def test_queue_id_number_refuses_what_is_no_queue_id() -> None:
    for text in (
        "",
        "../../etc/passwd",
        "0" * 12,
        "0" * 14,
        "01HF7YAT0000I",  # I, L, O and U are not in the alphabet
        "01HF7YAT0000U",
        "01HF7YAT0000-",
        "8" + "0" * 12,  # 2**63: past SQLite's largest rowid
        "Z" * 13,
        "0123456789ABCDEF",  # an id of the 16-character form that schema version 3 renumbered
    ):
        assert queue_id_number(text) is None, text


def test_storage_error_mapping() -> None:
    assert storage_error(OSError(errno.ENOSPC, "full")).reply == R.STORAGE_FULL
    assert storage_error(OSError(errno.EDQUOT, "quota")).reply == R.STORAGE_FULL
    err = storage_error(OSError(errno.EIO, "io"))
    assert err.reply == R.LOCAL_ERROR
    assert err.reply.code == 451 and err.temporary


def reference_encode(value: int, width: int) -> str:
    """One character per 5 bits, least significant first, then reversed: the plain definition."""
    out = []
    for _ in range(width):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))
