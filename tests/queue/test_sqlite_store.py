"""SQLiteQueueStore: round trips, spilling, group commit, durability across reopen, recovery."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from queue_helpers import body_of, commit_bytes, envelope, read_all

from mailwright.protocol.reply import R, SMTPError
from mailwright.queue import sqlite as sqlite_mod
from mailwright.queue.model import (
    Envelope,
    Recipient,
    RecipientState,
    next_queue_number,
    queue_id_number,
    queue_id_text,
)
from mailwright.queue.sqlite import QueueLocked, QueueUnusable, SQLiteQueueStore


def spool_files(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "spool").iterdir())


def test_inline_round_trip(tmp_path: Path) -> None:
    data = body_of(3000)
    env = envelope(n_rcpt=2)

    async def main() -> str:
        store = SQLiteQueueStore(tmp_path)
        try:
            qid = await commit_bytes(store, data, env, chunk=700)
            info = store.get_message(qid)
            assert info is not None
            assert info.id == qid and info.size == len(data) and not info.held
            assert info.sender == "alice@example.org" and info.client_ip == "127.0.0.1"
            assert info.auth_user == "alice"
            assert [r.address for r in info.recipients] == ["r0@example.net", "r1@example.net"]
            assert all(r.state is RecipientState.QUEUED and r.attempts == 0 for r in info.recipients)
            assert abs(info.received_at - time.time()) < 60
            got = store.get_envelope(qid)
            assert got is not None
            assert got.recipients == env.recipients
            assert (got.mail_params, got.helo, got.tls, got.auth_user) == (
                env.mail_params,
                env.helo,
                True,
                "alice",
            )
            assert read_all(store, qid) == data
            assert spool_files(tmp_path) == []  # small bodies live in the database
            return qid
        finally:
            await store.close()

    asyncio.run(main())


def test_every_committed_message_gets_one_log_line_keyed_by_its_queue_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> list[str]:
        store = SQLiteQueueStore(tmp_path)
        try:
            small = await commit_bytes(store, body_of(300), envelope(n_rcpt=2))
            big = await commit_bytes(store, body_of(90_000), envelope(sender=""))
            await asyncio.sleep(0.05)  # the writer thread logs after handing the outcomes back
            return [small, big]
        finally:
            await store.close()

    with caplog.at_level(logging.INFO, logger="mailwright.queue"):
        small, big = asyncio.run(main())
    # A batch's lines travel as one record (log_format.LineFormatter prefixes each line).
    records = [r for r in caplog.records if r.name == "mailwright.queue"]
    lines = [line for r in records for line in r.getMessage().split("\n")]
    assert lines == [
        f"{small}: from=<alice@example.org>, size=300, nrcpt=2, client=client.example.org[127.0.0.1],"
        " tls, auth=alice",
        f"{big}: from=<>, size=90000, nrcpt=1, client=client.example.org[127.0.0.1], tls, auth=alice",
    ]


def test_spilled_5mb_round_trip(tmp_path: Path) -> None:
    data = body_of(5 * 1024 * 1024 + 17, tag=b"big")

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            qid = await commit_bytes(store, data, chunk=65_521)
            assert spool_files(tmp_path) == [f"{qid}.msg"]
            info = store.get_message(qid)
            assert info is not None and info.size == len(data)
            chunks = list(store.read_body(qid))
            assert max(len(c) for c in chunks) <= 64 * 1024
            assert b"".join(chunks) == data
        finally:
            await store.close()

    asyncio.run(main())


def test_inline_limit_boundary(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteQueueStore(tmp_path, inline_limit=1000)
        try:
            at_limit = await commit_bytes(store, body_of(1000), chunk=300)
            assert spool_files(tmp_path) == []
            over = await commit_bytes(store, body_of(1001), chunk=300)
            assert spool_files(tmp_path) == [f"{over}.msg"]
            assert read_all(store, at_limit) == body_of(1000)
            assert read_all(store, over) == body_of(1001)
            empty = await commit_bytes(store, b"")
            assert read_all(store, empty) == b""
        finally:
            await store.close()

    asyncio.run(main())


def test_hold_release_delete(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteQueueStore(tmp_path, inline_limit=100)
        try:
            small = await commit_bytes(store, body_of(50))
            big = await commit_bytes(store, body_of(5000))
            assert store.hold(big) is True
            assert store.hold(big) is True  # idempotent
            held = {m.id: m.held for m in store.list_messages()}
            assert held == {small: False, big: True}
            assert store.release(big) is True
            assert store.get_message(big).held is False  # type: ignore[union-attr]
            assert store.delete(big) is True
            assert store.get_message(big) is None
            assert spool_files(tmp_path) == []  # its body file went with it
            with pytest.raises(KeyError):
                store.read_body(big)
            assert store.delete(big) is False
            for op in (store.hold, store.release, store.delete):
                assert op("0000000000000000") is False
            assert store.get_message("0000000000000000") is None
            assert store.get_envelope("0000000000000000") is None
            assert [m.id for m in store.list_messages()] == [small]
        finally:
            await store.close()

    asyncio.run(main())


def test_abort_removes_temp_file_and_commit_after_abort_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteQueueStore(tmp_path, inline_limit=10)
        try:
            writer = store.open_message()
            writer.write(b"y" * 100)
            assert len(spool_files(tmp_path)) == 1 and spool_files(tmp_path)[0].endswith(".tmp")
            store.abort(writer)
            store.abort(writer)  # idempotent
            assert spool_files(tmp_path) == []
            with pytest.raises(RuntimeError):
                writer.write(b"more")
            with pytest.raises(TypeError):
                await store.commit(writer, envelope())
            assert store.list_messages() == []
        finally:
            await store.close()

    asyncio.run(main())


def test_group_commit_groups_and_resolves_only_after_commit(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            # Hold the database write lock from another connection: no COMMIT can happen, so no
            # commit() may complete however long we wait.
            blocker = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")

            async def one(i: int) -> str:
                qid = await commit_bytes(store, body_of(500 + i, tag=str(i).encode()))
                # Visible to an unrelated connection the moment commit() returns: it was COMMITted.
                assert store.get_message(qid) is not None
                return qid

            tasks = [asyncio.create_task(one(i)) for i in range(200)]
            await asyncio.sleep(0.3)
            assert not any(t.done() for t in tasks)
            assert store.stats.transactions == 0
            blocker.execute("ROLLBACK")
            blocker.close()
            ids = await asyncio.gather(*tasks)
            assert len(set(ids)) == 200
            assert store.stats.messages == 200
            assert store.stats.transactions <= 10, store.stats
            assert store.stats.largest_batch >= 100
            for i, qid in enumerate(ids[:20]):
                assert read_all(store, qid) == body_of(500 + i, tag=str(i).encode())
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("size", [50, 5000], ids=["inline", "spilled"])
def test_failure_in_a_batch_affects_only_the_failing_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    """Another connection takes the number the writer will give the second job of a batch (only a
    hand-made row can: the writer is the one that numbers), so that job's insert fails."""
    when = 1_700_000_000.0
    base = next_queue_number(0, when)

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path, inline_limit=100)
        try:
            blocker = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            blocker.execute(
                "INSERT INTO messages (id, sender, received_at, size, body) VALUES (?, '', ?, 1, x'58')",
                (base + 1, when),
            )
            at = replace(envelope(), received_at=when)
            first = asyncio.create_task(commit_bytes(store, body_of(50), at))
            await asyncio.sleep(0.05)  # the writer thread now waits for the lock with `first`
            dup_a = asyncio.create_task(commit_bytes(store, body_of(size, tag=b"a"), at))
            dup_b = asyncio.create_task(commit_bytes(store, body_of(size, tag=b"b"), at))
            await asyncio.sleep(0.05)  # both wait in the next batch, numbered base + 1 and + 2
            with caplog.at_level(logging.WARNING, logger="mailwright.queue.sqlite"):
                blocker.execute("COMMIT")
                blocker.close()
                results = await asyncio.gather(first, dup_a, dup_b, return_exceptions=True)
            assert results[0] == queue_id_text(base)
            ok = [r for r in results[1:] if isinstance(r, str)]
            bad = [r for r in results[1:] if isinstance(r, SMTPError)]
            assert ok == [queue_id_text(base + 2)] and len(bad) == 1
            assert bad[0].reply == R.LOCAL_ERROR
            assert store.stats.messages == 2 and store.stats.failed == 1
            winner = read_all(store, ok[0])
            assert winner in (body_of(size, tag=b"a"), body_of(size, tag=b"b"))
            assert read_all(store, queue_id_text(base + 1)) == b"X"  # the blocker's row is intact
            if size > 100:
                # The loser's file neither lingers nor clobbers the winner's body.
                assert spool_files(tmp_path) == [ok[0] + ".msg"]
            else:
                # The shared transaction failed and was retried job by job.
                shared = [re.search(r"transaction of (\d+) message", r.getMessage()) for r in caplog.records]
                assert any(m and int(m.group(1)) >= 2 for m in shared), [
                    r.getMessage() for r in caplog.records
                ]
                assert spool_files(tmp_path) == []
            after = await commit_bytes(store, body_of(size, tag=b"after"))  # the writer is not wedged
            assert read_all(store, after) == body_of(size, tag=b"after")
            assert queue_id_number(after) > base + 2
        finally:
            await store.close()

    asyncio.run(main())


def test_50mb_body_streams_in_little_memory(tmp_path: Path) -> None:
    chunk = b"z" * (64 * 1024 - 2) + b"\r\n"

    async def main() -> int:
        store = SQLiteQueueStore(tmp_path)
        try:
            tracemalloc.start()
            try:
                writer = store.open_message()
                for _ in range(800):
                    writer.write(chunk)
                qid = await store.commit(writer, envelope())
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert writer.size == 800 * len(chunk)
            total = sum(len(c) for c in store.read_body(qid))
            assert total == 800 * len(chunk)
            return peak
        finally:
            await store.close()

    peak = asyncio.run(main())
    print(f"tracemalloc peak while queueing 50 MB: {peak} bytes")
    assert peak < 5 * 1024 * 1024, f"peak {peak} bytes"


def test_durable_across_reopen(tmp_path: Path) -> None:
    small, big = body_of(2000, tag=b"s"), body_of(300_000, tag=b"b")

    async def first() -> tuple[str, str]:
        store = SQLiteQueueStore(tmp_path)
        try:
            return await commit_bytes(store, small), await commit_bytes(store, big)
        finally:
            await store.close()

    async def second(ids: tuple[str, str]) -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            assert sorted(m.id for m in store.list_messages()) == sorted(ids)
            assert read_all(store, ids[0]) == small
            assert read_all(store, ids[1]) == big
            third = await commit_bytes(store, small)  # the reopened store keeps working
            assert len(store.list_messages()) == 3 and third not in ids
        finally:
            await store.close()

    ids = asyncio.run(first())
    asyncio.run(second(ids))


def test_startup_recovery_removes_orphans_and_reports_lost_bodies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def first() -> tuple[str, str]:
        store = SQLiteQueueStore(tmp_path, inline_limit=10)
        try:
            return await commit_bytes(store, body_of(100)), await commit_bytes(store, body_of(200))
        finally:
            await store.close()

    keep, lose = asyncio.run(first())
    spool = tmp_path / "spool"
    (spool / "deadbeefdeadbeef.tmp").write_bytes(b"half a message")
    (spool / "1ZZZZZZZZZZZZZZZ.msg").write_bytes(b"renamed but never committed")
    (spool / f"{lose}.msg").unlink()

    async def second() -> None:
        with caplog.at_level(logging.INFO, logger="mailwright.queue.sqlite"):
            store = SQLiteQueueStore(tmp_path)
        try:
            assert spool_files(tmp_path) == [f"{keep}.msg"]
            assert {m.id for m in store.list_messages()} == {keep, lose}  # reported, not dropped
            with pytest.raises(FileNotFoundError):
                read_all(store, lose)
        finally:
            await store.close()

    asyncio.run(second())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(lose in e for e in errors), errors
    assert any("orphan" in r.getMessage() for r in caplog.records)


def test_one_writer_process_but_operators_may_read(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            with pytest.raises(QueueLocked):
                SQLiteQueueStore(tmp_path)
            qid = await commit_bytes(store, body_of(100))
            operator = SQLiteQueueStore(tmp_path, writer=False)
            assert [m.id for m in operator.list_messages()] == [qid]
            assert operator.hold(qid)
            assert store.get_message(qid).held  # type: ignore[union-attr]
            with pytest.raises(SMTPError):
                operator.open_message()
        finally:
            await store.close()
        again = SQLiteQueueStore(tmp_path)  # the lock is released by close()
        await again.close()

    asyncio.run(main())
    with pytest.raises(FileNotFoundError):
        SQLiteQueueStore(tmp_path / "missing", writer=False)
    assert not (tmp_path / "missing").exists()


def test_commit_after_close_is_refused_and_close_drains(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        writers = []
        for i in range(20):
            w = store.open_message()
            w.write(body_of(100, tag=str(i).encode()))
            writers.append(w)
        tasks = [asyncio.ensure_future(store.commit(w, envelope())) for w in writers]
        await asyncio.sleep(0)  # all 20 jobs are queued, none necessarily committed
        await store.close()
        ids = [t.result() for t in tasks]  # close() waited for every queued job
        assert len(set(ids)) == 20
        late = store.open_message
        with pytest.raises(SMTPError) as info:
            late()
        assert info.value.reply == R.SHUTTING_DOWN
        assert len(store.list_messages()) == 20  # the operator API still reads after close

    asyncio.run(main())


def test_null_sender_and_envelope_without_received_at(tmp_path: Path) -> None:
    env = Envelope(sender="", recipients=(Recipient("bob@example.org"),))

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            qid = await commit_bytes(store, b"Subject: bounce\r\n\r\nx\r\n", env)
            got = store.get_envelope(qid)
            assert got is not None and got.sender == "" and got.received_at > 0
            assert got.recipients == (Recipient("bob@example.org"),)
            # What is absent is stored as NULL, not as the 0 it travels as (committer's NULLIF).
            db = sqlite3.connect(tmp_path / "queue.db")
            try:
                row = db.execute("SELECT auth_user, spool_name, typeof(body) FROM messages").fetchone()
                assert row == (None, None, "blob")
                got_rcpt = db.execute("SELECT notify, orcpt, state, next_attempt FROM recipients").fetchone()
                assert got_rcpt == (None, None, "queued", got.received_at)  # the state is a literal
            finally:
                db.close()
            with pytest.raises(ValueError):
                await commit_bytes(store, b"x", Envelope("a@b", ()))
        finally:
            await store.close()

    asyncio.run(main())


def test_optional_text_that_reads_0_is_kept_as_text(tmp_path: Path) -> None:
    """An absent optional text travels to SQLite as the integer 0 and is stored as NULL; a present
    one that happens to be "0" (a user name, say) must not be mistaken for it."""
    env = replace(envelope(), auth_user="0", recipients=(Recipient("bob@example.org", "0", "0"),))

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            qid = await commit_bytes(store, body_of(100), env)
            got = store.get_envelope(qid)
            assert got is not None and got.auth_user == "0"
            assert got.recipients == (Recipient("bob@example.org", "0", "0"),)
            db = sqlite3.connect(tmp_path / "queue.db")
            try:
                row = db.execute("SELECT typeof(auth_user), typeof(spool_name) FROM messages").fetchone()
                assert row == ("text", "null")
                got_rcpt = db.execute("SELECT typeof(notify), typeof(orcpt) FROM recipients").fetchone()
                assert got_rcpt == ("text", "text")
            finally:
                db.close()
        finally:
            await store.close()

    asyncio.run(main())


def test_free_space_reserve_refuses_with_452_and_keeps_nothing(tmp_path: Path) -> None:
    import os

    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path / "q", min_free=free * 4)
        try:
            with pytest.raises(SMTPError) as info:
                await commit_bytes(store, body_of(2000))
            assert (info.value.reply.code, info.value.reply.enhanced) == (452, "4.3.1")
            with pytest.raises(SMTPError):
                await commit_bytes(store, body_of(200_000))  # spilled: its spool file is removed
            assert store.list_messages() == []
            assert spool_files(tmp_path / "q") == []
            store.committer.min_free = 0  # space "returns"
            queued = await commit_bytes(store, body_of(2000))
            assert [m.id for m in store.list_messages()] == [queued]
        finally:
            await store.close()

    asyncio.run(main())


OLD_IDS = ("0003ARBJ0000000", "0003ARBJ0000001", "0003ARBJ2000000")  # the 16-character form


def old_queue(tmp_path: Path, version: int) -> sqlite3.Connection:
    """A queue database made by migrations 1 to `version` only, as an earlier release left it."""
    db = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for number in range(1, version + 1):
        db.executescript(
            f"BEGIN; {sqlite_mod._MIGRATIONS[number - 1]}; PRAGMA user_version = {number}; COMMIT;"
        )
    return db


def test_a_version_1_queue_is_migrated_and_keeps_its_mail(tmp_path: Path) -> None:
    """Migration 2 drops the two secondary indexes of version 1, migration 3 renumbers the
    messages; what is queued stays readable under its new id."""
    old_id = OLD_IDS[0] + "0"
    db = old_queue(tmp_path, 1)
    db.execute(
        "INSERT INTO messages (id, sender, received_at, size, body) VALUES (?, ?, ?, ?, ?)",
        (old_id, "old@example.org", 100.0, 5, b"hello"),
    )
    db.execute(
        "INSERT INTO recipients (message_id, idx, address) VALUES (?, 0, ?)", (old_id, "r@example.net")
    )
    db.close()
    renumbered = queue_id_text(next_queue_number(0, 100.0))

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            new_id = await commit_bytes(store, body_of(200), envelope())
            assert [m.id for m in store.list_messages()] == [renumbered, new_id]
            assert read_all(store, renumbered) == b"hello"
            assert read_all(store, new_id) == body_of(200)
            assert store.get_message(old_id) is None
        finally:
            await store.close()

    asyncio.run(main())
    db = sqlite3.connect(tmp_path / "queue.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_mod.SCHEMA_VERSION == 3
        indexes = db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        assert indexes == []  # not even the autoindex a TEXT PRIMARY KEY made
    finally:
        db.close()


def test_a_version_2_queue_is_renumbered_by_arrival_and_keeps_everything(tmp_path: Path) -> None:
    """Three messages, two in one millisecond, one spilled to a file, one held, with delivery
    state on a recipient: all of it survives the rebuild of both tables."""
    db = old_queue(tmp_path, 2)
    arrivals = (100.0, 100.0, 100.5)
    for n, (old_id, when) in enumerate(zip(OLD_IDS, arrivals, strict=True)):
        spilled = n == 2
        db.execute(
            "INSERT INTO messages (id, sender, mail_params, client_ip, helo, auth_user, tls,"
            " received_at, size, held, spool_name, body) VALUES (?, ?, 'SIZE=9', '192.0.2.1',"
            " 'h.example', NULL, 1, ?, ?, ?, ?, ?)",
            (
                old_id,
                f"s{n}@example.org",
                when,
                9,
                int(n == 1),
                old_id + ".msg" if spilled else None,
                None if spilled else f"body {n}..".encode(),
            ),
        )
        for idx in range(2):
            db.execute(
                "INSERT INTO recipients (message_id, idx, address, notify, state, attempts, last_reply)"
                " VALUES (?, ?, ?, 'NEVER', ?, ?, ?)",
                (
                    old_id,
                    idx,
                    f"r{n}.{idx}@example.net",
                    "deferred" if idx else "queued",
                    idx * 3,
                    "451 4.4.1 later" if idx else None,
                ),
            )
    db.close()
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / (OLD_IDS[2] + ".msg")).write_bytes(b"body 2..")
    base = next_queue_number(0, 100.0)
    expected = [queue_id_text(base), queue_id_text(base + 1), queue_id_text(next_queue_number(0, 100.5))]

    store = SQLiteQueueStore(tmp_path, writer_thread=False)
    try:
        listed = store.list_messages()
        assert [m.id for m in listed] == expected
        assert [m.sender for m in listed] == ["s0@example.org", "s1@example.org", "s2@example.org"]
        assert [m.held for m in listed] == [False, True, False]
        for n, qid in enumerate(expected):
            assert read_all(store, qid) == f"body {n}..".encode()
            env = store.get_envelope(qid)
            assert env is not None and env.received_at == arrivals[n] and env.tls
            assert (env.mail_params, env.client_ip, env.helo) == ("SIZE=9", "192.0.2.1", "h.example")
            assert [(r.address, r.notify) for r in env.recipients] == [
                (f"r{n}.0@example.net", "NEVER"),
                (f"r{n}.1@example.net", "NEVER"),
            ]
        states = [(r.state, r.attempts, r.last_reply) for r in listed[0].recipients]
        assert states == [(RecipientState.QUEUED, 0, None), (RecipientState.DEFERRED, 3, "451 4.4.1 later")]
        assert spool_files(tmp_path) == [OLD_IDS[2] + ".msg"]  # still referenced: not swept
        assert store.delete(expected[0])  # the foreign key still cascades
    finally:
        store.close_writer_role()
    db = sqlite3.connect(tmp_path / "queue.db")
    try:
        db.execute("PRAGMA foreign_keys = ON")
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM recipients").fetchone() == (4,)
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        assert tables == [("messages",), ("recipients",)]
        (child_sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'recipients'").fetchone()
        assert 'REFERENCES "messages"(id)' in child_sql or "REFERENCES messages(id)" in child_sql
    finally:
        db.close()


def test_a_queue_of_a_newer_schema_is_refused_with_a_fix(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "queue.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(QueueUnusable, match=r"schema version 99, newer than this build's 3 .*fix:"):
        SQLiteQueueStore(tmp_path)
    again = sqlite3.connect(tmp_path / "queue.db")  # untouched, and the directory lock was let go
    assert again.execute("PRAGMA user_version").fetchone() == (99,)
    again.close()
    with pytest.raises(QueueUnusable):
        SQLiteQueueStore(tmp_path)  # a second attempt meets the same refusal, not QueueLocked


def test_a_migration_that_fails_leaves_the_queue_as_it_was(tmp_path: Path) -> None:
    db = old_queue(tmp_path, 2)
    db.execute(
        "INSERT INTO messages (id, sender, received_at, size, body) VALUES (?, 's@x', 100.0, 1, x'58')",
        (OLD_IDS[0],),
    )
    db.execute("CREATE TABLE messages_3 (x)")  # in the way of migration 3
    db.close()
    unchanged = r"cannot migrate .* to schema version 3: .*fix: the database is unchanged"
    with pytest.raises(QueueUnusable, match=unchanged):
        SQLiteQueueStore(tmp_path)
    db = sqlite3.connect(tmp_path / "queue.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        assert db.execute("SELECT id FROM messages").fetchall() == [(OLD_IDS[0],)]
    finally:
        db.close()


def test_an_sqlite_too_old_for_the_schema_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 22, 0))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.22.0")
    with pytest.raises(QueueUnusable, match=r"SQLite 3\.22\.0 cannot set up .*3\.26\.0 or newer .*fix:"):
        SQLiteQueueStore(tmp_path / "q")


def test_the_listing_is_in_order_of_arrival_to_the_millisecond_then_of_commit(tmp_path: Path) -> None:
    """The listing follows the queue numbers, which the writer gives in arrival order to the
    millisecond (`next_queue_number`). Arrivals within one millisecond, and an arrival stamped
    earlier than one already committed (a clock stepped back), keep their order of commit."""
    same_ms = [100.0 + k / 10_000_000 for k in (5, 2, 7, 0)]
    later = [100.5, 100.25, 101.0]  # 100.25 is committed after 100.5, so it is listed after it

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            ids = [
                await commit_bytes(store, body_of(100), replace(envelope(), received_at=when))
                for when in same_ms + later
            ]
            listed = store.list_messages()
            assert [m.id for m in listed] == ids
            assert [m.received_at for m in listed] == same_ms + later
        finally:
            await store.close()

    asyncio.run(main())


def test_the_listing_reads_a_page_at_a_time_and_misses_nothing(tmp_path: Path) -> None:
    """`iter_messages` pages on the queue numbers: every message once, each with exactly its own
    recipients (pages end between messages, never inside one's recipients), including messages
    committed while the listing is under way; and no read transaction stays open between pages,
    so a checkpoint can empty the WAL while a consumer is slow."""

    async def main() -> None:
        store = SQLiteQueueStore(tmp_path)
        try:
            ids = [await commit_bytes(store, body_of(100), envelope(n_rcpt=1 + k % 4)) for k in range(10)]
            listing = store.iter_messages(page=3)
            first = [next(listing) for _ in range(4)]  # two pages read
            gone = ids[6]
            assert store.delete(gone)
            ids.append(await commit_bytes(store, body_of(100), envelope(n_rcpt=2)))
            conn = sqlite3.connect(tmp_path / "queue.db")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.close()
            assert busy == 0, "a read transaction was left open between pages"
            assert (tmp_path / "queue.db-wal").stat().st_size == 0
            listed = first + list(listing)
            assert [m.id for m in listed] == [i for i in ids if i != gone]
            for info in listed:
                assert info == store.get_message(info.id)
            assert [len(m.recipients) for m in listed[:6]] == [1, 2, 3, 4, 1, 2]
            assert [r.address for r in listed[3].recipients] == [f"r{k}@example.net" for k in range(4)]
            assert store.get_message(gone) is None
        finally:
            await store.close()

    asyncio.run(main())


def test_the_wal_a_reader_let_grow_is_given_back_once_it_ends(tmp_path: Path) -> None:
    """A reader that holds a snapshot (an operator's `sqlite3` shell, a backup) keeps every
    checkpoint from reaching the WAL's start, so the WAL grows with every commit meanwhile: SQLite
    allows no other way, the reader may need any page. Once it ends, the writer's next
    auto-checkpoint completes, the next commit starts the WAL over, and `journal_size_limit`
    cuts the file back: the disk space comes back without a restart or an operator."""
    limit = sqlite_mod.WAL_SIZE_LIMIT
    body = body_of(60_000)  # inline (under the 64 KiB spill limit): every commit writes ~15 pages
    wal = tmp_path / "queue.db-wal"

    async def main() -> tuple[int, int]:
        store = SQLiteQueueStore(tmp_path)
        try:
            await commit_bytes(store, body)
            reader = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
            try:
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM messages").fetchone()
                for _ in range(250):  # ~15 MB of WAL frames, one commit at a time
                    await commit_bytes(store, body)
                grown = wal.stat().st_size
            finally:
                reader.close()
            for _ in range(3):  # a checkpoint that completes, then a commit that restarts the WAL
                await commit_bytes(store, body)
            return grown, wal.stat().st_size
        finally:
            await store.close()

    grown, after = asyncio.run(main())
    print(f"WAL: {grown} bytes while the reader held its snapshot, {after} after it ended")
    assert grown > 1.5 * limit, f"the WAL grew to only {grown} bytes while the reader held its snapshot"
    assert after <= limit, f"{after} bytes of WAL after the reader ended (limit {limit})"


def test_the_queue_directory_is_private(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Mail is nobody else's to read: a new queue directory is made 0700, and one that others could
    enter (made by an older build, which left queue.db 0644 in a 0755 directory) is made so."""
    fresh = SQLiteQueueStore(tmp_path / "new")
    fresh.close_writer_role()
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="mailwright.queue.sqlite"):
        store = SQLiteQueueStore(old)
        store.close_writer_role()
    assert old.stat().st_mode & 0o777 == 0o700
    assert f"queue directory {old}: mode 755 -> 700" in caplog.text
