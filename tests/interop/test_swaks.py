"""Interop with swaks (Debian 20201014): STARTTLS + SASL, implicit TLS, MX, PIPELINING, big bodies.

swaks is a real, independent SMTP client written in Perl with Net::SSLeay for TLS; each
test runs it as a subprocess against the spawned server and checks its exit code (0 only
when the whole transaction succeeded), the replies it printed, and the queue contents.
RFCs: 3207, 4954, 8314, 2920 (PIPELINING), 5321 4.5.2 (dot-stuffing of big bodies).
Not responsible for: swaks' own option parsing quirks beyond what the tests need.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import HOST, OTHER_HOST, PASSWORD, USER, QueueWatch, spawn, tool_path, unfolded_headers


def swaks(srv: spawn.SpawnedServer, port_name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool_path("swaks"),
            "--server",
            HOST,
            "--port",
            str(srv.ports[port_name]),
            "--helo",
            "client.test",
            "--timeout",
            "30",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def tls_args(srv: spawn.SpawnedServer) -> list[str]:
    return ["--tls-verify", "--tls-ca-path", str(srv.ca_file)]


def auth_args(mech: str) -> list[str]:
    return ["--auth", mech, "--auth-user", USER, "--auth-password", PASSWORD]


def received(srv: spawn.SpawnedServer, qid: str) -> str:
    return next(h for h in unfolded_headers(srv.body(qid)) if h.startswith("Received:"))


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_submission_starttls_auth(server: spawn.SpawnedServer, watch: QueueWatch, mech: str) -> None:
    res = swaks(
        server,
        "submission",
        "--tls",
        *tls_args(server),
        *auth_args(mech),
        "--from",
        USER,
        "--to",
        "bob@mx.test",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "=== TLS started with cipher" in res.stdout
    assert re.search(r"^<~  235 2\.7\.0 ", res.stdout, re.M), res.stdout
    qid, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]
    assert re.search(rf"^<~  250 2\.0\.0 .*{qid}", res.stdout, re.M), "the 250 names the queue id"
    assert "with ESMTPSA" in received(server, qid)


def test_submissions_tls_on_connect(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = swaks(
        server,
        "submissions",
        "--tlsc",
        *tls_args(server),
        *auth_args("PLAIN"),
        "--from",
        USER,
        "--to",
        "bob@mx.test",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "STARTTLS" not in res.stdout
    qid, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]
    assert "with ESMTPSA" in received(server, qid)


def test_submission_without_tls_cannot_auth(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    # swaks forced to AUTH in clear: the server does not offer it, so swaks gives up (exit 28).
    res = swaks(server, "submission", *auth_args("PLAIN"), "--from", USER, "--to", "bob@mx.test")
    assert res.returncode != 0, res.stdout
    assert watch.new() == {}


def test_mx_unauthenticated_local_recipient(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = swaks(server, "mx", "--from", "someone@example.org", "--to", "bob@mx.test")
    assert res.returncode == 0, res.stdout + res.stderr
    qid, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]
    assert " with ESMTP;" in received(server, qid) or " with ESMTP " in received(server, qid)


def test_mx_opportunistic_starttls(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = swaks(
        server, "mx", "--tls", *tls_args(server), "--from", "someone@example.org", "--to", "bob@mx.test"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "AUTH" not in res.stdout.split("=== TLS started", 1)[1].split("MAIL FROM", 1)[0]
    qid, _ = watch.only_new()
    assert "with ESMTPS" in received(server, qid)


@pytest.mark.parametrize("source", [HOST, OTHER_HOST])
def test_mx_foreign_recipient_refused(server: spawn.SpawnedServer, watch: QueueWatch, source: str) -> None:
    res = swaks(server, "mx", "--local-interface", source, "--from", "a@example.org", "--to", "x@example.org")
    assert res.returncode == 24, res.stdout  # swaks: "error in RCPT"
    assert re.search(r"^<\*\* 554 5\.7\.1 ", res.stdout, re.M), res.stdout
    assert watch.new() == {}


def test_pipelining(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    res = swaks(
        server,
        "mx",
        "--pipeline",
        "--from",
        "a@example.org",
        "--to",
        "bob@mx.test,x@example.org,carol@relay.test",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(" -> MAIL FROM"))
    # The whole envelope and DATA went out in one batch before the first reply came back.
    assert [line.split(":")[0] for line in lines[start : start + 5]] == [
        " -> MAIL FROM",
        " -> RCPT TO",
        " -> RCPT TO",
        " -> RCPT TO",
        " -> DATA",
    ], lines[start : start + 5]
    replies = [line[:14] for line in lines[start + 5 : start + 10]]
    assert replies == [
        "<-  250 2.1.0 ",
        "<-  250 2.1.5 ",
        "<** 554 5.7.1 ",
        "<-  250 2.1.5 ",
        "<-  354 End da",
    ], replies
    _, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test", "carol@relay.test"]


def test_pipelining_with_no_valid_recipient_queues_nothing(
    server: spawn.SpawnedServer, watch: QueueWatch
) -> None:
    res = swaks(server, "mx", "--pipeline", "--from", "a@example.org", "--to", "x@example.org,y@example.net")
    assert res.returncode != 0, res.stdout
    assert len(re.findall(r"^<\*\* 554 5\.7\.1 ", res.stdout, re.M)) == 2, res.stdout
    # DATA after no accepted recipient must not open a message (RFC 2920 3.1: 503/554).
    assert not re.search(r"^<-  354 ", res.stdout, re.M), res.stdout
    assert watch.new() == {}


def test_five_megabyte_body(server: spawn.SpawnedServer, watch: QueueWatch, tmp_path: Path) -> None:
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/\r\n"
    body = bytearray(b"Subject: big one\r\nContent-Type: application/octet-stream\r\n\r\n")
    n = 0
    while len(body) < 5 * 1024 * 1024:
        # Every 1000th line starts with a dot: dot-stuffing must be undone on the way in.
        body += (b"." if n % 1000 == 0 else b"") + b"%07d " % n + line
        n += 1
    path = tmp_path / "big.eml"
    path.write_bytes(bytes(body))
    res = swaks(
        server,
        "submission",
        "--tls",
        *tls_args(server),
        *auth_args("PLAIN"),
        "--pipeline",
        "--suppress-data",
        "--from",
        USER,
        "--to",
        "bob@mx.test",
        "--data",
        f"@{path}",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    qid, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]
    stored = server.body(qid)
    assert len(stored) > 5 * 1024 * 1024
    # The server prepends Received and adds Message-ID/Date; the rest is byte-identical.
    # (swaks itself ends the data with one extra CRLF.)
    head, _, rest = stored.partition(b"\r\n\r\n")
    assert rest == bytes(body).partition(b"\r\n\r\n")[2] + b"\r\n"
    assert b"Subject: big one" in head and b"Message-ID:" in head


def test_body_file_via_body_option(server: spawn.SpawnedServer, watch: QueueWatch, tmp_path: Path) -> None:
    path = tmp_path / "body.txt"
    text = "".join(f"line {i} " + "z" * 60 + "\n" for i in range(70000))  # ~5 MB
    path.write_text(text)
    res = swaks(
        server,
        "submission",
        "--tls",
        *tls_args(server),
        *auth_args("LOGIN"),
        "--suppress-data",
        "--from",
        USER,
        "--to",
        "bob@mx.test",
        "--body",
        f"@{path}",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    qid, _ = watch.only_new()
    stored = server.body(qid)
    assert len(stored) > 5_000_000
    assert stored.replace(b"\r\n", b"\n").rstrip(b"\n").endswith(text.encode().rstrip(b"\n"))
