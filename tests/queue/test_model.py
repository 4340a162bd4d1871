"""Queue ids: shape, uniqueness, time order; error mapping of the spool."""

from __future__ import annotations

import errno
import random
import re

from hypothesis import given
from hypothesis import strategies as st

from mailwright.protocol.reply import R
from mailwright.queue import model
from mailwright.queue.model import _CROCKFORD, QUEUE_ID_LENGTH, _encode, is_queue_id, new_queue_id
from mailwright.queue.spool import storage_error


def test_ids_are_unique_and_file_name_safe() -> None:
    ids = {new_queue_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    for qid in list(ids)[:500]:
        assert len(qid) == QUEUE_ID_LENGTH == 16
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{16}", qid)
        assert is_queue_id(qid)


def test_ids_sort_by_time() -> None:
    earlier = [new_queue_id(1_700_000_000.000) for _ in range(50)]
    later = [new_queue_id(1_700_000_000.001) for _ in range(50)]
    assert max(earlier) < min(later)
    assert new_queue_id(1_800_000_000) > new_queue_id(1_700_000_000)


def test_is_queue_id_rejects_paths_and_junk() -> None:
    assert not is_queue_id("../../etc/passwd")
    assert not is_queue_id("0123456789abcdef")  # lower case is not produced
    assert not is_queue_id("0123456789ABCDEFG")
    assert not is_queue_id("")


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


@given(st.integers(min_value=0, max_value=2**80), st.integers(min_value=1, max_value=16))
def test_encode_matches_the_plain_definition(value: int, width: int) -> None:
    assert _encode(value, width) == reference_encode(value, width)


def test_encode_known_values() -> None:
    assert _encode(0, 9) == "000000000"
    assert _encode(31, 1) == "Z"
    assert _encode(32, 2) == "10"
    # 2023-11-14T22:13:20Z: a ULID (also Crockford base32 of milliseconds) of that instant starts
    # "01HF7YAT00"; ours has one character fewer.
    assert _encode(1_700_000_000_000, 9) == "1HF7YAT00"


@given(st.floats(min_value=0, max_value=2**45 / 1000 - 1, allow_nan=False), st.integers(0, 2**35 - 1))
def test_new_queue_id_is_the_time_then_the_random_bits(now: float, bits: int) -> None:
    class Fixed(random.Random):
        def getrandbits(self, k: int) -> int:
            assert k == 35
            return bits

    real = model._rng
    model._rng = Fixed()
    try:
        qid = new_queue_id(now)
    finally:
        model._rng = real
    assert qid == _encode(int(now * 1000), 9) + _encode(bits, 7)
    assert len(qid) == QUEUE_ID_LENGTH and is_queue_id(qid)
