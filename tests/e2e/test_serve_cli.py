"""The `mailwright` command as an operator meets it: serve, config check, queue list.

A broken configuration makes `serve` exit 2 with one line that names file:line and no traceback;
`config check` accepts the configuration the tests run with; `queue list` shows what a running
server has queued, in the mailq layout with its summary line.

Not covered here: every configuration error message (tests/config).
"""

from __future__ import annotations

import os
import re
import smtplib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import QUEUED, ServerFactory


def serve(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright.cli.main", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('hostname = "mx.test"\n\n[limits]\nmax_recipients = "lots"\n', 4),
        ('hostname = "mx.test"\nstate_dir = "STATE"\n[limits\nmax_recipients = 5\n', 3),
        ('hostname = "mx.test"\n\n[[listeners]]\nrole = "mx"\nport = 99999\n', 5),
    ],
    ids=["wrong-type", "toml-syntax", "bad-port"],
)
def test_serve_with_broken_config_exits_2_with_one_line(tmp_path: Path, text: str, line: int) -> None:
    config = tmp_path / "broken.toml"
    config.write_text(text.replace("STATE", str(tmp_path / "state")))
    done = serve(config)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert re.match(rf"^{re.escape(str(config))}:{line}: ", output), output
    assert not (tmp_path / "state").exists(), "a refused configuration must not create state"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("below", ["", "sub"], ids=["is-a-file", "under-a-file"])
def test_a_state_dir_from_the_environment_that_a_file_blocks_gets_a_fix(
    tmp_path: Path, workers: int, below: str
) -> None:
    # Before: "cannot start: [Errno 17] File exists: '...'" and nothing to do about it.  A path
    # written in the file is refused by the loader (tests/config); this one comes from outside it.
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    config = tmp_path / "mailwright.toml"
    config.write_text(
        f'workers = {workers}\n[[listeners]]\nrole = "mx"\naddress = "127.0.0.1"\nport = 2687\n'
    )
    done = serve(config, env={**os.environ, "MAILWRIGHT_STATE_DIR": str(blocker / below)})
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert output.endswith(
        f"{blocker / below}' (fix: a file stands where mailwright makes a directory: move it, or"
        " choose another state_dir or MAILWRIGHT_STATE_DIR)"
    ), output


def test_config_check_accepts_the_test_config(make_server: ServerFactory) -> None:
    srv = make_server("check", start=False)
    done = srv.cli("config", "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK"), done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_queue_list_shows_queued_messages(make_server: ServerFactory) -> None:
    srv = make_server("listing")
    empty = srv.cli("queue", "list")
    assert empty.returncode == 0 and empty.stdout.strip() == "Mail queue is empty", empty
    ids = []
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        smtp.ehlo("lister.test")
        for n, rcpt in enumerate(["bob@mx.test", "carol@mx.test"]):
            smtp.mail(f"sender{n}@client.test")
            smtp.rcpt(rcpt)
            code, text = smtp.data(f"Subject: list {n}\r\n\r\nbody {n}\r\n".encode())
            match = QUEUED.search(text.decode())
            assert code == 250 and match, (code, text)
            ids.append(match.group(1))
    done = srv.cli("queue", "list")  # while the server still runs
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for n, (queue_id, rcpt) in enumerate(zip(ids, ["bob@mx.test", "carol@mx.test"], strict=True)):
        head = next(i for i, text in enumerate(lines) if text.startswith(queue_id))
        assert lines[head].endswith(f"sender{n}@client.test"), lines[head]
        assert lines[head + 1].split() == [rcpt, "[queued]"], lines[head + 1]
    assert re.fullmatch(r"-- \d+ KB in 2 messages\.", lines[-1]), lines[-1]
    assert sorted(ids) == sorted(srv.queued())


@pytest.mark.parametrize("workers", [1, 2])
def test_second_server_on_the_same_queue_or_port_exits_1_with_a_fix(
    make_server: ServerFactory, workers: int
) -> None:
    srv = make_server(workers=workers)
    # Same config: the queue directory is locked by the running server.
    same = serve(srv.config)
    assert same.returncode == 1
    assert "Traceback" not in same.stdout + same.stderr
    assert "is in use by another process" in same.stderr and "fix:" in same.stderr
    # Own state directory but the same ports: the bind fails, and the message says what to do.
    other = srv.root / "other.toml"
    other.write_text(srv.config.read_text().replace(str(srv.root / "state"), str(srv.root / "state2")))
    clash = serve(other)
    assert clash.returncode == 1
    assert "Traceback" not in clash.stdout + clash.stderr
    assert "address already in use" in clash.stderr and "fix:" in clash.stderr


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("kind", "says"),
    [("newer", "has schema version 99, newer than"), ("garbage", "file is not a database")],
)
def test_a_queue_this_build_cannot_use_exits_1_with_a_fix(
    make_server: ServerFactory, workers: int, kind: str, says: str
) -> None:
    """A queue left by a newer mailwright (a downgrade), or a file that is no database: one line
    that names the queue's database and a fix, no traceback, and not mistaken for the user
    database."""
    srv = make_server(f"{kind}{workers}", workers=workers, start=False)
    srv.queue_db.parent.mkdir(parents=True)
    if kind == "newer":
        db = sqlite3.connect(srv.queue_db)
        db.execute("PRAGMA user_version = 99")
        db.close()
    else:
        srv.queue_db.write_bytes(b"this is not a database" * 100)
    done = serve(srv.config)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    (line,) = [text for text in output.splitlines() if "cannot start" in text]
    assert says in line and str(srv.queue_db) in line and "fix:" in line, line
    assert "user database" not in line
