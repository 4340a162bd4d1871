"""Load from Postfix's smtp-source: parallel sessions, connection reuse, many recipients.

smtp-source (Postfix's load generator, written in C) aborts with a non-zero exit on the
first reply it did not expect, so exit 0 means every one of its transactions got a 250.
Each test also counts what the queue database gained: exactly one queued message per
message sent, no more (no duplicates) and no fewer (no 250 without a stored message).
RFCs: 5321 (HELO sessions, 4.5.2 dot-stuffing, 4.1.4 HELO before MAIL).
Not responsible for: throughput numbers (bench/ measures those); runs are bounded at 60 s.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from .conftest import HOST, QueueWatch, spawn, tool_path, unfolded_headers


def smtp_source(srv: spawn.SpawnedServer, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [tool_path("smtp-source"), *args, f"{HOST}:{srv.ports['mx']}"],
        capture_output=True,
        timeout=60,
    )


def _assert_all_to(new: dict[str, list[str]], count: int, rcpt: str) -> None:
    assert len(new) == count, f"{len(new)} messages queued for {count} sent"
    assert all(rcpts == [rcpt] for rcpts in new.values()), Counter(tuple(r) for r in new.values())


def test_twenty_parallel_sessions(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = smtp_source(
        server, "-s", "20", "-m", "2000", "-l", "1024", "-f", "a@example.org", "-t", "bob@mx.test"
    )
    assert res.returncode == 0, res.stderr.decode()
    new = watch.new()
    _assert_all_to(new, 2000, "bob@mx.test")
    stored = server.body(next(iter(new)))
    headers = unfolded_headers(stored)
    assert headers[0].startswith("Received: from ") and " with SMTP" in headers[0], headers[0]
    assert "From: <a@example.org>" in headers
    assert len(stored.partition(b"\r\n\r\n")[2]) >= 1024


def test_reused_connections_with_counter(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = smtp_source(
        server, "-c", "-d", "-s", "10", "-m", "1000", "-l", "1024", "-f", "a@example.org", "-t", "bob@mx.test"
    )
    assert res.returncode == 0, res.stderr.decode()
    # -c prints a running count of completed DATA commands, "\r"-separated.
    counts = res.stdout.replace(b"\n", b"").split(b"\r")
    assert int(counts[-1] or counts[-2]) == 1000, res.stdout[-80:]
    _assert_all_to(watch.new(), 1000, "bob@mx.test")


def test_many_recipients_per_transaction(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = smtp_source(
        server,
        "-d",
        "-s",
        "4",
        "-m",
        "100",
        "-r",
        "25",
        "-M",
        "[127.0.0.1]",
        "-t",
        "bob@mx.test",
        "-f",
        "a@example.org",
    )
    assert res.returncode == 0, res.stderr.decode()
    new = watch.new()
    assert len(new) == 100
    # Without -N smtp-source numbers the recipients 25, 24, ... 2 and then the plain address.
    expected = [f"{i}bob@mx.test" for i in range(25, 1, -1)] + ["bob@mx.test"]
    assert all(rcpts == expected for rcpts in new.values())
    received = unfolded_headers(server.body(next(iter(new))))[0]
    assert received.startswith("Received: from [127.0.0.1] ([127.0.0.1])"), received
    assert "for <" not in received


def test_preformatted_message_round_trips(
    server: spawn.SpawnedServer, watch: QueueWatch, tmp_path: Path
) -> None:
    # smtp-source dot-stuffs lines that start with "." and turns LF into CRLF; it also sends
    # one empty line of its own before the final "." (seen on the wire against a raw socket).
    text = "Subject: dots\nX-Test: preformatted\n\n.hidden\n..two\n.\nnot the end\n" + "z" * 900 + "\n"
    path = tmp_path / "msg.txt"
    path.write_text(text)
    res = smtp_source(
        server, "-s", "2", "-m", "10", "-F", str(path), "-f", "a@example.org", "-t", "bob@mx.test"
    )
    assert res.returncode == 0, res.stderr.decode()
    new = watch.new()
    _assert_all_to(new, 10, "bob@mx.test")
    for qid in new:
        stored = server.body(qid)
        body = text.replace("\n", "\r\n").encode().partition(b"\r\n\r\n")[2]
        assert stored.endswith(b"\r\n\r\n" + body + b"\r\n")
        assert b"X-Test: preformatted\r\n" in stored


def test_foreign_recipient_aborts_the_run(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = smtp_source(server, "-s", "5", "-m", "50", "-f", "a@example.org", "-t", "victim@example.org")
    assert res.returncode != 0
    assert b"554 5.7.1" in res.stderr, res.stderr
    assert watch.new() == {}


def test_old_mode_without_helo_is_refused(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    # -o skips HELO; RFC 5321 4.1.4 requires it before a mail transaction.
    res = smtp_source(server, "-o", "-m", "1", "-f", "a@example.org", "-t", "bob@mx.test")
    assert res.returncode != 0
    assert b"503 5.5.1" in res.stderr, res.stderr
    assert watch.new() == {}


@pytest.mark.parametrize("size", [1, 200_000])
def test_message_sizes(server: spawn.SpawnedServer, watch: QueueWatch, size: int) -> None:
    res = smtp_source(
        server, "-s", "3", "-m", "30", "-l", str(size), "-f", "a@example.org", "-t", "bob@mx.test"
    )
    assert res.returncode == 0, res.stderr.decode()
    new = watch.new()
    _assert_all_to(new, 30, "bob@mx.test")
    body = server.body(next(iter(new))).partition(b"\r\n\r\n")[2]
    assert size <= len(body) <= size + 4096
