"""`mailwright queue` subcommands: output, exit codes, no tracebacks."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from queue_helpers import body_of, commit_bytes, envelope

from mailwright.cli import queue_cmd
from mailwright.queue.model import Envelope, Recipient
from mailwright.queue.sqlite import SQLiteQueueStore

UNKNOWN = "0000000000000"  # a queue id, of no message here


@pytest.fixture
def queue_dir(tmp_path: Path) -> tuple[Path, str, str]:
    """A queue with a small message to two recipients and a 200 KB held one with a null sender."""

    async def build() -> tuple[str, str]:
        store = SQLiteQueueStore(tmp_path)
        try:
            small = await commit_bytes(store, body_of(1500, tag=b"hello"), envelope(n_rcpt=2))
            big = await commit_bytes(
                store, body_of(200_000, tag=b"big"), Envelope("", (Recipient("postmaster@example.org"),))
            )
            store.hold(big)
            return small, big
        finally:
            await store.close()

    small, big = asyncio.run(build())
    return tmp_path, small, big


def cli(*argv: str) -> int:
    return queue_cmd.main(list(argv))


def test_list_is_like_mailq(queue_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    qdir, small, big = queue_dir
    assert cli("list", "--queue-dir", str(qdir)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    small_line = next(line for line in lines if line.startswith(small))
    big_line = next(line for line in lines if line.startswith(big))
    assert small_line.startswith(small + " ") and small_line.endswith("alice@example.org")
    assert " 1500 " in small_line
    assert big_line.startswith(big + "!") and big_line.endswith("<>")
    assert " 200000 " in big_line
    assert any(line.strip() == "r0@example.net  [queued]" and line.startswith(" " * 20) for line in lines)
    assert any(line.strip() == "r1@example.net  [queued]" for line in lines)
    assert lines[-1] == f"-- {(1500 + 200_000 + 1023) // 1024} KB in 2 messages."


def test_list_empty_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def build() -> None:
        await SQLiteQueueStore(tmp_path).close()

    asyncio.run(build())
    assert cli("list", "--queue-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out.strip() == "Mail queue is empty"


def test_show_prints_envelope_states_and_headers_only(
    queue_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    qdir, small, _ = queue_dir
    assert cli("show", small, "--queue-dir", str(qdir)) == 0
    out = capsys.readouterr().out
    assert f"Queue ID:     {small}" in out
    assert "Sender:       <alice@example.org> SIZE=123 BODY=8BITMIME" in out
    assert "[127.0.0.1] HELO client.example.org, TLS, authenticated as alice" in out
    assert "<r1@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r1@example.net" in out
    assert "queued, 0 attempt(s)" in out
    assert "Subject: test hello\nFrom: alice@example.org" in out
    assert "abcdefghij" not in out  # the body text is not shown without --body


def test_show_body_prints_the_whole_message(
    queue_dir: tuple[Path, str, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    qdir, _, big = queue_dir
    assert cli("show", big, "--body", "--queue-dir", str(qdir)) == 0
    assert capsysbinary.readouterr().out == body_of(200_000, tag=b"big")


def test_hold_release_delete(queue_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    qdir, small, big = queue_dir
    assert cli("hold", small, "--queue-dir", str(qdir)) == 0
    assert cli("release", big, "--queue-dir", str(qdir)) == 0
    assert capsys.readouterr().out.splitlines() == [f"{small}: held", f"{big}: released"]
    store = SQLiteQueueStore(qdir, writer=False)
    assert store.get_message(small).held and not store.get_message(big).held  # type: ignore[union-attr]
    assert cli("delete", big, "--queue-dir", str(qdir)) == 0
    assert store.get_message(big) is None
    assert not (qdir / "spool" / f"{big}.msg").exists()


@pytest.mark.parametrize(
    "unknown", [UNKNOWN, "../../etc/passwd", "0123456789ABCDEF"], ids=["id", "path", "old-form"]
)
@pytest.mark.parametrize("command", ["show", "hold", "release", "delete"])
def test_unknown_id_exits_1_naming_it(
    queue_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], command: str, unknown: str
) -> None:
    qdir, _, _ = queue_dir
    assert cli(command, unknown, "--queue-dir", str(qdir)) == 1
    captured = capsys.readouterr()
    assert unknown in captured.err and captured.out == ""
    assert len(SQLiteQueueStore(qdir, writer=False).list_messages()) == 2


def test_an_id_typed_in_lower_case_is_found(
    queue_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    qdir, small, _ = queue_dir
    assert cli("hold", small.lower(), "--queue-dir", str(qdir)) == 0
    info = SQLiteQueueStore(qdir, writer=False).get_message(small)
    assert info is not None and info.held


def test_missing_queue_and_missing_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("list", "--queue-dir", str(tmp_path / "nowhere")) == 1
    assert "no queue in" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()  # looking never creates a queue
    assert cli("list") == 2
    assert "--queue-dir" in capsys.readouterr().err


def test_register_and_run_with_queue_dir_from_elsewhere(
    queue_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    qdir, small, _ = queue_dir
    parser = argparse.ArgumentParser(prog="mailwright")
    queue_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["queue", "hold", small])
    assert args.func is not None and args.queue_dir is None
    assert queue_cmd.run(args, qdir) == 0  # e.g. the queue dir taken from config
    assert capsys.readouterr().out.strip() == f"{small}: held"


def test_subprocess_never_shows_a_traceback(queue_dir: tuple[Path, str, str]) -> None:
    qdir, small, _ = queue_dir
    base = [sys.executable, "-m", "mailwright.cli.queue_cmd"]
    ok = subprocess.run([*base, "list", "--queue-dir", str(qdir)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and small in ok.stdout
    bad = subprocess.run(
        [*base, "show", UNKNOWN, "--queue-dir", str(qdir)], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 1 and UNKNOWN in bad.stderr and "Traceback" not in bad.stderr
    (qdir / "queue.db").write_bytes(b"this is not a database" * 100)
    broken = subprocess.run(
        [*base, "list", "--queue-dir", str(qdir)], capture_output=True, text=True, timeout=30
    )
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "cannot read the queue" in broken.stderr


def test_unusable_queue_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: "cannot read the queue in DIR: file is not a database" and nothing to do about it.
    (tmp_path / "queue.db").write_text("this is not a database\n" * 100)
    assert cli("list", "--queue-dir", str(tmp_path)) == 1
    assert capsys.readouterr().err == (
        f"mailwright queue: cannot read the queue in {tmp_path}: file is not a database "
        "(fix: check that --queue-dir or queue.directory names a mailwright queue you may read)\n"
    )
