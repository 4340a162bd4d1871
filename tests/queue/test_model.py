"""Queue ids: shape, uniqueness, time order; error mapping of the spool."""

from __future__ import annotations

import errno
import re

from mailwright.protocol.reply import R
from mailwright.queue.model import QUEUE_ID_LENGTH, is_queue_id, new_queue_id
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
