"""What the server writes into stored messages, read back from a real server's queue.

A real `mailwright serve` (tests/spawn.py) takes messages from a raw socket client (plain on the
mx listener; implicit TLS and AUTH PLAIN on the submissions listener; IPv6 on a ::1 listener),
and each stored message is read back with `queue show --body` and checked:
- `Received:` (RFC 5321 4.4, RFC 5322 3.6.7) with every input a client controls: the HELO/EHLO
  name (RFC 5322 specials, backslash, quote, non-ASCII with and without SMTPUTF8, 500 octets,
  address literals), the recipient in `for <...>` (quoted local parts, SMTPUTF8), TLS and AUTH,
  a null sender, several recipients, an IPv6 peer. `received_tokens` reads the field as RFC
  5322 does (comments, quoted strings, angle addresses, domain literals), so a `;` or a
  parenthesis from the client that moved where the date is found, or left a comment open, fails;
  the date after the one `;` must be the real one, also as Python's `email` parser and
  `parsedate_to_datetime` see it; no line over 998 octets; a message without SMTPUTF8 stays 7-bit.
- Message-ID/Date insertion on submission (RFC 6409 8), with DATA and with BDAT chunks cut inside
  a field name: odd header sections get each field once, valid (RFC 5322 3.6.1, 3.6.4), in the
  header section, and the body byte for byte as sent.
- With root, the same HELO names through a private Postfix (bench/postfix_instance.py): its
  Received header passes the same reading, so the check asks nothing Postfix does not do.

Not responsible for: the engine's replies to these commands (tests/protocol), cleanup's streaming
cut at every offset (tests/policy/test_cleanup.py).
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import itertools
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

import spawn
from mailwright.policy.cleanup import MAX_HOPS

from .conftest import QUEUED

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
MSG_ID = re.compile(r"<[%s]+(?:\.[%s]+)*@[%s]+(?:\.[%s]+)*>" % ((re.escape(ATEXT),) * 4))


def received_tokens(value: str, *, utf8: bool) -> tuple[list[str], str]:
    """Read an unfolded Received field body by RFC 5322 3.6.7: received-tokens, ";", date-time.

    Comments (nested, with quoted-pairs) are dropped; words, dot-atoms, angle addresses and
    domain literals are tokens. Raises AssertionError for anything else, for a comment, quoted
    string or bracket left open, and for a missing ";".
    """
    tokens: list[str] = []
    i, n = 0, len(value)

    def atext(ch: str) -> bool:
        return ch in ATEXT or (utf8 and not ch.isascii())

    while i < n:
        ch = value[i]
        if ch in " \t":
            i += 1
        elif ch == "(":
            depth = 0
            while True:
                assert i < n, f"comment left open in {value!r}"
                c = value[i]
                if c == "\\":
                    i += 2
                    continue
                depth += (c == "(") - (c == ")")
                i += 1
                if depth == 0:
                    break
        elif ch == ";":
            return tokens, value[i + 1 :].strip()
        elif ch == "<":
            end = i + 1
            quoted = False
            while end < n and (quoted or value[end] != ">"):
                if value[end] == "\\":
                    end += 1
                elif value[end] == '"':
                    quoted = not quoted
                end += 1
            assert end < n, f"angle address left open in {value!r}"
            tokens.append(value[i : end + 1])
            i = end + 1
        elif ch == "[":
            end = value.find("]", i)
            assert end > 0 and not set(value[i + 1 : end]) & set("[\\"), f"bad domain literal in {value!r}"
            tokens.append(value[i : end + 1])
            i = end + 1
        elif atext(ch) or ch == ".":
            end = i
            while end < n and (atext(value[end]) or value[end] == "."):
                end += 1
            tokens.append(value[i:end])
            i = end
        else:
            raise AssertionError(f"{ch!r} cannot stand there in a Received field: {value!r}")
    raise AssertionError(f"no ';' before the date in {value!r}")


def check_received(message: bytes, *, utf8: bool, since: float) -> list[str]:
    """The stored message's first field is a Received field that parses; returns its tokens."""
    head = message.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n")), "a header line over 998 octets"
    if not utf8:
        assert message.isascii(), "8-bit octets in a message sent without SMTPUTF8"
    assert message.startswith(b"Received: ")
    raw = re.match(rb"Received: (.*?\r\n)(?![ \t])", message, re.S)
    assert raw is not None
    unfolded = re.sub(r"\r\n(?=[ \t])", "", raw.group(1).decode()).rstrip("\r\n")
    tokens, date = received_tokens(unfolded, utf8=utf8)
    stamp = email.utils.parsedate_to_datetime(date).timestamp()
    assert int(since) <= stamp <= time.time() + 1, (date, since)
    # Python's reading: the first Received field, the date after its last ";".
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    first = str(parsed.get_all("Received")[0])
    assert email.utils.parsedate_to_datetime(first.rsplit(";", 1)[1]).timestamp() == stamp
    return tokens


class Client:
    """A raw SMTP client: replies as (code, text), bytes sent as given."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=15)
        self.sock: socket.socket = tls.wrap_socket(sock, server_hostname="mx.test") if tls else sock
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline().decode("utf-8", "replace")
            assert line, f"connection closed after {lines}"
            lines.append(line[4:].rstrip("\r\n"))
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line: bytes | str, expect: int = 250) -> str:
        return self.raw((line.encode() if isinstance(line, str) else line) + b"\r\n", expect)

    def raw(self, data: bytes, expect: int = 250) -> str:
        """Send `data` as it is (a message, a BDAT chunk) and read one reply."""
        self.sock.sendall(data)
        code, text = self.reply()
        assert code == expect, (data[:80], code, text)
        return text

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spawn.SpawnedServer]:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        v6_port = probe.getsockname()[1]
    listener = f'[[listeners]]\nrole = "mx"\naddress = "::1"\nport = {v6_port}\n'
    with spawn.running_server(tmp_path_factory.mktemp("stored-headers"), workers=1, extra=listener) as s:
        s.ports["v6"] = v6_port
        yield s


def tls_ctx(srv: spawn.SpawnedServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(srv.ca_file))


def send(
    srv: spawn.SpawnedServer,
    message: bytes,
    *,
    helo: bytes = b"client.test",
    sender: bytes | None = None,
    rcpts: tuple[bytes, ...] = (b"<u@mx.test>",),
    submit: bool = False,
    chunks: list[bytes] | None = None,
    host: str = "127.0.0.1",
    port: str = "mx",
) -> bytes:
    """One message through a fresh session; returns it as stored. `chunks`: BDAT, else DATA."""
    c = Client(srv.ports["submissions" if submit else port], host=host, tls=tls_ctx(srv) if submit else None)
    try:
        c.cmd(b"EHLO " + helo)
        if submit:
            c.cmd(
                "AUTH PLAIN " + base64.b64encode(f"\0{spawn.USER}\0{spawn.PASSWORD}".encode()).decode(), 235
            )
        if sender is None:  # a submission's sender must be the user's own
            sender = f"<{spawn.USER}>".encode() if submit else b"<s@client.test>"
        c.cmd(b"MAIL FROM:" + sender)
        for rcpt in rcpts:
            c.cmd(b"RCPT TO:" + rcpt)
        if chunks is None:
            c.cmd("DATA", 354)
            text = c.raw(message + b".\r\n")
        else:
            assert b"".join(chunks) == message
            for part in chunks[:-1]:
                c.raw(b"BDAT %d\r\n" % len(part) + part)
            text = c.raw(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
        queue_id = QUEUED.search(text)
        assert queue_id is not None, text
        c.cmd("QUIT", 221)
    finally:
        c.close()
    return srv.body(queue_id.group(1))


# (HELO name as sent, whether the message is SMTPUTF8, the name the `from` clause must carry)
HELO_CASES = [
    ("client.test", False, "client.test"),
    ("a;b", False, "a?b"),  # a ";" ended the tokens: the date moved to "b ([127.0.0.1]) by ..."
    ("x(y", False, "x?y"),  # an open comment swallowed the rest, date included
    ("x)y", False, "x?y"),
    ("a\\b", False, "a?b"),
    ('q"uote', False, "q?uote"),
    ("<a@b>", False, "?a?b?"),
    ("a:b,c[d", False, "a?b?c?d"),
    ("[127.0.0.1]", False, "[127.0.0.1]"),
    ("[IPv6:::1]", False, "[IPv6:::1]"),
    ("[1.2.3.4;(]", False, "?1.2.3.4???"),
    ("a" * 500, False, "a" * 500),
    ("h\u00e9llo.test", False, "xn--hllo-bpa.test"),  # 7-bit message: the A-label, as a domain
    ("h\u00e9;llo", False, "h??llo"),  # no domain: "?" for what a 7-bit header cannot carry
    ("h\u00e9llo.test", True, "h\u00e9llo.test"),  # SMTPUTF8: RFC 6532 headers carry UTF-8
    ("h\u00e9;(llo", True, "h\u00e9??llo"),
]


@pytest.mark.parametrize(("helo", "utf8", "expected"), HELO_CASES, ids=[repr(c[0])[:24] for c in HELO_CASES])
def test_the_helo_name_cannot_change_how_received_parses(
    srv: spawn.SpawnedServer, helo: str, utf8: bool, expected: str
) -> None:
    since = time.time()
    stored = send(
        srv,
        b"Subject: t\r\n\r\nbody\r\n",
        helo=helo.encode(),
        sender=b"<s@client.test>" + (b" SMTPUTF8" if utf8 else b""),
    )
    tokens = check_received(stored, utf8=utf8, since=since)
    assert tokens[:4] == ["from", expected, "by", "mx.test"], tokens
    assert tokens[4:] == ["with", "UTF8SMTP" if utf8 else "ESMTP", "for", "<u@mx.test>"], tokens
    assert stored.endswith(b"\r\nSubject: t\r\n\r\nbody\r\n")


# (RCPT TO path, SMTPUTF8, the `for` token, the local part it means)
RCPT_CASES = [
    (b'<"a;b"@mx.test>', False, '<"a;b"@mx.test>', "a;b"),
    (b'<"a(b"@mx.test>', False, '<"a(b"@mx.test>', "a(b"),
    (b'<"a\\"b)"@mx.test>', False, '<"a\\"b)"@mx.test>', 'a"b)'),
    ("<\u00fc\u00df@mx.test>".encode(), True, "<\u00fc\u00df@mx.test>", "\u00fc\u00df"),
]


@pytest.mark.parametrize(("rcpt", "utf8", "expected", "local"), RCPT_CASES, ids=[c[3] for c in RCPT_CASES])
def test_the_recipient_in_for_stays_one_angle_address(
    srv: spawn.SpawnedServer, rcpt: bytes, utf8: bool, expected: str, local: str
) -> None:
    since = time.time()
    sender = b"<s@client.test>" + (b" SMTPUTF8" if utf8 else b"")
    stored = send(srv, b"Subject: t\r\n\r\nb\r\n", rcpts=(rcpt,), sender=sender)
    tokens = check_received(stored, utf8=utf8, since=since)
    assert tokens[-2:] == ["for", expected], tokens
    # The address inside reads back as the recipient that was sent.
    parsed = email.message_from_string(f"To: {expected}\r\n\r\n", policy=email.policy.default)
    (address,) = parsed["To"].addresses
    assert (address.username, address.domain) == (local, "mx.test")


def test_a_7bit_message_with_a_non_ascii_helo_stays_7bit(srv: spawn.SpawnedServer) -> None:
    since = time.time()
    stored = send(srv, b"Subject: t\r\n\r\nb\r\n", helo="\u00e9\u00e9\u00e9".encode())
    assert stored.isascii()
    assert check_received(stored, utf8=False, since=since)[1] == "xn--9caaa"


def test_null_sender_several_recipients_tls_and_auth(srv: spawn.SpawnedServer) -> None:
    since = time.time()
    stored = send(srv, b"Subject: t\r\n\r\nb\r\n", sender=b"<>", rcpts=(b"<u@mx.test>", b"<v@mx.test>"))
    tokens = check_received(stored, utf8=False, since=since)
    assert tokens == ["from", "client.test", "by", "mx.test", "with", "ESMTP"]  # the comments dropped
    assert stored.startswith(
        b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test (mailwright) with ESMTP;"
    )
    # Submission: implicit TLS and AUTH; the TLS facts are a (nested) comment.
    stored = send(srv, b"Subject: t\r\n\r\nb\r\n", submit=True, rcpts=(b"<x@relay.test>",))
    tokens = check_received(stored, utf8=False, since=since)
    assert tokens == ["from", "client.test", "by", "mx.test", "with", "ESMTPSA", "for", "<x@relay.test>"]
    assert re.search(rb"\(using TLS1\.[23] \S+ \(\d+ bits\)\)", stored)


def test_an_ipv6_peer_is_an_rfc5321_address_literal(srv: spawn.SpawnedServer) -> None:
    since = time.time()
    stored = send(srv, b"Subject: t\r\n\r\nb\r\n", host="::1", port="v6")
    check_received(stored, utf8=False, since=since)
    assert stored.startswith(b"Received: from client.test ([IPv6:::1])\r\n"), stored[:80]


# -- Message-ID and Date on submission ---------------------------------------------------------

BIG = b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"p" * 60) for i in range(4000))  # ~300 KiB > MAX_HEADER_HOLD

# (name, message, whether Message-ID / Date were in it, the body as it must be stored)
SHAPES = [
    ("plain", b"Subject: t\r\n\r\nbody\r\n", False, b"body\r\n"),
    ("folded", b"Subject: t\r\n two\r\nX-A: y\r\n\tz\r\n\r\nbody\r\n", False, b"body\r\n"),
    (
        "other-case",
        b"message-id: <a@b.test>\r\ndATE: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nb\r\n",
        True,
        b"b\r\n",
    ),
    (
        "empty-message-id",
        b"Message-Id:\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nb\r\n",
        True,
        b"b\r\n",
    ),
    ("mbox-from", b"From s@client.test Mon Dec  7 10:00:00 2026\r\nSubject: t\r\n\r\nb\r\n", False, b"b\r\n"),
    ("no-header", b"just a body\r\n", False, b"just a body\r\n"),
    ("no-empty-line", b"Subject: t\r\nbody starts here\r\n", False, b"body starts here\r\n"),
    ("headers-only", b"Subject: t\r\n", False, b""),
    ("over-hold", BIG + b"Subject: t\r\n\r\nb\r\n", None, b"b\r\n"),
]


def field_count(message: bytes, name: bytes) -> int:
    """How many `name` fields the header section (up to the first empty line) holds."""
    head = re.split(rb"\n\r?\n", message, maxsplit=1)[0]
    return len(re.findall(rb"(?:^|\n)" + name + rb"[ \t]*:", head, re.I))


@pytest.mark.parametrize("how", ["data", "bdat"])
@pytest.mark.parametrize(("name", "message", "present", "body"), SHAPES, ids=[s[0] for s in SHAPES])
def test_message_id_and_date_are_added_once_in_the_header_section(
    srv: spawn.SpawnedServer, how: str, name: str, message: bytes, present: bool | None, body: bytes
) -> None:
    chunks = None
    if how == "bdat":
        # Cut inside the first field name, at its colon, and before the final line end.
        cuts = sorted({0, 3, 8, message.find(b":") + 1, len(message) - 1, len(message)})
        chunks = [message[a:b] for a, b in itertools.pairwise(cuts) if b > a]
    since = time.time()
    stored = send(srv, message, submit=True, rcpts=(b"<x@relay.test>",), chunks=chunks)
    check_received(stored, utf8=False, since=since)
    if present is None:  # larger than what is held: passed through untouched, nothing added
        assert stored.endswith(message) and field_count(stored, b"message-id") == 0
        return
    assert field_count(stored, b"message-id") == 1 and field_count(stored, b"date") == 1, stored[:600]
    head, sep, stored_body = stored.partition(b"\r\n\r\n")
    assert stored_body == body and (sep or not body)
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    assert not parsed.defects
    if not present:
        assert MSG_ID.fullmatch(str(parsed["Message-ID"])), parsed["Message-ID"]
        assert abs(parsed["Date"].datetime.timestamp() - since) < 3
        assert isinstance(parsed["Date"].datetime, datetime)
    if name == "mbox-from":
        assert b"\r\nX-Mailbox-Line: From s@client.test Mon Dec  7 10:00:00 2026\r\nSubject: t\r\n" in head
        assert parsed["Subject"] == "t"


@pytest.mark.parametrize("how", ["data", "bdat"])
def test_the_longest_mbox_line_data_takes_is_stored_within_998_octets(
    srv: spawn.SpawnedServer, how: str
) -> None:
    """RFC 5322 2.1.1: the field's name made a 998-octet separator line 1,014 octets long."""
    line = b"From " + b"s" * (998 - 37) + b"@b.test Mon Dec  7 10:00:00 2026"
    assert len(line) == 998
    message = line + b"\r\nSubject: t\r\n\r\nb\r\n"
    chunks = [message[:3], message[3:700], message[700:]] if how == "bdat" else None
    stored = send(srv, message, rcpts=(b"<u@mx.test>",), chunks=chunks)
    assert max(len(x) for x in stored.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    assert parsed["X-Mailbox-Line"] == line.decode() and parsed["Subject"] == "t"
    assert stored.endswith(b"\r\nSubject: t\r\n\r\nb\r\n") and not parsed.defects


def test_a_non_ascii_hostname_goes_out_as_its_a_labels(tmp_path: Path) -> None:
    """RFC 5321 2.3.5 and 4.1.2: the domain a server names itself by in the greeting, the EHLO
    and QUIT replies and a CRAM-MD5 challenge is ASCII; an IDN goes out as A-labels (RFC 5890),
    as in the headers it writes. It was sent as UTF-8, which 7-bit clients cannot read."""
    server = spawn.make_server(tmp_path, workers=1)
    ours = f'hostname = "{spawn.LOCAL_DOMAIN}"'
    server.config.write_text(server.config.read_text().replace(ours, 'hostname = "m\u00e4il.test"'))
    alabels = "xn--mil-qla.test"
    server.start()
    try:
        with smtplib.SMTP(timeout=10) as c:
            assert c.connect("127.0.0.1", server.ports["mx"]) == (220, f"{alabels} ESMTP mailwright".encode())
            code, ehlo = c.ehlo("client.test")
            assert code == 250 and ehlo.split(b"\n")[0] == f"{alabels} Hello client.test".encode()
            assert c.mail("<s@client.test>")[0] == 250
            assert c.rcpt("<postmaster>")[0] == 250  # RFC 5321 4.5.1: ours, in whatever form
            code, bye = c.docmd("QUIT")
            assert (code, bye) == (221, f"2.0.0 {alabels} closing connection".encode())
        with smtplib.SMTP_SSL(
            "127.0.0.1", server.ports["submissions"], context=tls_ctx(server), timeout=10
        ) as c:
            c.ehlo("client.test")
            code, challenge = c.docmd("AUTH", "CRAM-MD5")
            assert code == 334
            assert base64.b64decode(challenge).decode("ascii").endswith(f"@{alabels}>")
            assert c.docmd("*")[0] == 501  # RFC 4954 4: the client cancels the exchange
        stored = send(server, b"Subject: t\r\n\r\nb\r\n")
        assert f"\tby {alabels} (mailwright)".encode() in stored and stored.isascii()
    finally:
        server.stop()


def test_lf_only_line_ends_are_refused_in_data_and_kept_in_bdat(srv: spawn.SpawnedServer) -> None:
    c = Client(srv.ports["mx"])
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<s@client.test>")
    c.cmd("RCPT TO:<u@mx.test>")
    c.cmd("DATA", 354)
    assert "5.6.0" in c.raw(b"Subject: t\n\nbody\n\r\n.\r\n", 550)
    c.close()
    message = b"Subject: t\n\nbody\n"
    stored = send(srv, message, submit=True, rcpts=(b"<x@relay.test>",), chunks=[message[:5], message[5:]])
    assert stored.endswith(b"\r\n\nbody\n")  # the added fields end in CRLF, the body as sent
    assert field_count(stored, b"message-id") == 1 and field_count(stored, b"date") == 1


@pytest.mark.parametrize("bdat", [False, True], ids=["data", "bdat"])
def test_a_message_past_the_hop_limit_is_refused_as_a_loop(srv: spawn.SpawnedServer, bdat: bool) -> None:
    # RFC 5321 6.3: more Received fields than a large threshold (at least 100) is a mail loop.
    hop = b"Received: from a.test by b.test; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    at_limit = hop * MAX_HOPS + b"Subject: hops\r\n\r\nbody\r\n"
    stored = send(srv, at_limit, chunks=[at_limit] if bdat else None)
    assert field_count(stored, b"received") == MAX_HOPS + 1  # ours on top
    before, since = srv.queued(), srv.log.stat().st_size
    c = Client(srv.ports["mx"])
    try:
        c.cmd("EHLO client.test")
        for _ in range(2):  # refused, and the session goes on to the next message
            c.cmd("MAIL FROM:<s@client.test>")
            c.cmd("RCPT TO:<u@mx.test>")
            looping = hop + at_limit
            if bdat:
                text = c.raw(b"BDAT %d LAST\r\n" % len(looping) + looping, 554)
            else:
                c.cmd("DATA", 354)
                text = c.raw(looping + b".\r\n", 554)
            assert text.startswith("5.4.6 Too many hops: 101 Received fields"), text
        c.cmd("RSET")
        c.cmd("QUIT", 221)
    finally:
        c.close()
    assert srv.queued() == before
    line = "NOQUEUE: reject: END-OF-MESSAGE from client.test[127.0.0.1]: 554 5.4.6"
    spawn.wait_for_log(srv, line, since=since, count=2)


# -- Postfix, for comparison -------------------------------------------------------------------

# The HELO names of HELO_CASES that Postfix writes so that they parse, and how it writes them.
# Not here: "a:b,c[d", which Postfix 3.7 writes as "a?b,c[d" (it keeps "," and an open "["),
# and non-ASCII names, which it writes as UTF-8 in 7-bit messages when smtputf8_enable is on.
POSTFIX_CASES = {
    "client.test": "client.test",
    "a;b": "a?b",
    "x(y": "x?y",
    "x)y": "x?y",
    "a\\b": "a?b",
    'q"uote': "q?uote",
    "<a@b>": "?a?b?",
    "[127.0.0.1]": "[127.0.0.1]",
    "[IPv6:::1]": "[IPv6:::1]",
    "[1.2.3.4;(]": "[1.2.3.4??]",
    "a" * 500: "a" * 500,
}


def test_postfix_writes_the_same_helo_names_so_that_they_parse() -> None:
    """Postfix neuters the specials of the HELO name to "?" (smtpd.c, helo_cmd): its Received
    fields pass the same reading, so `received_tokens` asks nothing Postfix does not do."""
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (CI runs as root)")
    from bench.postfix_instance import PostfixInstance, PostfixUnavailable

    pf = PostfixInstance(spawn.free_ports(1)[0], "postfix.test", settings={"smtpd_peername_lookup": "no"})
    try:
        try:
            pf.start()
        except PostfixUnavailable as exc:
            pytest.fail(f"the private Postfix instance did not start: {exc}")
        since = time.time()
        for helo in POSTFIX_CASES:
            c = Client(pf.port)
            c.cmd(b"EHLO " + helo.encode())
            c.cmd("MAIL FROM:<s@client.test>")
            c.cmd("RCPT TO:<u@postfix.test>")
            c.cmd("DATA", 354)
            c.raw(b"Subject: t\r\n\r\nb\r\n.\r\n")
            c.close()
        held = pf.queue_dir / "hold"
        deadline = time.monotonic() + 20
        while len(list(held.glob("*"))) < len(POSTFIX_CASES):
            assert time.monotonic() < deadline, pf.log_tail()
            time.sleep(0.1)
        names = []
        for path in held.glob("*"):
            res = subprocess.run(
                ["/usr/sbin/postcat", "-c", str(pf.config_dir), "-bh", str(path)],
                capture_output=True,
                timeout=30,
            )
            names.append(check_received(res.stdout.replace(b"\n", b"\r\n"), utf8=False, since=since)[1])
        assert sorted(names) == sorted(POSTFIX_CASES.values())
    finally:
        pf.stop()
