"""SMTP AUTH, differentially: one table of AUTH dialogues against a real mailwright and, with root,
a private Postfix whose smtpd asks a private Dovecot auth service (the usual Postfix+Dovecot pair).

Each case is a dialogue a real client or an attacker sends (every mechanism with and without an
initial response, "=", bad base64, "*" at each step, odd PLAIN messages, malformed CRAM-MD5,
sequence errors, pipelining, over-long lines). Against mailwright (its implicit-TLS submissions
listener, as a mail client uses it) every reply must be the one the RFCs call for, written in the
case: RFC 4954 sections 4 and 6 (501 5.5.2 for what cannot be decoded, 501 for a cancel, 504 5.5.4
for an unknown mechanism, 535 5.7.8 for bad credentials, 503 5.5.1 out of sequence, 500 5.5.6 for
an over-long exchange line), RFC 4616 (PLAIN), draft-murchison-sasl-login, RFC 2195 (CRAM-MD5).
Against Postfix (plain text on loopback, smtpd_tls_auth_only=no) every reply must be of the same
class (2, 3, 4 or 5), except where `DELIBERATE` says why the two differ on purpose.

Also here, against mailwright only: AUTH refused on the plain-text submission port (538 5.7.11)
and on the MX port, the lock-out after repeated failures (454 4.7.0, as docs/ say), and that an
unknown user and a wrong password take the same time to be refused.

Every connection comes from a loopback address of its own (127.0.x.y): the AUTH failure limiter
counts per client address, and one case's failures must not slow down or lock out the next.

Not responsible for: SASL parsing in depth (tests/protocol/test_sasl.py), the engine's AUTH
states (tests/protocol/test_server.py), XOAUTH2/OAUTHBEARER (not offered by the spawned server).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import socket
import ssl
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import spawn

from .differential import (
    Got,
    Wire,
    assert_table_ids,
    mailwright_server,
    private_dovecot,
    private_postfix,
    reply_class,
)

USER = spawn.USER
PASSWORD = spawn.PASSWORD
EHLO = b"EHLO client.test\r\n"
TIMEOUT = 5.0


def b64(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw)


def plain(authzid: bytes | str, user: bytes | str, password: bytes | str) -> bytes:
    enc = [x.encode() if isinstance(x, str) else x for x in (authzid, user, password)]
    return b64(b"\0".join(enc))


PLAIN_OK = plain("", USER, PASSWORD)
PLAIN_BAD = plain("", USER, "wrong password")


Step = bytes | Callable[[Got], bytes]


@dataclass(frozen=True)
class Case:
    """`steps`: (what to send, how many replies to read) in order; a callable step makes its line
    from the last reply (a CRAM-MD5 answer to the challenge). `expect`: per reply read, "334" or
    "535 5.7.8" (code, and enhanced code when given), as the RFCs ask of mailwright."""

    name: str
    steps: tuple[tuple[Step, int], ...]
    expect: tuple[str, ...]
    hello: bytes | None = EHLO


def case(name: str, *steps: Step | tuple[Step, int], expect: str, hello: bytes | None = EHLO) -> Case:
    return Case(
        name,
        tuple(s if isinstance(s, tuple) else (s, 1) for s in steps),
        tuple(expect.split(" / ")),
        hello,
    )


def cram(
    user: bytes | str, secret: str = PASSWORD, shape: Callable[[str], str] = lambda d: d, sep: bytes = b" "
) -> Step:
    """The RFC 2195 answer to the challenge in the last 334; `shape` alters the hex digest."""
    name = user.encode() if isinstance(user, str) else user

    def answer(last: Got) -> bytes:
        challenge = base64.b64decode(last.first)
        digest = hmac.new(secret.encode(), challenge, hashlib.md5).hexdigest()
        return b64(name + sep + shape(digest).encode()) + b"\r\n"

    return answer


def line(text: bytes) -> bytes:
    return text + b"\r\n"


LONG = 13000  # past RFC 4954's 12288-octet line limit mailwright applies (MAX_AUTH)

CASES: tuple[Case, ...] = (
    # -- each mechanism, with and without an initial response (RFC 4954 4) ---------------------
    case("plain-ir", line(b"AUTH PLAIN " + PLAIN_OK), expect="235 2.7.0"),
    case("plain-no-ir", b"AUTH PLAIN\r\n", line(PLAIN_OK), expect="334 / 235 2.7.0"),
    case("plain-empty-ir", b"AUTH PLAIN =\r\n", line(PLAIN_OK), expect="334 / 235 2.7.0"),
    case("plain-ir-wrong-password", line(b"AUTH PLAIN " + PLAIN_BAD), expect="535 5.7.8"),
    case(
        "plain-ir-unknown-user", line(b"AUTH PLAIN " + plain("", "nobody@mx.test", "x")), expect="535 5.7.8"
    ),
    case(
        "plain-user-domain-case",
        line(b"AUTH PLAIN " + plain("", "alice@MX.TEST", PASSWORD)),
        expect="235 2.7.0",
    ),
    case("login", b"AUTH LOGIN\r\n", line(b64(USER)), line(b64(PASSWORD)), expect="334 / 334 / 235 2.7.0"),
    case("login-ir-user", line(b"AUTH LOGIN " + b64(USER)), line(b64(PASSWORD)), expect="334 / 235 2.7.0"),
    case(
        "login-wrong-password",
        b"AUTH LOGIN\r\n",
        line(b64(USER)),
        line(b64("nope")),
        expect="334 / 334 / 535 5.7.8",
    ),
    case(
        "login-unknown-user",
        b"AUTH LOGIN\r\n",
        line(b64("nobody@mx.test")),
        line(b64("x")),
        expect="334 / 334 / 535 5.7.8",
    ),
    # "=" is an empty initial response; LOGIN's user name cannot be empty.
    case("login-empty-ir", b"AUTH LOGIN =\r\n", expect="501 5.5.2"),
    case("cram", b"AUTH CRAM-MD5\r\n", cram(USER), expect="334 / 235 2.7.0"),
    case("cram-wrong-secret", b"AUTH CRAM-MD5\r\n", cram(USER, "wrong"), expect="334 / 535 5.7.8"),
    case("cram-unknown-user", b"AUTH CRAM-MD5\r\n", cram("nobody@mx.test"), expect="334 / 535 5.7.8"),
    # RFC 2195 sends the digest in lower case; hex digits in either case name the same digest.
    case("cram-upper-hex", b"AUTH CRAM-MD5\r\n", cram(USER, shape=str.upper), expect="334 / 235 2.7.0"),
    case("cram-no-space", b"AUTH CRAM-MD5\r\n", cram(USER, sep=b""), expect="334 / 501 5.5.2"),
    case(
        "cram-short-digest",
        b"AUTH CRAM-MD5\r\n",
        cram(USER, shape=lambda d: d[:31]),
        expect="334 / 501 5.5.2",
    ),
    case(
        "cram-long-digest",
        b"AUTH CRAM-MD5\r\n",
        cram(USER, shape=lambda d: d + "0"),
        expect="334 / 501 5.5.2",
    ),
    case(
        "cram-non-hex",
        b"AUTH CRAM-MD5\r\n",
        cram(USER, shape=lambda d: "g" + d[1:]),
        expect="334 / 501 5.5.2",
    ),
    case("cram-empty-response", b"AUTH CRAM-MD5\r\n", b"\r\n", expect="334 / 501 5.5.2"),
    # The server speaks first in CRAM-MD5 (RFC 2195 2): an initial response has no place.
    case("cram-ir", line(b"AUTH CRAM-MD5 " + b64(USER + " 0123")), expect="501 5.5.2"),
    # -- base64 (RFC 4954 4: "cannot BASE64 decode" is 501 5.5.2) ------------------------------
    case("ir-missing-padding", line(b"AUTH PLAIN " + PLAIN_OK.rstrip(b"=")), expect="501 5.5.2"),
    case("ir-excess-padding", line(b"AUTH PLAIN " + PLAIN_OK + b"=="), expect="501 5.5.2"),
    case("ir-invalid-char", line(b"AUTH PLAIN " + PLAIN_OK[:-4] + b"!!!!"), expect="501 5.5.2"),
    case("ir-url-safe-alphabet", line(b"AUTH PLAIN " + b"AGFs-_" + PLAIN_OK[6:]), expect="501 5.5.2"),
    case("response-invalid-char", b"AUTH PLAIN\r\n", line(b"%%%%"), expect="334 / 501 5.5.2"),
    case(
        "response-inner-space",
        b"AUTH PLAIN\r\n",
        line(PLAIN_OK[:8] + b" " + PLAIN_OK[8:]),
        expect="334 / 501 5.5.2",
    ),
    case("response-trailing-space", b"AUTH PLAIN\r\n", line(PLAIN_OK + b" "), expect="334 / 501 5.5.2"),
    case("login-user-bad-base64", b"AUTH LOGIN\r\n", line(b"YWxpY2U"), expect="334 / 501 5.5.2"),
    case(
        "login-password-bad-base64",
        b"AUTH LOGIN\r\n",
        line(b64(USER)),
        line(b"$$$$"),
        expect="334 / 334 / 501 5.5.2",
    ),
    # RFC 4954 6: an exchange line longer than the server's buffer is 500 5.5.6.
    case("response-too-long", b"AUTH PLAIN\r\n", line(b"A" * LONG), expect="334 / 500 5.5.6"),
    case("auth-line-too-long", line(b"AUTH PLAIN " + b"A" * LONG), expect="500 5.5.6"),
    case(
        "response-too-long-then-ok",
        b"AUTH LOGIN\r\n",
        line(b"A" * LONG),
        line(b"AUTH PLAIN " + PLAIN_OK),
        expect="334 / 500 5.5.6 / 235 2.7.0",
    ),
    # -- cancel: "*" ends the exchange with 501 (RFC 4954 4) -----------------------------------
    case("plain-cancel", b"AUTH PLAIN\r\n", b"*\r\n", expect="334 / 501"),
    case("login-cancel-user", b"AUTH LOGIN\r\n", b"*\r\n", expect="334 / 501"),
    case("login-cancel-password", b"AUTH LOGIN\r\n", line(b64(USER)), b"*\r\n", expect="334 / 334 / 501"),
    case("login-ir-cancel-password", line(b"AUTH LOGIN " + b64(USER)), b"*\r\n", expect="334 / 501"),
    case("cram-cancel", b"AUTH CRAM-MD5\r\n", b"*\r\n", expect="334 / 501"),
    case(
        "cancel-then-ok",
        b"AUTH PLAIN\r\n",
        b"*\r\n",
        line(b"AUTH PLAIN " + PLAIN_OK),
        expect="334 / 501 / 235 2.7.0",
    ),
    # "*" is not base64: as an initial response it cannot be decoded either way.
    case("ir-star", b"AUTH PLAIN *\r\n", expect="501"),
    # -- PLAIN message contents (RFC 4616 2) ---------------------------------------------------
    case("plain-authzid-same", line(b"AUTH PLAIN " + plain(USER, USER, PASSWORD)), expect="235 2.7.0"),
    # The same user, its domain written in another case, as the user store compares names.
    case(
        "plain-authzid-same-other-case",
        line(b"AUTH PLAIN " + plain(USER.upper(), USER, PASSWORD)),
        expect="535 5.7.8",
    ),
    case(
        "plain-authzid-same-domain-case",
        line(b"AUTH PLAIN " + plain(USER.replace("mx.test", "MX.Test"), USER, PASSWORD)),
        expect="235 2.7.0",
    ),
    # Acting for another user needs a right nobody has here: the credentials are refused.
    case(
        "plain-authzid-other", line(b"AUTH PLAIN " + plain("bob@mx.test", USER, PASSWORD)), expect="535 5.7.8"
    ),
    case("plain-one-nul", line(b"AUTH PLAIN " + b64(f"{USER}\0{PASSWORD}")), expect="501 5.5.2"),
    case("plain-no-nul", line(b"AUTH PLAIN " + b64(f"{USER}{PASSWORD}")), expect="501 5.5.2"),
    case("plain-three-nuls", line(b"AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}\0")), expect="501 5.5.2"),
    case("plain-nul-in-password", line(b"AUTH PLAIN " + b64(f"\0{USER}\0pa\0ss")), expect="501 5.5.2"),
    case("plain-empty-password", line(b"AUTH PLAIN " + plain("", USER, "")), expect="501 5.5.2"),
    case("plain-empty-user", line(b"AUTH PLAIN " + plain("", "", PASSWORD)), expect="501 5.5.2"),
    case("plain-empty-message", b"AUTH PLAIN\r\n", b"\r\n", expect="334 / 501 5.5.2"),
    case(
        "plain-user-not-utf8",
        line(b"AUTH PLAIN " + plain(b"", b"al\xffce@mx.test", PASSWORD)),
        expect="501 5.5.2",
    ),
    case("plain-password-not-utf8", line(b"AUTH PLAIN " + plain(b"", USER, b"pass\xc3")), expect="501 5.5.2"),
    case(
        "plain-user-control-char",
        line(b"AUTH PLAIN " + plain("", "ali\rce@mx.test", PASSWORD)),
        expect="501 5.5.2",
    ),
    case("plain-user-too-long", line(b"AUTH PLAIN " + plain("", "a" * 2000, PASSWORD)), expect="501 5.5.2"),
    # -- the AUTH command itself (RFC 4954 4) --------------------------------------------------
    case("unknown-mechanism", b"AUTH FOO-BAR\r\n", expect="504 5.5.4"),
    case("mechanism-not-offered", b"AUTH XOAUTH2\r\n", expect="504 5.5.4"),
    # SASL mechanism names are case-insensitive (RFC 4422 3.1); so are SMTP verbs.
    case("lower-case-mechanism", line(b"AUTH plain " + PLAIN_OK), expect="235 2.7.0"),
    case("lower-case-verb", line(b"auth login " + b64(USER)), line(b64(PASSWORD)), expect="334 / 235 2.7.0"),
    case("no-mechanism", b"AUTH\r\n", expect="501 5.5.4"),
    # RFC 5321 4.1.1: trailing white space SHOULD be tolerated; an empty initial response is "=".
    case("cram-trailing-space", b"AUTH CRAM-MD5 \r\n", cram(USER), expect="334 / 235 2.7.0"),
    case(
        "login-trailing-space",
        b"AUTH LOGIN \r\n",
        line(b64(USER)),
        line(b64(PASSWORD)),
        expect="334 / 334 / 235 2.7.0",
    ),
    case("ir-trailing-space", line(b"AUTH PLAIN " + PLAIN_OK + b" "), expect="235 2.7.0"),
    # The separator is one SP (RFC 5321 4.1.1, RFC 4954 4); what is no mechanism name is a syntax error.
    case("tab-separator", line(b"AUTH PLAIN\t" + PLAIN_OK), expect="501 5.5.4"),
    case("double-space", line(b"AUTH  PLAIN " + PLAIN_OK), expect="501 5.5.4"),
    case("non-ascii-mechanism", line("AUTH PLA\u0131N ".encode() + PLAIN_OK), expect="501 5.5.4"),
    case("mechanism-name-too-long", b"AUTH " + b"X" * 21 + b"\r\n", expect="501 5.5.4"),
    case("too-many-arguments", line(b"AUTH PLAIN " + PLAIN_OK + b" extra"), expect="501 5.5.4"),
    case("nul-in-auth-line", b"AUTH PLAIN\0 " + PLAIN_OK + b"\r\n", expect="501 5.5.2"),
    # -- sequence (RFC 4954 4: 503 after success and during a transaction) ---------------------
    case(
        "auth-twice",
        line(b"AUTH PLAIN " + PLAIN_OK),
        line(b"AUTH PLAIN " + PLAIN_OK),
        expect="235 2.7.0 / 503 5.5.1",
    ),
    case(
        "auth-twice-other-mechanism",
        line(b"AUTH PLAIN " + PLAIN_OK),
        b"AUTH LOGIN\r\n",
        expect="235 2.7.0 / 503 5.5.1",
    ),
    case(
        "retry-after-failure",
        line(b"AUTH PLAIN " + PLAIN_BAD),
        line(b"AUTH PLAIN " + PLAIN_OK),
        expect="535 5.7.8 / 235 2.7.0",
    ),
    case(
        "auth-during-transaction",
        line(b"AUTH PLAIN " + PLAIN_OK),
        line(f"MAIL FROM:<{USER}>".encode()),
        line(b"AUTH PLAIN " + PLAIN_OK),
        expect="235 2.7.0 / 250 / 503 5.5.1",
    ),
    case("auth-before-ehlo", line(b"AUTH PLAIN " + PLAIN_OK), expect="503 5.5.1", hello=None),
    case(
        "auth-after-helo", line(b"AUTH PLAIN " + PLAIN_OK), expect="235 2.7.0", hello=b"HELO client.test\r\n"
    ),
    case(
        "auth-after-rset",
        line(b"AUTH PLAIN " + PLAIN_OK),
        b"RSET\r\n",
        b"AUTH LOGIN\r\n",
        expect="235 2.7.0 / 250 / 503 5.5.1",
    ),
    case("mail-before-auth", line(f"MAIL FROM:<{USER}>".encode()), expect="530 5.7.0"),
    case(
        "ehlo-after-auth-keeps-it",
        line(b"AUTH PLAIN " + PLAIN_OK),
        EHLO,
        line(f"MAIL FROM:<{USER}>".encode()),
        expect="235 2.7.0 / 250 / 250",
    ),
    # -- AUTH= on MAIL FROM (RFC 4954 5) -------------------------------------------------------
    case(
        "mail-auth-null",
        line(b"AUTH PLAIN " + PLAIN_OK),
        line(f"MAIL FROM:<{USER}> AUTH=<>".encode()),
        expect="235 2.7.0 / 250",
    ),
    case(
        "mail-auth-addr",
        line(b"AUTH PLAIN " + PLAIN_OK),
        line(f"MAIL FROM:<{USER}> AUTH={USER}".encode()),
        expect="235 2.7.0 / 250",
    ),
    case(
        "mail-auth-xtext",
        line(b"AUTH PLAIN " + PLAIN_OK),
        line(f"MAIL FROM:<{USER}> AUTH=al+2Bce@mx.test".encode()),
        expect="235 2.7.0 / 250",
    ),
    # -- pipelining (RFC 4954 4: an initial response saves a round trip; RFC 2920) -------------
    case(
        "pipelined-after-ir",
        (
            line(b"AUTH PLAIN " + PLAIN_OK)
            + line(f"MAIL FROM:<{USER}>".encode())
            + b"RCPT TO:<bob@mx.test>\r\n",
            3,
        ),
        expect="235 2.7.0 / 250 / 250",
    ),
    case(
        "pipelined-failed-ir",
        (line(b"AUTH PLAIN " + PLAIN_BAD) + line(f"MAIL FROM:<{USER}>".encode()), 2),
        expect="535 5.7.8 / 530 5.7.0",
    ),
    case(
        "pipelined-bad-base64-then-mail",
        (b"AUTH PLAIN ###\r\n" + line(f"MAIL FROM:<{USER}>".encode()), 2),
        expect="501 5.5.2 / 530 5.7.0",
    ),
    # A command sent where a response is due is a response (RFC 4954 4): here not base64.
    case(
        "command-inside-exchange",
        b"AUTH LOGIN\r\n",
        b"MAIL FROM:<alice@mx.test>\r\n",
        expect="334 / 501 5.5.2",
    ),
    case("quit-inside-exchange", b"AUTH PLAIN\r\n", b"QUIT\r\n", b"NOOP\r\n", expect="334 / 501 5.5.2 / 250"),
    # RFC 5321 2.3.8: a line ends with CRLF only; the exchange ends with the error (as any command would).
    case(
        "bare-lf-response", b"AUTH PLAIN\r\n", PLAIN_OK + b"\n", b"NOOP\r\n", expect="334 / 500 5.5.2 / 250"
    ),
)

# Where Postfix+Dovecot (Debian 12: Postfix 3.7, Dovecot 2.3.19) answer with another class, and
# why mailwright's answer is the one kept. Where both refuse but with other codes (Postfix answers
# 535 5.7.8 to bad base64, to a malformed PLAIN message and to an unknown mechanism, where RFC 4954
# 4 asks 501 5.5.2 and 504 5.5.4) the classes agree and the cases are not listed.
DELIBERATE: dict[str, str] = {
    "plain-empty-ir": "RFC 4954 4: '=' is an empty initial response, so PLAIN asks for its message "
    "(334); Postfix passes '=' on and Dovecot fails it (535), and the client's next line is a command",
    "login-empty-ir": "an empty user name cannot authenticate: 501 at once; Dovecot takes '=' as no "
    "initial response and prompts for the user name (334)",
    "cram-long-digest": "RFC 2195: the digest is 32 hex digits; Dovecot accepts one with a 33rd appended",
    "cram-ir": "RFC 4954 4: an initial response to a server-first mechanism MUST get 501; Dovecot "
    "ignores it and sends the challenge",
    "cram-upper-hex": "upper-case hex names the same HMAC, so mailwright accepts it (nothing is weaker); "
    "Dovecot compares the text and refuses",
    "nul-in-auth-line": "a NUL in a command is refused (501 5.5.2); Postfix cuts the line at the NUL",
    "auth-before-ehlo": "AUTH is an ESMTP extension, offered in the EHLO reply (RFC 4954 3): 503 "
    "before it; Postfix authenticates",
    "tab-separator": "the separator is one SP (RFC 5321 4.1.1); Postfix splits at any white space",
    "double-space": "the separator is one SP (RFC 5321 4.1.1); Postfix splits at any white space",
    "bare-lf-response": "a line ends with CRLF only (RFC 5321 2.3.8), as everywhere in mailwright; "
    "Postfix takes a bare LF as a line end",
    "plain-authzid-same-domain-case": "the authzid names the authenticated user as the user store "
    "compares names (domains in any case; RFC 4616 2 lets a server take an authzid that is the "
    "same user); Dovecot compares the text, so it asks for a master user's right",
}


# -- the wire ------------------------------------------------------------------------------------


_sources = itertools.count(2)


def source_address() -> str:
    """A loopback address no other case used (the AUTH limiter counts per client address)."""
    n = next(_sources)
    return f"127.0.{n // 250 + 1}.{n % 250 + 1}"


@contextlib.contextmanager
def connect(port: int, tls: ssl.SSLContext | None, source: str | None = None) -> Iterator[Wire]:
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=TIMEOUT, source_address=(source or source_address(), 0)
    )
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=spawn.LOCAL_DOMAIN)
        wire = Wire(sock, TIMEOUT)
        greeting = wire.reply()
        assert greeting.code == "220", greeting
        yield wire
    finally:
        sock.close()


def run_case(c: Case, port: int, tls: ssl.SSLContext | None) -> list[Got]:
    with connect(port, tls) as wire:
        if c.hello is not None:
            wire.send(c.hello)
            assert wire.reply().code == "250"
        got: list[Got] = []
        for step, replies in c.steps:
            data = step(got[-1]) if callable(step) else step
            wire.send(data)
            for _ in range(replies):
                got.append(wire.reply())
        return got


def matches(got: Got, want: str) -> bool:
    code, _, enhanced = want.partition(" ")
    return got.code == code and (not enhanced or got.enhanced == enhanced)


# -- the reference: a private Dovecot auth service and a private Postfix ------------------------


@dataclass
class Reference:
    port: int


# -- tests ---------------------------------------------------------------------------------------


LOCKOUT = 2.0


server = mailwright_server("authdiff", auth=f"max_failures = 3\nlockout = {LOCKOUT}")


@pytest.fixture(scope="module")
def client_tls(server: spawn.SpawnedServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


@pytest.fixture(scope="module")
def reference() -> Iterator[Reference]:
    """Postfix's smtpd asking Dovecot's auth service (the usual pair), or pytest.skip saying why not."""
    with (
        private_dovecot({USER: PASSWORD}) as sasl_path,
        private_postfix(
            {
                "myhostname": spawn.LOCAL_DOMAIN,
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": str(sasl_path),
                "smtpd_tls_auth_only": "no",
                # As mailwright's submission: no MAIL without AUTH (RFC 6409 4.3), refused at MAIL.
                "smtpd_delay_reject": "no",
                "smtpd_sender_restrictions": "permit_sasl_authenticated, reject",
                "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
                "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
            }
        ) as pf,
    ):
        yield Reference(pf.port)


def test_table_is_large_enough() -> None:
    assert_table_ids([c.name for c in CASES], DELIBERATE, 60)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_mailwright(server: spawn.SpawnedServer, client_tls: ssl.SSLContext, c: Case) -> None:
    got = run_case(c, server.ports["submissions"], client_tls)
    shown = " / ".join(map(str, got))
    assert len(got) == len(c.expect) and all(map(matches, got, c.expect)), f"{c.name}: got {shown}"


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_postfix_dovecot_agree_on_the_class(reference: Reference, c: Case) -> None:
    got = run_case(c, reference.port, None)
    shown = " / ".join(map(str, got))
    agree = len(got) == len(c.expect) and all(
        reply_class(g.code) == reply_class(w) for g, w in zip(got, c.expect, strict=False)
    )
    if c.name in DELIBERATE:
        # Listed differences must stay real: a reference that changed is a list to update.
        assert not agree, f"{c.name} is listed as a deliberate difference but Postfix agrees: {shown}"
    else:
        assert agree, f"{c.name}: Postfix+Dovecot said {shown}, mailwright's is {' / '.join(c.expect)}"


def test_auth_needs_tls_on_the_submission_port(server: spawn.SpawnedServer) -> None:
    """RFC 4954 4 and 6: 538 5.7.11 where the mechanism needs encryption (no plain-text AUTH off
    loopback-configured listeners); nothing is offered in the EHLO reply, and MAIL needs STARTTLS."""
    with connect(server.ports["submission"], None) as wire:
        wire.send(EHLO)
        keywords = [text.split(" ")[0].upper() for text in wire.reply().lines[1:]]
        # It read only the reply's first line, where no keyword stands: it could not fail.
        assert "STARTTLS" in keywords and "AUTH" not in keywords, keywords
        for command in (b"AUTH PLAIN " + PLAIN_OK, b"AUTH CRAM-MD5", b"AUTH LOGIN"):
            wire.send(line(command))
            assert matches(wire.reply(), "538 5.7.11")
        wire.send(line(f"MAIL FROM:<{USER}>".encode()))
        assert matches(wire.reply(), "530 5.7.0")


def test_auth_is_not_offered_on_the_mx_port(server: spawn.SpawnedServer) -> None:
    with connect(server.ports["mx"], None) as wire:
        wire.send(EHLO)
        wire.reply()
        wire.send(line(b"AUTH PLAIN " + PLAIN_OK))
        assert matches(wire.reply(), "502 5.5.1")
        # RFC 1869 / 4954 5: AUTH= belongs to an extension this listener did not offer.
        wire.send(line(f"MAIL FROM:<{USER}> AUTH=<>".encode()))
        assert matches(wire.reply(), "555 5.5.4")


def test_repeated_failures_lock_the_client_out_then_it_may_try_again(
    server: spawn.SpawnedServer, client_tls: ssl.SSLContext
) -> None:
    """As docs/architecture.md says: a growing delay before each 535, and the max_failures-th
    failure locks the client address out for `lockout` seconds with 454 4.7.0 (RFC 4954 6), the
    right password included; afterwards it authenticates. Postfix+Dovecot answer 535 for ever."""
    source = source_address()
    port = server.ports["submissions"]
    with connect(port, client_tls, source) as wire:
        wire.send(EHLO)
        wire.reply()
        seen = []
        for _ in range(3):
            start = time.monotonic()
            wire.send(line(b"AUTH PLAIN " + PLAIN_BAD))
            seen.append((wire.reply(), time.monotonic() - start))
        assert [str(g)[:9] for g, _ in seen] == ["535 5.7.8", "535 5.7.8", "454 4.7.0"], seen
        assert seen[0][1] >= 0.2 and seen[1][1] >= 0.45 and seen[2][1] >= 0.95, seen  # 0.25 s doubling
        locked_at = time.monotonic()
        wire.send(line(b"AUTH PLAIN " + PLAIN_OK))
        assert matches(wire.reply(), "454 4.7.0")
    with connect(port, client_tls, source) as wire:  # the address is locked, not the connection
        wire.send(EHLO)
        wire.reply()
        wire.send(b"AUTH LOGIN\r\n" + line(b64(USER)) + line(b64(PASSWORD)))
        assert [str(wire.reply())[:3] for _ in range(3)] == ["334", "334", "454"]
    with connect(port, client_tls) as wire:  # another client is not locked out
        wire.send(EHLO)
        wire.reply()
        wire.send(line(b"AUTH PLAIN " + PLAIN_OK))
        assert matches(wire.reply(), "235 2.7.0")
    time.sleep(max(0.0, locked_at + LOCKOUT + 0.2 - time.monotonic()))
    with connect(port, client_tls, source) as wire:
        wire.send(EHLO)
        wire.reply()
        wire.send(line(b"AUTH PLAIN " + PLAIN_OK))
        assert matches(wire.reply(), "235 2.7.0")


def refusal_time(port: int, tls: ssl.SSLContext | None, user: str) -> float:
    """Seconds from a wrong PLAIN initial response to its 535, from a fresh client address."""
    with connect(port, tls) as wire:
        wire.send(EHLO)
        wire.reply()
        start = time.perf_counter()
        wire.send(line(b"AUTH PLAIN " + plain("", user, "wrong password")))
        got = wire.reply()
        elapsed = time.perf_counter() - start
    assert matches(got, "535 5.7.8"), got
    return elapsed


def test_an_unknown_user_is_refused_as_slowly_as_a_wrong_password(
    server: spawn.SpawnedServer, client_tls: ssl.SSLContext
) -> None:
    """The store checks a dummy scrypt hash for an unknown user (users.store): were it skipped, the
    unknown user's 535 would come one scrypt (~50 ms) sooner, and names could be probed."""
    from mailwright.users import passwords

    costs = []
    for _ in range(3):
        start = time.perf_counter()
        passwords.verify("x", passwords.DUMMY_HASH)
        costs.append(time.perf_counter() - start)
    scrypt = statistics.median(costs)
    unknown, known = [], []
    for _ in range(6):  # interleaved, so a busy moment of the machine falls on both
        unknown.append(refusal_time(server.ports["submissions"], client_tls, "nobody@mx.test"))
        known.append(refusal_time(server.ports["submissions"], client_tls, USER))
    gap = statistics.median(known) - statistics.median(unknown)
    assert abs(gap) < scrypt / 2, (f"scrypt {scrypt:.3f} s", sorted(unknown), sorted(known))
