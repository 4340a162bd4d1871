"""A body received in one process and committed in another: `SpoolWriter.hand_over` + `HandedOverBody`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.protocol.reply import SMTPError
from mailwright.queue.spool import HandedOverBody, Spool, SpoolWriter


def spool_at(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.create()
    return spool


def test_inline_body_hands_over_no_file(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    writer = SpoolWriter(spool, inline_limit=100)
    writer.write(b"small")
    assert writer.inline_body == b"small"
    assert writer.hand_over() is None
    body = HandedOverBody(spool, writer.size, b"small", None)
    assert body.finish("ID.msg") is None
    body.settle(committed=True)
    assert spool.names() == set()


def test_spilled_body_is_synced_and_renamed_by_the_receiver(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    writer = SpoolWriter(spool, inline_limit=4)
    writer.write(b"more than four bytes")
    temp = writer.hand_over()
    assert temp is not None and temp.endswith(".tmp")
    with pytest.raises(RuntimeError):
        writer.write(b"late")  # the receiving side owns the body now
    body = HandedOverBody(spool, writer.size, None, temp)
    assert body.finish("ID1.msg") == "ID1.msg"
    body.settle(committed=True)
    writer.settle(committed=True)
    assert spool.names() == {"ID1.msg"}
    assert (spool.directory / "ID1.msg").read_bytes() == b"more than four bytes"


def test_failed_commit_removes_the_renamed_file(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    writer = SpoolWriter(spool, inline_limit=0)
    writer.write(b"body")
    body = HandedOverBody(spool, 4, None, writer.hand_over())
    body.finish("ID2.msg")
    body.settle(committed=False)
    writer.settle(committed=False)  # the worker's side touches no file
    assert spool.names() == set()


def test_a_vanished_temp_file_is_a_storage_error(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    writer = SpoolWriter(spool, inline_limit=0)
    writer.write(b"body")
    temp = writer.hand_over()
    assert temp is not None
    (spool.directory / temp).unlink()
    with pytest.raises(SMTPError) as info:
        HandedOverBody(spool, 4, None, temp).finish("ID3.msg")
    assert (info.value.reply.code, info.value.reply.enhanced) == (451, "4.3.0")


def test_an_existing_final_name_is_never_overwritten(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    (spool.directory / "ID4.msg").write_bytes(b"committed earlier")
    writer = SpoolWriter(spool, inline_limit=0)
    writer.write(b"newcomer")
    body = HandedOverBody(spool, 8, None, writer.hand_over())
    with pytest.raises(SMTPError):
        body.finish("ID4.msg")
    assert (spool.directory / "ID4.msg").read_bytes() == b"committed earlier"
    assert spool.names() == {"ID4.msg"}, "the newcomer's temp file is gone"


def test_temps_of_a_dead_process_are_removed_and_no_others(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    mine = SpoolWriter(spool, inline_limit=0)
    mine.write(b"in progress")
    (spool.directory / "999999-0123456789abcdef.tmp").write_bytes(b"left by pid 999999")
    (spool.directory / "ID5.msg").write_bytes(b"committed")
    assert spool.remove_temps_of(999999) == 1
    assert len(spool.names()) == 2, "our own temp file and the committed body stay"
    mine.abort()
