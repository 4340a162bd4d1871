"""Randomized SMTP sessions against a running server over loopback: its promises hold for any input.

One `mailwright serve` (the prefork server, two workers) is started for the test and hypothesis
drives a few hundred sessions against it over real TCP sockets. Each session is drawn from a
grammar of plausible and hostile input: EHLO/HELO/MAIL/RCPT/DATA/BDAT/RSET/NOOP/QUIT/STARTTLS/
AUTH/VRFY/HELP/EXPN in random case, valid and invalid parameters and addresses (quoted, IDNA,
UTF-8, null path, source routes, routing tricks, over-long values), bare CR, bare LF, NUL and
8-bit octets inserted into lines, over-long lines, DATA bodies carrying the smuggling sequences
(\\n.\\n, \\r.\\r, \\r\\n.\\r, \\n.\\r\\n, ...) with commands behind them, BDAT chunks whose
declared size is off, pipelined bursts, random TCP segmentation, STARTTLS with and without a
real handshake, and endings that QUIT, half-close, close or reset the connection at random
points (mid-DATA and mid-BDAT included). Sessions go to the mx listener (plaintext mail for a
local domain), to a plaintext submission listener (AUTH must be refused there, 538 5.7.11, and
MAIL too) and to a loopback submission listener that allows plaintext AUTH, so real SASL
exchanges are part of the input.

The promises checked, after every session:
1. No hung connection: each complete unit sent (a command line, a DATA body up to its real
   <CRLF>.<CRLF>, a BDAT command with its chunk, an AUTH response) gets exactly one reply within
   READ_TIMEOUT, or the server closes after a 421 or 221; nothing follows those. To know what a
   unit is, the client mirrors the server's framing (`Mirror`), and the replies tell it where
   the session went (354 starts a body, 334 an AUTH response, 220 to STARTTLS drops the rest),
   so a server that framed input differently from what it promises (a smuggled end of data, a
   BDAT chunk miscounted) desynchronises the replies and fails here. Every reply is well-formed
   (each line `\\d{3}[ -]` ending in CRLF, one code per reply, valid UTF-8), and every 2xx, 4xx
   and 5xx reply except the greeting and the replies to EHLO/HELO starts with an enhanced status
   code of its class (RFC 2034 3 exempts "any response to HELO or EHLO": the 250 and the 501 to a
   bad name carry none; a reply to an EHLO line that has one must fit its class). mailwright
   advertises ENHANCEDSTATUSCODES on every listener and its engine promises a code on every
   other reply (protocol/server.py), so this holds from the first reply on.
   The replies that the rules in docs/architecture.md fix are checked as such: 500 5.5.2 for a
   line with a bare CR or LF or over its length limit (500 5.5.6 for an AUTH command or SASL
   response over it, RFC 4954 6), 501 5.5.2 for a NUL, 550 5.6.0 for a body
   with a bare CR or LF or an over-long line, 250 and a queue id for a clean one, the octet count
   of a BDAT chunk; 354 only inside a transaction with a recipient, no 250 to MAIL on a
   submission listener before AUTH, no 250 to RCPT for a foreign domain without AUTH.
2. The server's log holds no traceback and no WARNING, ERROR or CRITICAL line after start-up
   (net.server logs an internal error as "session from ... failed" or "session task ... failed"
   at ERROR with its traceback; a dead worker is a WARNING of the master).
3. No lost or invented message: every "250 ... queued as ID" names a distinct message that is in
   the queue, and the queue holds no other message from that session (each session connects from
   a client address of its own, which the queue records) except ones it may not have been told
   about: when a connection is closed or reset before its replies were read, each possible end
   of a message among the bytes sent after the last reply read (a <CRLF>.<CRLF>, a valid BDAT
   ... LAST line whose chunk was sent whole) may or may not have been stored. Checked after each
   session, and for all of them again at the end, when late commits have landed.
4. After all sessions the server still takes a normal transaction from smtplib.

Reproducible: derandomized, no example database; the first session is always the one that found
a lost TLS handshake (STARTTLS_BEHIND_A_MESSAGE; tests/net/test_session.py and test_hostile.py
hold its deterministic regression tests). Not covered here: resource bounds under floods
and time-outs (test_hostile.py, test_timeouts.py), crash safety (test_durability.py).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
import smtplib
import socket
import sqlite3
import ssl
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import spawn
from mailwright.queue.model import queue_id_text

from .conftest import QUEUED, ServerFactory

EXAMPLES = 300
READ_TIMEOUT = 10.0  # longer than the longest AUTH failure delay (5 s)
SESSION_BOUND = 30.0  # a whole session, AUTH delays included
PLAIN_AUTH_HOST = "127.0.0.2"  # its own address: its port cannot collide with make_server's
SOURCE_NET = "127.1"  # session n connects from 127.1.(n // 250).(n % 250 + 1)

# The engine's limits (protocol/server.py, protocol/framing.py), octets with CRLF.
MAX_COMMAND = 512
MAX_MAIL_RCPT = 2048
MAX_AUTH = 12288
MAX_TEXT_LINE = 1000


# -- the grammar ------------------------------------------------------------------------------
# Lists put their plain case first: hypothesis shrinks towards the first element, so a failure
# shrinks to the least hostile input that still fails.


def short(raw: bytes) -> str:
    """`raw` for a failure message: long runs of padding would bury the rest."""
    return repr(raw) if len(raw) <= 160 else f"{raw[:120]!r} ...{len(raw) - 160} octets... {raw[-40:]!r}"


def _alternate(word: str) -> str:
    return "".join(c.lower() if i % 2 else c.upper() for i, c in enumerate(word))


def cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word.upper(), word.lower(), word.title(), _alternate(word)])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


USER, PASSWORD = spawn.USER.encode(), spawn.PASSWORD.encode()

# "ERROR.test": the server logs HELO names, and the log check must go by the level's field.
HELO_NAMES = ["client.test", "[127.0.0.1]", "[IPv6:::1]", "xn--bcher-kva.test", "bücher.test", "ERROR.test"]
HOSTILE_HELO_NAMES = [
    "", "two words", "tab\tname", "line\u2028separator", "next\u0085line", "x" * 300,
]  # fmt: skip
# alice@mx.test first: on the submission listeners an authenticated user may only send as itself.
SENDERS = ["<alice@mx.test>", "<sender@client.test>", "<>", '<"quoted local"@mx.test>', "<alice@[127.0.0.1]>"]
HOSTILE_SENDERS = [
    "<bücher@client.test>", "<user@bücher.test>", "<@hop.test:sender@client.test>", "<a@>",
    "<@client.test>", "<a..b@client.test>", "sender@client.test", "<sender@client.test",
    "<" + "l" * 65 + "@client.test>", "<a b@client.test>", " <sender@client.test>",
    "<sender@client.test>>",
]  # fmt: skip
RECIPIENTS = ["<bob@mx.test>", "<BOB@MX.TEST>", "<postmaster@mx.test>", "<Postmaster>", "<carol@relay.test>"]
HOSTILE_RECIPIENTS = [
    '<"quoted local"@mx.test>', "<bücher@mx.test>", "<bob@xn--bcher-kva.test>", "<bob@bücher.test>",
    "<bob@[127.0.0.1]>", "<a%b@mx.test>", "<a!b@mx.test>", '<"a@b"@mx.test>', "<x@elsewhere.test>",
    "<@hop.test:bob@mx.test>", "<>", "<bob@mx.test", "<@mx.test>", "<bob@mx..test>",
    "<" + "r" * 65 + "@mx.test>", "<bob@" + "d" * 64 + ".test>", "<bob@mx.test.>",
]  # fmt: skip
MAIL_PARAMS = ["", "SIZE=1000", "BODY=8BITMIME", "SMTPUTF8", "BODY=7BIT SIZE=20", "RET=HDRS ENVID=abc+2Bdef"]
HOSTILE_MAIL_PARAMS = [
    "SIZE=0", "SIZE=" + "9" * 25, "SIZE=60000000", "SIZE=abc", "SIZE=", "BODY=BINARYMIME", "BODY=junk",
    "SMTPUTF8=yes", "RET=FULL", "RET=NONE", "ENVID=" + "e" * 120, "AUTH=<>", "AUTH=alice+40mx.test",
    "REQUIRETLS", "X-UNKNOWN=1", "FOO", "=bar", "SIZE=10 SIZE=20", "NOTIFY=NEVER", "SIZE=10  BODY=7BIT",
    "BODY=8bitmime\u00a0",
]  # fmt: skip
RCPT_PARAMS = ["", "NOTIFY=NEVER", "NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@mx.test"]
HOSTILE_RCPT_PARAMS = [
    "NOTIFY=NEVER,SUCCESS", "NOTIFY=", "ORCPT=utf-8;b\\x{FC}cher@mx.test", "ORCPT=utf-8;b\\x{0}c@mx.test",
    "ORCPT=rfc822;" + "A" * 600, "ORCPT=junk", "SIZE=10", "X-Y=z", "NOTIFY=DELAY NOTIFY=DELAY",
]  # fmt: skip
NOISE = [b"\r", b"\n", b"\x00", b"\x80", b"\xff", "é".encode(), b"\r\n", b"\xc2\x85"]  # \xc2\x85: U+0085
HOSTILE_ENDINGS = [b"\n", b"\r\r\n", b"\n\r\n", b" \r\n"]
LONG = [513, 1001, 2049, 12300]

SMUGGLED = (
    b"MAIL FROM:<smuggler@evil.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nnot a real message\r\n"
)
FAKE_ENDS = [b"\n.\n", b"\r.\r", b"\r\n.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\n.\r", b"\r\n.\r\r\n"]
BODY_PIECES = [
    b"hello\r\n", b"Subject: wire fuzz\r\n\r\n", b"..stuffed dot\r\n", b".unstuffed dot\r\n", b"\r\n",
    b"8-bit \xe9\xff\r\n", b"nul \x00 octet\r\n", b"y" * 998 + b"\r\n",
]  # fmt: skip
HOSTILE_BODY_PIECES = [
    b"x" * 999 + b"\r\n", b"bare lf\n", b"bare cr\r", b"no line end",
    *(b"fake end" + end + SMUGGLED for end in FAKE_ENDS),
]  # fmt: skip
TERMINATORS = [b"\r\n.\r\n", b".\r\n", b"", b"\n.\n", b"\r\n.\r"]
BDAT_PAYLOADS = [b"Subject: chunk\r\n\r\nhello\r\n", b"", b"z" * 1500]
HOSTILE_BDAT_PAYLOADS = [b"bare\nlf\rcr\x00nul\xff", b"\r\n.\r\n", b"QUIT\r\n", SMUGGLED]


def pick(
    draw: st.DrawFn, plain: list[str] | list[bytes], hostile: list[str] | list[bytes], odds: int = 4
) -> Any:
    """One of `plain`, or about once in `odds` draws one of `hostile`."""
    if draw(st.integers(1, odds)) == odds:
        return draw(st.sampled_from(hostile))
    return draw(st.sampled_from(plain))


def finish(draw: st.DrawFn, text: str, odds: int = 10) -> bytes:
    """`text` as a line: mostly clean; about one line in `odds` gets a hostile octet or padding
    past its length limit, and about as many a hostile line end."""
    raw = text.encode("utf-8")
    roll = draw(st.integers(1, 2 * odds))
    if roll == 2 * odds - 1:
        pos = draw(st.integers(0, len(raw)))
        raw = raw[:pos] + draw(st.sampled_from(NOISE)) + raw[pos:]
    elif roll == 2 * odds:
        raw += b"A" * draw(st.sampled_from(LONG))
    return raw + (pick(draw, [b"\r\n"], HOSTILE_ENDINGS, odds) if roll < 2 * odds - 1 else b"\r\n")


@st.composite
def hello(draw: st.DrawFn, odds: int = 3) -> list[bytes]:
    verb = draw(st.one_of(cased("EHLO"), cased("EHLO"), cased("HELO")))
    return [finish(draw, f"{verb} {pick(draw, HELO_NAMES, HOSTILE_HELO_NAMES, odds)}", 2 * odds)]


@st.composite
def mail(draw: st.DrawFn, odds: int = 2) -> list[bytes]:
    params = pick(draw, MAIL_PARAMS, HOSTILE_MAIL_PARAMS, odds)
    sender = pick(draw, SENDERS, HOSTILE_SENDERS, odds)
    return [finish(draw, draw(cased("MAIL FROM:")) + sender + (" " + params if params else ""), 5 * odds)]


@st.composite
def rcpt(draw: st.DrawFn, odds: int = 2) -> list[bytes]:
    params = pick(draw, RCPT_PARAMS, HOSTILE_RCPT_PARAMS, odds)
    to = pick(draw, RECIPIENTS, HOSTILE_RECIPIENTS, odds)
    return [finish(draw, draw(cased("RCPT TO:")) + to + (" " + params if params else ""), 5 * odds)]


@st.composite
def data_command(draw: st.DrawFn, odds: int = 2) -> list[bytes]:
    return [finish(draw, draw(cased("DATA")) + pick(draw, ["", " "], [" now"], odds), 5 * odds)]


@st.composite
def body(draw: st.DrawFn, odds: int = 2) -> list[bytes]:
    pieces = [pick(draw, BODY_PIECES, HOSTILE_BODY_PIECES, 2 * odds) for _ in range(draw(st.integers(0, 5)))]
    return [b"".join(pieces) + pick(draw, TERMINATORS[:1], TERMINATORS[1:], 2 * odds)]


@st.composite
def bdat(draw: st.DrawFn, last: bool | None = None, odds: int = 2) -> list[bytes]:
    payload = pick(draw, BDAT_PAYLOADS, HOSTILE_BDAT_PAYLOADS, odds)
    size = max(0, len(payload) + pick(draw, [0], [1, -1, 7], 2 * odds))
    if last is None:
        last = draw(st.booleans())
    head = draw(cased("BDAT")) + f" {size}" + (" " + draw(cased("LAST")) if last else "")
    return [finish(draw, head, 5 * odds) + payload]


@st.composite
def bad_bdat(draw: st.DrawFn) -> list[bytes]:
    arg = draw(
        st.sampled_from(["", "x", "1 2", "-1 LAST", "9" * 16, "1 LAST extra", "100000000000 LAST", "3\tlast"])
    )
    return [finish(draw, draw(cased("BDAT")) + (" " + arg if arg else "")) + b"abc"]


@st.composite
def transaction(draw: st.DrawFn) -> list[bytes]:
    """A plausible transaction (hostile now and then), by DATA or by BDAT chunks."""
    odds = draw(st.sampled_from([30, 10, 3]))
    units = [] if draw(st.booleans()) else [finish(draw, draw(cased("RSET")), 5 * odds)]
    units += draw(mail(odds)) + draw(rcpt(odds))
    if draw(st.integers(1, 4)) == 4:
        units += draw(rcpt(odds))
    if draw(st.booleans()):
        return units + draw(data_command(odds)) + draw(body(odds))
    for _ in range(draw(st.integers(0, 2))):
        units += draw(bdat(last=False, odds=odds))
    return units + draw(bdat(last=True, odds=odds))


@st.composite
def simple(draw: st.DrawFn) -> list[bytes]:
    verb = draw(st.sampled_from(["RSET", "NOOP", "HELP", "VRFY", "EXPN", "QUIT"]))
    arg = draw(st.sampled_from(["", "", " bob", " <bob@mx.test>", " " + "v" * 40]))
    return [finish(draw, draw(cased(verb)) + arg)]


@st.composite
def starttls(draw: st.DrawFn) -> list[bytes]:
    return [finish(draw, draw(cased("STARTTLS")) + pick(draw, [""], [" now"]))]


GOOD_PLAIN = "PLAIN " + b64(b"\0" + USER + b"\0" + PASSWORD)
SASL_RESPONSES = [
    b64(USER), b64(PASSWORD), b64(b"\0" + USER + b"\0" + PASSWORD), b64(b"wrong password"), "*", "=",
    "!!not base64!!", b64(b"\0" + USER), b64(USER + b" 0123456789abcdef0123456789abcdef"), "A" * 13000,
]  # fmt: skip


@st.composite
def auth(draw: st.DrawFn) -> list[bytes]:
    """An AUTH command, maybe with responses. Mostly the right password: every failure costs
    a growing delay (0.25 s, doubling) and three lock the client IP out for 5 s."""
    mech = draw(
        st.sampled_from(
            [
                GOOD_PLAIN,
                "LOGIN",
                "PLAIN",
                "LOGIN " + b64(USER),
                "PLAIN " + b64(b"\0" + USER + b"\0wrong"),
                "CRAM-MD5",
                "XOAUTH2 " + b64(b"user=x\x01auth=Bearer y\x01\x01"),
                "",
                "PLAIN =",
                "PLAIN a b",
                "plain !!!",
            ]
        )
    )
    units = [finish(draw, draw(cased("AUTH")) + (" " + mech if mech else ""))]
    if mech in ("LOGIN", "PLAIN", "LOGIN " + b64(USER), "CRAM-MD5"):
        for response in draw(st.lists(st.sampled_from(SASL_RESPONSES), max_size=2)):
            units.append(finish(draw, response))
    return units


@st.composite
def junk(draw: st.DrawFn) -> list[bytes]:
    raw = draw(st.binary(max_size=40)).replace(b"\n", b"")
    return [raw + pick(draw, [b"\r\n"], HOSTILE_ENDINGS)]


ITEMS = st.one_of(
    transaction(), transaction(), transaction(), transaction(), hello(), mail(), rcpt(), data_command(),
    body(), bdat(), bad_bdat(), simple(), simple(), starttls(), auth(), junk(),
)  # fmt: skip


@dataclass(frozen=True)
class Block:
    units: tuple[bytes, ...]
    grouping: str  # "lockstep": each unit, then its reply; "burst": all, then the replies;
    # "pipelined": all, and the replies only later (with the next block's, or never)
    piece: int  # send in pieces of this many octets (0: in one send)
    pause: bool  # a short sleep between pieces, so they arrive as separate reads

    def __repr__(self) -> str:
        return (
            f"Block({self.grouping}, piece={self.piece}, pause={self.pause}, {list(map(short, self.units))})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis's printer, which would show every octet


@dataclass(frozen=True)
class Session:
    listener: str  # "mx", "submission" (plaintext, no AUTH there), "plainauth"
    blocks: tuple[Block, ...]
    tls: bool  # after a 220 to STARTTLS: handshake (or close)
    ending: str  # "quit" | "half_close" | "close" | "reset" | "cut_close" | "cut_reset"
    cut: int  # "cut_*": percent of the last block sent before the connection goes


def transaction_lines(subject: bytes) -> tuple[bytes, ...]:
    return (
        b"MAIL FROM:<sender@client.test>\r\n",
        b"RCPT TO:<bob@mx.test>\r\n",
        b"DATA\r\n",
        b"Subject: " + subject + b"\r\n\r\nhello\r\n.\r\n",
    )


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    units = [u for item in draw(st.lists(ITEMS, min_size=1, max_size=3)) for u in item]
    return Block(
        tuple(units),
        draw(st.sampled_from(["lockstep", "burst", "pipelined"])),
        draw(st.sampled_from([0, 0, 0, 1, 3, 17, 500])),
        draw(st.booleans()),
    )


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    listener = draw(st.sampled_from(["mx"] * 6 + ["plainauth"] * 2 + ["submission"] * 2))
    body_blocks = draw(st.lists(blocks(), min_size=1, max_size=4))
    tls = draw(st.booleans())
    # Most clients start as a client would, so that transactions follow: EHLO, and on the
    # submission listeners AUTH (after STARTTLS where plaintext AUTH is not allowed).
    if draw(st.integers(1, 10)) != 10:
        opening = draw(hello(odds=8))
        if listener == "submission" and draw(st.integers(1, 4)) != 4:
            tls = True
            opening += [b"STARTTLS\r\n", *draw(hello(odds=8))]
        if listener != "mx" and draw(st.integers(1, 5)) != 5:
            opening.append(finish(draw, draw(cased("AUTH")) + " " + GOOD_PLAIN, 20))
        body_blocks = [Block(tuple(opening), "lockstep", 0, False), *body_blocks]
    ending = draw(st.sampled_from(["quit", "quit", "half_close", "close", "reset", "cut_close", "cut_reset"]))
    return Session(listener, tuple(body_blocks), tls, ending, draw(st.integers(0, 100)))


# The session that found the lost TLS handshake (protocol.server.ServerConnection.wants_read):
# STARTTLS pipelined behind a message is answered from the commit's callback. Always run first.
STARTTLS_BEHIND_A_MESSAGE = Session(
    "mx",
    (
        Block((b"EHLO client.test\r\n",), "lockstep", 0, False),
        Block((*transaction_lines(b"before TLS"), b"STARTTLS\r\n"), "burst", 0, False),
        Block((b"EHLO client.test\r\n", *transaction_lines(b"after TLS")), "lockstep", 0, False),
    ),
    tls=True,
    ending="quit",
    cut=0,
)


# -- the client -------------------------------------------------------------------------------

REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])(.*)", re.S)
ENHANCED = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}(?: |\Z)")


class Hung(AssertionError):
    pass


@dataclass
class Reply:
    code: int
    lines: list[str]  # text after "NNN " / "NNN-"

    @property
    def enhanced(self) -> str | None:
        m = ENHANCED.match(self.lines[0])
        return m.group(0).strip() if m else None

    def __str__(self) -> str:
        return " / ".join(f"{self.code} {line}" for line in self.lines)


@functools.cache
def client_context(ca_file: Path) -> ssl.SSLContext:
    # Made once: loading the CA takes longer than the handshake, and a client that answers the
    # 220 to STARTTLS at once is the one that found the lost handshake.
    return ssl.create_default_context(cafile=str(ca_file))


class Conn:
    """A socket (plain, later maybe TLS) with a reply reader that checks the reply syntax."""

    def __init__(self, address: tuple[str, int], source: str) -> None:
        self.sock: socket.socket = socket.create_connection(
            address, timeout=READ_TIMEOUT, source_address=(source, 0)
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.tls = False
        self.send_failed = False

    def send(self, data: bytes, piece: int, pause: bool) -> None:
        if self.send_failed or not data:
            return
        pieces = [data[i : i + piece] for i in range(0, len(data), piece)] if piece else [data]
        try:
            for n, chunk in enumerate(pieces):
                if n and pause and n < 12:
                    time.sleep(0.002)
                self.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            # The server closed: the replies read later must say why (421 or 221).
            self.send_failed = True

    def _fill(self, why: str) -> bool:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise Hung(f"no reply within {READ_TIMEOUT:.0f} s to {why}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_reply(self, why: str) -> Reply | None:
        """The next reply, or None at the end of the connection. Fails on a malformed reply."""
        code: int | None = None
        lines: list[str] = []
        while True:
            while b"\n" not in self.buf:
                if self.eof or not self._fill(why):
                    assert not self.buf and not lines, f"connection closed mid-reply: {self.buf!r} {lines}"
                    return None
            raw, self.buf = self.buf.split(b"\n", 1)
            assert raw.endswith(b"\r") and b"\r" not in raw[:-1], f"reply line not CRLF: {raw!r} ({why})"
            m = REPLY_LINE.fullmatch(raw[:-1])
            assert m, f"malformed reply line {raw!r} ({why})"
            assert code is None or int(m.group(1)) == code, f"two codes in one reply: {code}, {raw!r}"
            code = int(m.group(1))
            try:
                lines.append(m.group(3).decode("utf-8"))
            except UnicodeDecodeError:
                raise AssertionError(f"reply not UTF-8: {raw!r}") from None
            if m.group(2) == b" ":
                return Reply(code, lines)

    def pending(self) -> bool:
        """Whether the server has sent something not read yet (without waiting for it)."""
        if self.buf or self.eof:
            return True
        self.sock.settimeout(0.0)
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except ConnectionResetError:
            data = b""
        finally:
            self.sock.settimeout(READ_TIMEOUT)
        if not data:
            self.eof = True
        self.buf += data
        return True

    def expect_eof(self, after: str) -> None:
        while not self.eof:
            self._fill(f"the close after {after}")
        assert not self.buf, f"the server sent {self.buf[:200]!r} after {after}"

    def start_tls(self, ca_file: Path) -> None:
        assert not self.buf, f"the server sent {self.buf!r} after its 220 to STARTTLS"
        self.sock = client_context(ca_file).wrap_socket(self.sock, server_hostname=spawn.LOCAL_DOMAIN)
        if self.sock.version() is None:
            # wrap_socket skips the handshake on a socket that is no longer connected (the
            # server reset it) instead of failing.
            raise ConnectionResetError("the connection was gone before the TLS handshake")
        self.tls = True

    def close(self, reset: bool) -> None:
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


# -- the mirror of the server's framing -------------------------------------------------------


def split_line(raw: bytes) -> tuple[bytes, bool]:
    """A unit ending at LF: (the line without its ending, whether it is malformed: bare LF or a CR
    inside), as framing.take_line sees it."""
    if raw.endswith(b"\r\n"):
        line = raw[:-2]
        return line, b"\r" in line
    return raw[:-1], True


def verb_of(line: bytes) -> str:
    """The verb as the engine reads it: an ASCII word before the first space, upper-cased, without
    the tabs of a line that holds nothing else (RFC 5321 4.1.1: trailing white space)."""
    word, _, rest = line.partition(b" ")
    if word.endswith(b"\t") and not rest.strip(b" \t"):
        word = word.rstrip(b" \t")
    return word.decode("ascii").upper() if word.isascii() else "?"


def line_limit(verb: str, auth_mode: bool) -> int:
    if auth_mode or verb == "AUTH":
        return MAX_AUTH
    return MAX_MAIL_RCPT if verb in ("MAIL", "RCPT") else MAX_COMMAND


def bdat_args(raw: bytes) -> tuple[int, bool] | None:
    """(size, last) when the command-mode line `raw` is a BDAT command whose chunk the server
    consumes (protocol.server._cmd_bdat); None when it is refused before that."""
    line, malformed = split_line(raw)
    verb = verb_of(line)
    if malformed or verb != "BDAT" or len(line) + 2 > line_limit(verb, False) or b"\0" in line:
        return None
    try:
        arg = line.decode("utf-8").partition(" ")[2]
    except UnicodeDecodeError:
        return None
    parts = arg.split()
    if (
        not 1 <= len(parts) <= 2
        or not (parts[0].isascii() and parts[0].isdigit())
        or len(parts[0].lstrip("0")) > 15
        or (len(parts) == 2 and parts[1].upper() != "LAST")
    ):
        return None
    return int(parts[0]), len(parts) == 2


def bdat_unreadable(raw: bytes) -> bool:
    """Whether the command-mode line `raw` is a BDAT command the server cannot take the size of:
    it answers 521 5.5.4 and ends the session (protocol.server._cmd_bdat)."""
    line, malformed = split_line(raw)
    if malformed or verb_of(line) != "BDAT" or len(line) + 2 > line_limit("BDAT", False) or b"\0" in line:
        return False
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bdat_args(raw) is None


def body_fault(content: bytes) -> bool:
    """Whether a DATA body (as sent, before the final dot) breaks framing.line_fault's rules."""
    crlf = content.count(b"\r\n")
    if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
        return True
    return any(len(line) + 2 > MAX_TEXT_LINE for line in content.split(b"\r\n"))


def count_overlapping(needle: bytes, hay: bytes) -> int:
    n, pos = 0, hay.find(needle)
    while pos >= 0:
        n += 1
        pos = hay.find(needle, pos + 1)
    return n


@dataclass
class Unit:
    kind: str  # "line" | "body" | "chunk"
    raw: bytes
    verb: str = ""
    size: int = 0  # chunk
    last: bool = False  # chunk

    def __repr__(self) -> str:
        return f"{self.kind} {short(self.raw)}"


@dataclass
class Mirror:
    """The client's model of where the server is in the byte stream it was sent.

    It cuts the sent bytes into units by the framing rules the server promises, and learns the
    session state from the replies. Bytes sent and not yet matched to a reply stay in `buf`.
    """

    submission: bool  # a submission listener: no MAIL before AUTH, no relay checks
    mode: str = "cmd"  # "cmd" | "auth" | "data" | "tls" (220 to STARTTLS) | "closed"
    buf: bytearray = field(default_factory=bytearray)
    greeted: bool = False
    extended: bool = False
    authenticated: bool = False
    txn: str = ""  # "" | "mail" | "rcpt" | "bdat"
    bdat_size: int = 0
    discarded: int = 0  # octets sent after a 220 to STARTTLS
    confirmed: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # the transcript, for failure messages

    def feed(self, data: bytes) -> None:
        if self.mode in ("tls", "closed"):
            self.discarded += len(data)
        else:
            self.buf += data

    def next_unit(self) -> Unit | None:
        buf = self.buf
        if self.mode == "data":
            # The DATA line's own CRLF counts as a line end: ".\r\n" first is an empty message.
            end = (b"\r\n" + buf).find(b"\r\n.\r\n")
            return None if end < 0 else Unit("body", bytes(buf[: end + 3]))
        lf = buf.find(b"\n")
        if lf < 0:
            return None
        raw = bytes(buf[: lf + 1])
        verb = verb_of(split_line(raw)[0])
        if self.mode == "cmd":
            chunk = bdat_args(raw)
            if chunk is not None:
                size, last = chunk
                if len(buf) < len(raw) + size:
                    return None  # the server answers once the whole chunk is in
                return Unit("chunk", bytes(buf[: len(raw) + size]), verb, size, last)
        return Unit("line", raw, verb)

    def settle(self, conn: Conn, half_closed: bool = False) -> None:
        """Read the reply to every complete unit sent; then make sure nothing else is waiting
        except a 421 that closes the session (the hard error limit's, sent with the error)."""
        while self.mode not in ("tls", "closed"):
            unit = self.next_unit()
            if unit is None:
                break
            reply = conn.read_reply(repr(unit))
            assert reply is not None, f"connection closed without a reply to {unit!r}\n{self.transcript()}"
            del self.buf[: len(unit.raw)]
            self.answer(unit, reply)
        if self.mode in ("cmd", "auth", "data") and conn.pending():
            reply = conn.read_reply("nothing")
            if reply is None and half_closed:
                return  # the server's answer to our half-close, once everything is answered
            assert reply is not None, f"closed without a 421 or 221\n{self.transcript()}"
            assert reply.code == 421, f"unsolicited {reply} with every unit answered\n{self.transcript()}"
            self.answer(None, reply)
        if self.mode == "closed":
            conn.expect_eof(self.log[-1])

    def transcript(self) -> str:
        return "\n".join(self.log[-30:])

    def answer(self, unit: Unit | None, reply: Reply) -> None:
        self.log.append(f"C: {unit!r}\nS: {reply}")
        where = f"{unit!r} -> {reply}\n{self.transcript()}"
        code, enhanced = reply.code, reply.enhanced
        hello_reply = unit is not None and unit.kind == "line" and unit.verb in ("EHLO", "HELO")
        if code // 100 != 3 and not (hello_reply and enhanced is None and code in (250, 501)):
            for line in reply.lines:
                m = ENHANCED.match(line)
                assert m and int(m.group(1)) == code // 100, f"no enhanced status code: {where}"
        queued = QUEUED.search(reply.lines[-1])
        assert not queued or (unit is not None and (unit.kind == "body" or unit.last)), f"invented: {where}"
        if code == 421:
            self.mode = "closed"
            return
        assert unit is not None
        if unit.kind == "line" and self.mode == "cmd" and bdat_unreadable(unit.raw):
            assert (code, enhanced) == (521, "5.5.4"), where
            self.mode = "closed"
            return
        assert code != 521, where
        if unit.kind == "body":
            self.mode, self.txn = "cmd", ""
            if body_fault(unit.raw[:-3]):
                assert (code, enhanced) == (550, "5.6.0"), where
            else:
                assert code == 250 and queued, where
                self.confirmed.append(queued.group(1))
            return
        if unit.kind == "chunk":
            if self.extended and self.txn in ("rcpt", "bdat"):
                self.bdat_size = unit.size + (self.bdat_size if self.txn == "bdat" else 0)
                if unit.last:
                    assert code == 250 and queued, where
                    self.confirmed.append(queued.group(1))
                    self.txn = ""
                else:
                    assert reply.lines == [f"2.0.0 {self.bdat_size} octets received"], where
                    self.txn = "bdat"
            else:
                assert (code, enhanced) in ((503, "5.5.1"), (554, "5.5.1")), where
                self.txn = ""
            return
        self._answer_line(unit, reply, where)

    def _answer_line(self, unit: Unit, reply: Reply, where: str) -> None:
        code, enhanced, verb = reply.code, reply.enhanced, unit.verb
        line, malformed = split_line(unit.raw)
        auth = self.mode == "auth"
        # Past MAX_AUTH a line is too long whatever its ending; below, a bare line end comes first.
        if len(line) > MAX_AUTH or (not malformed and len(line) + 2 > line_limit(verb, auth)):
            # RFC 4954 6: an AUTH command or SASL response has a code of its own.
            assert (code, enhanced) == (500, "5.5.6" if auth or verb == "AUTH" else "5.5.2"), where
            self.mode = "cmd"  # an AUTH exchange ends with it
            return
        if malformed:
            assert (code, enhanced) == (500, "5.5.2"), where
            self.mode = "cmd"
            return
        if self.mode == "auth":
            assert code in (334, 235) or code >= 400, where
            if code != 334:
                self.mode = "cmd"
                self.authenticated = self.authenticated or code == 235
            return
        if b"\0" in line:
            assert (code, enhanced) == (501, "5.5.2"), where
            return
        if code == 354:
            assert verb == "DATA" and self.txn == "rcpt", where
            self.mode = "data"
        elif code == 334:
            assert verb == "AUTH", where
            self.mode = "auth"
        elif code == 220:
            assert verb == "STARTTLS", where
            self.mode, self.discarded = "tls", len(self.buf)
            self.buf.clear()
            self.greeted = self.extended = self.authenticated = False
            self.txn = ""
        elif code == 221:
            assert verb == "QUIT", where
            self.mode = "closed"
        elif code == 235:
            assert verb == "AUTH", where
            self.authenticated = True
        elif code == 250 and verb in ("EHLO", "HELO"):
            self.greeted, self.extended, self.txn = True, verb == "EHLO", ""
        elif code == 250 and verb == "MAIL":
            assert self.greeted and not self.txn, where
            assert self.authenticated or not self.submission, f"MAIL accepted before AUTH: {where}"
            self.txn = "mail"
        elif code == 250 and verb == "RCPT":
            assert self.txn in ("mail", "rcpt"), where
            ours = re.search(rb"(?i)@(mx|relay)\.test>|<postmaster(@mx\.test)?>", line)
            assert self.authenticated or ours, f"open relay: {where}"
            self.txn = "rcpt"
        elif code == 250 and verb == "RSET":
            self.txn = ""
        if verb == "DATA" and self.txn == "rcpt" and re.fullmatch(rb"(?i)data *", line):
            assert code == 354, where

    def possible_ends(self) -> int:
        """Messages that may have been stored although no reply said so: each possible end of a
        message in the bytes sent after the last reply read. An over-count: which of those bytes
        are commands, body or chunk only the server's replies would have told. A command may
        start after any LF and also right after the chunk of anything that reads as a BDAT
        command (a chunk need not end with a line end)."""
        if self.mode == "closed":
            return 0
        tail = bytes(self.buf)
        n = count_overlapping(b"\r\n.\r\n", (b"\r\n" if self.mode == "data" else b"") + tail)
        starts, seen = [0], set()
        while starts:
            start = starts.pop()
            lf = tail.find(b"\n", start)
            if start in seen or lf < 0:
                continue
            seen.add(start)
            starts.append(lf + 1)
            chunk = bdat_args(tail[start : lf + 1])
            if chunk is not None and len(tail) - lf - 1 >= chunk[0]:
                if chunk[1]:
                    n += 1  # a LAST chunk sent whole: a message may have ended here
                starts.append(lf + 1 + chunk[0])
        return n


# -- one session ------------------------------------------------------------------------------


@dataclass
class Outcome:
    confirmed: list[str]
    maybe: int
    tls: bool


def run_session(
    address: tuple[str, int], source: str, submission: bool, ca_file: Path, session: Session
) -> Outcome:
    started = time.monotonic()
    conn = Conn(address, source)
    mirror = Mirror(submission)
    try:
        greeting = conn.read_reply("the connection")
        assert greeting is not None and greeting.code == 220, greeting
        mirror.log.append(f"S: {greeting}")
        maybe = _drive(conn, mirror, ca_file, session)
    finally:
        conn.sock.close()
    elapsed = time.monotonic() - started
    assert elapsed < SESSION_BOUND, f"the session took {elapsed:.1f} s"
    return Outcome(mirror.confirmed, maybe, conn.tls)


def _drive(conn: Conn, mirror: Mirror, ca_file: Path, session: Session) -> int:
    """Send the session; the number of messages that may be stored without a 250 read."""
    for index, block in enumerate(session.blocks):
        units = list(block.units)
        # Before a close or reset the last block goes unanswered (the client that vanishes right
        # after its final dot); with a "cut" ending only part of it goes.
        abrupt = index == len(session.blocks) - 1 and session.ending.endswith(("close", "reset"))
        if abrupt and session.ending.startswith("cut_"):
            whole = b"".join(units)
            units = [whole[: len(whole) * session.cut // 100]]
        groups = [[u] for u in units] if block.grouping == "lockstep" and not abrupt else [units]
        for group in groups:
            data = b"".join(group)
            conn.send(data, block.piece, block.pause)
            mirror.feed(data)
            if block.grouping != "pipelined" and not abrupt:
                mirror.settle(conn)
            if mirror.mode == "closed":
                return 0
            if mirror.mode == "tls":
                if not session.tls:
                    return 0  # everything after the 220 was discarded: nothing to store
                try:
                    conn.start_tls(ca_file)
                except (ssl.SSLError, OSError) as exc:
                    # Plaintext pipelined behind STARTTLS may reach the server's TLS layer.
                    assert mirror.discarded, f"TLS handshake failed: {exc}\n{mirror.transcript()}"
                    return 0
                mirror.mode, mirror.discarded = "cmd", 0
                mirror.log.append("-- TLS --")
    if session.ending == "quit":
        conn.send(b"QUIT\r\n", 0, False)
        mirror.feed(b"QUIT\r\n")
        mirror.settle(conn)
        return mirror.possible_ends()  # 0 unless QUIT was swallowed by a body
    if session.ending == "half_close" and not conn.tls:
        with contextlib.suppress(OSError):  # the server may have closed already (421)
            conn.sock.shutdown(socket.SHUT_WR)
        mirror.settle(conn, half_closed=True)
        if mirror.mode != "closed":
            conn.expect_eof("a half-close, with everything answered")
        return 0
    maybe = mirror.possible_ends()
    conn.close(reset=session.ending.endswith("reset"))
    return maybe


# -- the test ---------------------------------------------------------------------------------

LOG_LEVEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (WARNING|ERROR|CRITICAL) ")


def queued_by_client(srv: spawn.SpawnedServer) -> dict[str, set[str]]:
    """Queue ids by the client address the server recorded, read straight from the queue."""
    db = sqlite3.connect(srv.queue_db, timeout=10)
    try:
        out: dict[str, set[str]] = {}
        for number, client_ip in db.execute("SELECT id, client_ip FROM messages"):
            out.setdefault(client_ip, set()).add(queue_id_text(number))
        return out
    finally:
        db.close()


@dataclass
class Ledger:
    """What each session was told, against what the queue holds from it.

    Each session connects from an address of its own (SOURCE_NET), which the queue records with
    every message, so a stored message is charged to the session that sent it.
    """

    before: dict[str, set[str]]  # the queue before the first session
    told: dict[str, Outcome] = field(default_factory=dict)  # by the session's client address
    log_offset: int = 0
    stats: Counter[str] = field(default_factory=Counter)

    def next_source(self) -> str:
        n = len(self.told)
        self.told[source := f"{SOURCE_NET}.{n // 250}.{n % 250 + 1}"] = Outcome([], 0, False)
        return source

    def check_queue(self, queued: dict[str, set[str]], sources: list[str]) -> None:
        unknown = set(queued) - set(self.told) - set(self.before)
        assert not unknown, f"messages from clients that no session used: {unknown}"
        announced = Counter(i for told in self.told.values() for i in told.confirmed)
        for source in sources:
            outcome, stored = self.told[source], queued.get(source, set())
            twice = [i for i in outcome.confirmed if announced[i] > 1]
            assert not twice, f"queue ids announced twice: {twice}"
            lost = set(outcome.confirmed) - stored
            assert not lost, f"250 queued as {sorted(lost)}, but not in the queue"
            unannounced = stored - set(outcome.confirmed)
            assert len(unannounced) <= outcome.maybe, (
                f"{len(unannounced)} message(s) from {source} that no 250 announced, and only "
                f"{outcome.maybe} end(s) of a message among the bytes whose replies it did not read: "
                f"{sorted(unannounced)}"
            )

    def check_log(self, srv: spawn.SpawnedServer) -> None:
        with srv.log.open("rb") as f:
            f.seek(self.log_offset)
            new = f.read()
        complete = new[: new.rfind(b"\n") + 1]
        self.log_offset += len(complete)
        text = complete.decode("utf-8", "replace")
        bad = [line for line in text.splitlines() if "Traceback" in line or LOG_LEVEL.match(line)]
        assert not bad, "the server logged:\n" + text[-4000:]


def test_random_sessions_keep_the_servers_promises(make_server: ServerFactory) -> None:
    plain_auth_port = spawn.free_ports(1, PLAIN_AUTH_HOST)[0]
    srv = make_server(
        "fuzz",
        extra=(
            f'[[listeners]]\nrole = "submission"\naddress = "{PLAIN_AUTH_HOST}"\n'
            f"port = {plain_auth_port}\nallow_plaintext_auth = true\n"
        ),
    )
    assert srv.workers == 2
    targets: dict[str, tuple[tuple[str, int], bool]] = {
        "mx": (("127.0.0.1", srv.ports["mx"]), False),
        "submission": (("127.0.0.1", srv.ports["submission"]), True),
        "plainauth": ((PLAIN_AUTH_HOST, plain_auth_port), True),
    }
    ledger = Ledger(before=queued_by_client(srv), log_offset=srv.log.stat().st_size)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(session=sessions())
    @example(session=STARTTLS_BEHIND_A_MESSAGE)
    def one_session(session: Session) -> None:
        address, submission = targets[session.listener]
        source = ledger.next_source()
        outcome = ledger.told[source] = run_session(address, source, submission, srv.ca_file, session)
        ledger.stats.update(
            sessions=1, messages=len(outcome.confirmed), maybe=outcome.maybe, tls=int(outcome.tls)
        )
        event(f"listener {session.listener}, ending {session.ending}")
        event(f"messages confirmed: {min(len(outcome.confirmed), 3)} or more")
        assert srv.proc is not None and srv.proc.poll() is None, "the server died"
        ledger.check_queue(queued_by_client(srv), [source])
        ledger.check_log(srv)

    started = time.monotonic()
    one_session()
    elapsed = time.monotonic() - started

    # Commits of connections that went away before their 250 have had time to land.
    time.sleep(0.5)
    queued = queued_by_client(srv)
    ledger.check_queue(queued, list(ledger.told))
    ledger.check_log(srv)
    stats = ledger.stats
    print(
        f"wire fuzz: {stats['sessions']} sessions in {elapsed:.1f} s, {stats['messages']} messages "
        f"confirmed, {stats['maybe']} possible unconfirmed ends, {stats['tls']} sessions under TLS; "
        f"{sum(len(ids) for source, ids in queued.items() if source in ledger.told)} messages stored"
    )
    # The grammar must keep reaching the paths it exists for, or the properties prove little.
    assert stats["messages"] >= 20 and stats["tls"] >= 5, stats

    # 4. A well-behaved client is still served.
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        smtp.ehlo("after.test")
        code, text = smtp.docmd("MAIL", "FROM:<after@client.test>")
        assert code == 250, text
        assert smtp.docmd("RCPT", "TO:<bob@mx.test>")[0] == 250
        code, text = smtp.data(b"Subject: after the fuzz\r\n\r\nstill fine\r\n")
        match = QUEUED.search(text.decode())
        assert code == 250 and match, (code, text)
    assert match.group(1) in srv.queued()
    ledger.check_log(srv)
