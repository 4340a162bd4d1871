"""What a remote client can put into the server's log and the operator's `queue list`/`queue show`.

A real `mailwright serve` (tests/spawn.py, a master and two workers) gets hostile values over raw
sockets, and its real log file and real CLI output are read back:
- envelope addresses with SMTPUTF8 (bidi overrides and isolates U+202E/U+2066, zero-width space,
  soft hyphen, ideographic space), quoted local parts with "%" formats and quotes, values the
  engine must refuse (CR, LF, ESC, NUL, C1 controls such as U+009B CSI, U+0085 NEL, U+2028,
  invalid UTF-8, a megabyte line), in the NOQUEUE lines of refused recipients and in the queue
  writer's line of a queued message;
- SASL identities (PLAIN, LOGIN, CRAM-MD5, failed and unknown users, one whose domain differs from
  the stored name by a soft hyphen that UTS 46 mapping drops, which names nobody, and one that
  differs by case, which authenticates and is logged beside the store's spelling), and that no
  password or CRAM-MD5 digest is ever logged;
- a TLS ClientHello whose server name (SNI) is not ASCII;
- `queue list` and `queue show` (headers with ESC, a bidi override and a bare CR included).

Each check: every log line carries the log's prefix (no client byte starts a line of its own), is
printable (no control, format or separator character arrives) and bounded, and the value is
still there, escaped as `log_format.printable` writes it.

Not responsible for: the escaping function itself (tests/test_log_format.py), the engine's
replies (tests/protocol).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import socket
import ssl
from collections.abc import Iterator

import pytest

import spawn

from .conftest import QUEUED, RawSMTP, log_size, wait_for_log

PREFIX = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) mailwright[\w.]*\[\d+\]: "
)
LONGEST_LINE = 4096  # a line holds at most three values of log_format.MAX_SHOWN (512) and a little
# What must never reach the log or a terminal: C0 and C1 controls, DEL, the bidi overrides and
# isolates, zero-width and other format characters, line and paragraph separators.
HOSTILE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2066-\u2069\u3000\ufeff]")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spawn.SpawnedServer]:
    server = spawn.make_server(tmp_path_factory.mktemp("logsafety") / "srv", workers=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def new_log(srv: spawn.SpawnedServer, since: int) -> list[str]:
    with srv.log.open("rb") as f:
        f.seek(since)
        return f.read().decode("utf-8").splitlines()


def assert_clean(lines: list[str]) -> None:
    """Every line is one of the server's own, printable and bounded."""
    assert lines
    for line in lines:
        assert PREFIX.match(line), f"a log line without the log's prefix: {line!r}"
        assert not HOSTILE.search(line), f"a control, format or separator character in {line!r}"
        assert line.isprintable(), f"a character that is not printable in {line!r}"
        assert len(line) <= LONGEST_LINE, f"a log line of {len(line)} characters"


def greet(port: int, source: str | None = None) -> RawSMTP:
    client = RawSMTP(port, source=source)
    assert client.reply()[0] == 220
    assert client.cmd("EHLO client.example")[0] == 250
    return client


def utf8_cmd(client: RawSMTP, line: str) -> tuple[int, str]:
    client.send(line.encode("utf-8") + b"\r\n")
    return client.reply()


# The sender, as the client writes it, and as the log and the CLI must show it.
SENDERS = [
    ("<\u202eevil.example@mx.test>", "\\u202eevil.example@mx.test"),
    ("<a\u2066b\u2069@mx.test>", "a\\u2066b\\u2069@mx.test"),
    ('<"zero\u200bwidth space"@mx.test>', '"zero\\u200bwidth space"@mx.test'),
    ("<soft\u00adhyphen@mx.test>", "soft\\xadhyphen@mx.test"),
    ('<"wide\u3000space"@mx.test>', '"wide\\u3000space"@mx.test'),
    ('<"%s%d%(x)s \\"q\\""@mx.test>', '"%s%d%(x)s \\"q\\""@mx.test'),
]
# Refused by the engine before anything is logged: they must stay refused, and leave no trace.
REFUSED = [
    b"MAIL FROM:<a\x1b[2Jb@mx.test>",
    b"MAIL FROM:<a\xc2\x9b31mb@mx.test> SMTPUTF8",
    b"MAIL FROM:<a\xc2\x85b@mx.test> SMTPUTF8",
    b"MAIL FROM:<a\xe2\x80\xa8b@mx.test> SMTPUTF8",
    b"MAIL FROM:<a\xffb@mx.test> SMTPUTF8",
    b"MAIL FROM:<a\x00b@mx.test>",
    b"MAIL FROM:<a\rb@mx.test>",
    b'MAIL FROM:<"a\\\x1bb"@mx.test>',
    b"EHLO a\x1b[31mb",
    b"EHLO a\xc2\x9bb",
    b"EHLO a\xe2\x80\xaeb",
    b"EHLO x\r2026-01-01 00:00:00,000 INFO mailwright.smtpd[1]: AUTH PLAIN ok for root",
    b"MAIL FROM:<" + b"a" * 1_000_000 + b"@mx.test>",
]


def test_envelope_values_reach_the_log_escaped_and_no_line_is_forged(srv: spawn.SpawnedServer) -> None:
    since = log_size(srv)
    client = greet(srv.ports["mx"])
    for raw in REFUSED:
        client.send(raw + b"\r\n")
        code, _ = client.reply()
        assert code in (500, 501, 553), (raw[:60], code)
        if raw.startswith(b"EHLO"):
            assert client.cmd("EHLO client.example")[0] == 250
    for sender, _ in SENDERS:
        assert utf8_cmd(client, f"MAIL FROM:{sender} SMTPUTF8")[0] == 250, sender
        # Refused (no relay), so the NOQUEUE line names the sender and this recipient.
        assert utf8_cmd(client, "RCPT TO:<to\u202e@elsewhere.example>")[0] == 554
        assert client.cmd("RSET")[0] == 250
    sender, shown = SENDERS[0]
    assert utf8_cmd(client, f"MAIL FROM:{sender} SMTPUTF8")[0] == 250
    assert client.cmd("RCPT TO:<alice@mx.test>")[0] == 250
    assert client.cmd("DATA")[0] == 354
    code, text = client.cmd("Subject: hi\r\n\r\nhello\r\n.")
    assert code == 250
    queue_id = QUEUED.search(text).group(1)  # type: ignore[union-attr]
    client.cmd("QUIT")
    client.close()
    committed = wait_for_log(srv, f"{queue_id}: from=", since=since)
    lines = new_log(srv, since)
    assert_clean(lines)
    refusals = [line for line in lines if "NOQUEUE: reject: RCPT" in line]
    assert len(refusals) == len(SENDERS), refusals
    for (_, expected), line in zip(SENDERS, refusals, strict=True):
        assert f"from=<{expected}> to=<to\\u202e@elsewhere.example>" in line, line
    assert f"from=<{shown}>, size=" in committed
    assert not any("ok for root" in line for line in lines)


def cram_response(user: str, challenge_b64: str, secret: str) -> tuple[str, str]:
    challenge = base64.b64decode(challenge_b64)
    digest = hmac.new(secret.encode(), challenge, hashlib.md5).hexdigest()
    return base64.b64encode(f"{user} {digest}".encode()).decode(), digest


def tls_client(srv: spawn.SpawnedServer, source: str) -> RawSMTP:
    """On the implicit-TLS listener, greeted, from `source` (each its own AUTH failure count)."""
    client = RawSMTP(srv.ports["submissions"], source=source)
    ctx = ssl.create_default_context(cafile=str(srv.ca_file))
    client.sock = ctx.wrap_socket(client.sock, server_hostname="mx.test")
    client.file = client.sock.makefile("rb")
    assert client.reply()[0] == 220
    assert client.cmd("EHLO client.example")[0] == 250
    return client


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode()


def test_sasl_identities_are_escaped_and_no_secret_is_logged(srv: spawn.SpawnedServer) -> None:
    since = log_size(srv)
    secrets = [spawn.PASSWORD, "wrong-password-1f3a", "wrong-password-77c2"]
    # A soft hyphen in the domain: UTS 46 mapping would drop it, but the domain is no U-label as
    # written (protocol.address), so it names nobody; alice in another case is alice, and is logged
    # as the store's user with the client's spelling beside it.
    client = tls_client(srv, "127.0.0.1")
    assert client.cmd("AUTH PLAIN " + b64(f"\0alice@mx.te\u00adst\0{spawn.PASSWORD}"))[0] == 535
    spoof = "alice@MX.Test"
    assert client.cmd("AUTH PLAIN " + b64(f"\0{spoof}\0{spawn.PASSWORD}"))[0] == 235
    assert client.cmd("MAIL FROM:<alice@mx.test>")[0] == 250
    assert client.cmd("RCPT TO:<bob@relay.test>")[0] == 250
    assert client.cmd("DATA")[0] == 354
    code, text = client.cmd("Subject: hi\r\n\r\nhello\r\n.")
    assert code == 250
    queue_id = QUEUED.search(text).group(1)  # type: ignore[union-attr]
    client.cmd("QUIT")
    client.close()
    # CRAM-MD5 as the same spelled user: the digest must not be logged either.
    client = tls_client(srv, "127.0.0.1")
    code, challenge = client.cmd("AUTH CRAM-MD5")
    assert code == 334
    response, digest = cram_response(spoof, challenge, spawn.PASSWORD)
    secrets.append(digest)
    assert client.cmd(response)[0] == 235
    client.cmd("QUIT")
    client.close()
    # Failures, each source address at most twice (the server locks an address out at three).
    client = tls_client(srv, "127.0.0.2")
    assert client.cmd("AUTH PLAIN " + b64(f"\u202eroot\0alice@mx.test\0{secrets[1]}"))[0] == 535
    assert client.cmd("AUTH PLAIN " + b64(f"\0alice@mx.test\u009b31m\u2028x\0{secrets[2]}"))[0] == 535
    client.close()
    client = tls_client(srv, "127.0.0.3")
    assert client.cmd("AUTH LOGIN")[0] == 334
    assert client.cmd(b64("bob\u0085\u2028@mx.test"))[0] == 334
    assert client.cmd(b64(secrets[1]))[0] == 535
    code, challenge = client.cmd("AUTH CRAM-MD5")
    assert code == 334
    response, digest = cram_response("nobody\u009b@mx.test", challenge, "guess")
    secrets.append(digest)
    assert client.cmd(response)[0] == 535
    client.close()
    committed = wait_for_log(srv, f"{queue_id}: from=", since=since)
    wait_for_log(srv, "AUTH CRAM-MD5 failed", since=since)
    lines = new_log(srv, since)
    assert_clean(lines)
    # Recorded as the store's user; the spelling the client wrote is shown beside it, escaped.
    assert committed.endswith(", auth=alice@mx.test"), committed
    oks = [line for line in lines if " ok for " in line]
    assert [line.split(": ", 1)[1] for line in oks] == [
        "AUTH PLAIN ok for alice@mx.test from 127.0.0.1 (written alice@MX.Test)",
        "AUTH CRAM-MD5 ok for alice@mx.test from 127.0.0.1 (written alice@MX.Test)",
    ]
    text = "\n".join(lines)
    for secret in secrets:
        assert secret not in text
        assert b64(secret) not in text
    shown = srv.cli("queue", "show", queue_id)
    assert shown.returncode == 0, shown.stderr
    assert "authenticated as alice@mx.test" in shown.stdout
    assert not HOSTILE.search(shown.stdout.replace("\n", ""))


def client_hello(server_name: bytes) -> bytes:
    """A real TLS ClientHello whose SNI is `server_name` (7 octets, spliced in place of a real one)."""
    assert len(server_name) == len(b"mx.test")
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="mx.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello.count(b"mx.test") == 1
    return hello.replace(b"mx.test", server_name)


def test_a_server_name_that_is_not_ascii_makes_one_prefixed_line(srv: spawn.SpawnedServer) -> None:
    since = log_size(srv)
    for name in (b"\xff\x1b[2J\r\n", b"\x1b]0;X\x07\xc2"):
        with socket.create_connection(("127.0.0.1", srv.ports["submissions"]), timeout=10) as sock:
            sock.sendall(client_hello(name))
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass
    wait_for_log(srv, "TLS handshake with 127.0.0.1 failed", since=since, count=2)
    lines = new_log(srv, since)
    assert_clean(lines)
    ignored = [line for line in lines if "Exception ignored in" in line]
    assert len(ignored) == 2 and "b'\\xff\\x1b[2J\\r\\n'" in ignored[0], lines


def test_queue_list_and_show_escape_what_the_client_wrote(srv: spawn.SpawnedServer) -> None:
    sender = "\u202eevil.example@mx.test"
    recipient = "b\u2066ob\u2069@mx.test"
    # BDAT, so that a bare CR reaches the stored header as it is.
    header = (
        "Subject: \u202eevil \x1b[2J\x1b]0;pwned\x07 over\rwritten\r\n"
        "X-C1: \u009b31m red\u2028next\r\n\r\nhello\r\n"
    ).encode("utf-8")
    client = greet(srv.ports["mx"])
    assert utf8_cmd(client, f"MAIL FROM:<{sender}> SMTPUTF8")[0] == 250
    assert utf8_cmd(client, f"RCPT TO:<{recipient}> ORCPT=rfc822;x+25sy")[0] == 250
    client.send(f"BDAT {len(header)} LAST\r\n".encode() + header)
    code, text = client.reply()
    assert code == 250, text
    queue_id = QUEUED.search(text).group(1)  # type: ignore[union-attr]
    client.cmd("QUIT")
    client.close()
    # The queue keeps what was received; only the display changes.
    assert srv.queued()[queue_id] == [recipient]

    listed = srv.cli("queue", "list")
    assert listed.returncode == 0, listed.stderr
    entry = listed.stdout.split(queue_id, 1)[1].split("\n\n", 1)[0]
    assert not HOSTILE.search(listed.stdout.replace("\n", "")), listed.stdout
    assert "\\u202eevil.example@mx.test" in entry
    assert "b\\u2066ob\\u2069@mx.test  [queued]" in entry

    shown = srv.cli("queue", "show", queue_id)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert not HOSTILE.search(out.replace("\n", "")), out
    assert all(line.replace("\t", "").isprintable() for line in out.split("\n")), out
    assert "Sender:       <\\u202eevil.example@mx.test> SMTPUTF8" in out
    assert "  <b\\u2066ob\\u2069@mx.test> ORCPT=RFC822;x%sy" in out
    assert "Subject: \\u202eevil \\x1b[2J\\x1b]0;pwned\\x07 over\\x0dwritten\n" in out
    assert "X-C1: \\x9b31m red\\u2028next" in out
    assert "\tfor <b\\u2066ob\\u2069@mx.test>;" in out  # the Received header keeps its TAB
    body = srv.body(queue_id)
    assert header in body, "the stored message is as received"
