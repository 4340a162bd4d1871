"""The session commands, side by side: what mailwright answers, and whether Postfix's smtpd agrees.

`CASES` is a table of the commands other than MAIL/RCPT/DATA/BDAT/AUTH as real clients, broken
clients and probers send them: the greeting; HELO and EHLO with every kind of argument (address
literals valid and not, bare IP addresses, underscores, trailing dots, UTF-8 and Latin-1, 255 and
505 octets, empty, extra words, control characters) and in every state (repeated, after a
transaction, HELO after EHLO, refused in a transaction, after STARTTLS); NOOP, RSET, VRFY, EXPN,
HELP and QUIT with and without arguments; verbs in any case and with trailing white space; unknown
verbs, HTTP requests, empty lines; commands sent before the greeting (early talkers); STARTTLS with
arguments, twice, in a transaction, pipelined with other commands (RFC 3207 6); commands after
QUIT in the same packet. Each case is one connection: its setup commands (each must succeed), then
its octets in one write, then its replies.

- Always: a real `mailwright serve` (tests/spawn.py) must give each case the replies written in
  the table, code and enhanced status code ("250" alone means: none, as RFC 2034 3 has it for the
  greeting and the EHLO reply), chosen from RFC 5321, 3207, 2034 and 3463, not copied from a run;
  where a reply must say what is wrong, the case names the words. Every reply line is at most 512
  octets (RFC 5321 4.5.3.1.5). After the case, unless it closed the session, a NOOP must get its
  250: the session is still in step.
- As root with Postfix installed: a private Postfix smtpd (bench/postfix_instance.py, with TLS)
  gets the same cases and must agree on the class (2xx/3xx/4xx/5xx) of every reply, on the
  session being closed, and on its being in step, except for `DELIBERATE`, each with its reason.
  That list is exact: a case on it that no longer differs fails too.

Also here: the error limit (20 errors, then 421, as Postfix's smtpd_hard_error_limit) and the junk
command limit (smtpd_junk_command_limit: NOOP, RSET, VRFY, HELO and EHLO) counted on both servers,
to the command: EXPN and EHLO loops end too; VRFY answering the same for a user that exists and one
that does not; STARTTLS on the implicit-TLS listener; the EHLO reply before and after STARTTLS on
the submission listener (RFC 3207 4.2).

Not responsible for: MAIL/RCPT (test_envelope_differential.py), AUTH (test_auth_differential.py),
DATA/BDAT bodies and floods (test_hostile.py, tests/protocol).
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import spawn

from . import differential
from .differential import (
    Disagreements,
    Got,
    assert_table_ids,
    mailwright_server,
    private_postfix,
    reply_class,
)

TIMEOUT = 5.0
EHLO = "EHLO client.test"
# Setups: the commands sent first, each of which must get a 2xx; "STARTTLS" also does the handshake.
SETUPS: dict[str, tuple[str, ...]] = {
    "none": (),
    "ehlo": (EHLO,),
    "helo": ("HELO client.test",),
    "mail": (EHLO, "MAIL FROM:<s@client.test>"),
    "rcpt": (EHLO, "MAIL FROM:<s@client.test>", "RCPT TO:<u@mx.test>"),
    "tls": (EHLO, "STARTTLS"),  # TLS up, no EHLO since: the session has started over
    "tls-ehlo": (EHLO, "STARTTLS", EHLO),
}


@dataclass(frozen=True)
class Case:
    id: str
    setup: str
    send: bytes  # one write: one or more lines, CRLF included
    expect: tuple[str, ...]  # each reply: "code enhanced", "code" (no enhanced code) or "closed"
    says: str = ""  # words the last reply must contain (case-insensitive, any of its lines)
    lacks: str = ""  # words the last reply must not contain
    early: bool = False  # sent before the greeting is read
    tls_after: bool = False  # the last reply is STARTTLS's 220: hand shake, then EHLO must get 250


CASES: list[Case] = []


def c(
    id: str,
    setup: str,
    lines: str | bytes | tuple[str | bytes, ...],
    *expect: str,
    says: str = "",
    lacks: str = "",
    early: bool = False,
    tls_after: bool = False,
) -> None:
    parts = lines if isinstance(lines, tuple) else (lines,)
    send = b"".join((p.encode() if isinstance(p, str) else p) + b"\r\n" for p in parts)
    CASES.append(Case(id, setup, send, expect, says, lacks, early, tls_after))


OK, HELLO = "250 2.0.0", "250"  # HELLO: the EHLO/HELO reply carries no enhanced code (RFC 2034 3)
HELLO_SYNTAX = "501"  # nor does a refusal of HELO/EHLO: "any response to HELO or EHLO" (RFC 2034 3)
SYNTAX = "501 5.5.4"  # RFC 3463 5.5.4: invalid command arguments
UNKNOWN = "500 5.5.1"  # RFC 5321 4.2.4 500; RFC 3463 5.5.1 invalid command
SEQUENCE = "503 5.5.1"
TOO_LONG = "500 5.5.2"
BYE = "221 2.0.0"
CANNOT_VRFY = "252 2.5.0"  # RFC 5321 3.5.3: cannot verify, will attempt delivery
RCPT_OK = "250 2.1.5"
TLS_GO = "220 2.0.0"
RCPT = "RCPT TO:<u@mx.test>"
LONG_NAME = ".".join(["d" * 63] * 3) + "." + "e" * 58 + ".test"  # 255 octets, a domain's limit
assert len(LONG_NAME) == 255

# -- the greeting (RFC 5321 4.2, 3.1; RFC 2034 3: no enhanced code)
c("greeting", "none", (), says=spawn.LOCAL_DOMAIN)  # the greeting is the case's only reply

# -- HELO / EHLO: arguments (RFC 5321 4.1.1.1, 4.1.3, 4.1.4: do not refuse what only looks odd)
c("ehlo", "none", EHLO, HELLO, says="PIPELINING")
c("helo", "none", "HELO client.test", HELLO, lacks="PIPELINING")
c("ehlo-lower", "none", "ehlo client.test", HELLO, says="PIPELINING")
c("ehlo-mixed", "none", "EhLo client.test", HELLO)
c("helo-lower", "none", "helo client.test", HELLO)
c("ehlo-literal-v4", "none", "EHLO [127.0.0.1]", HELLO)
c("ehlo-literal-v6", "none", "EHLO [IPv6:::1]", HELLO)
c("ehlo-literal-v6-doc", "none", "EHLO [IPv6:2001:db8::25]", HELLO)
c("ehlo-literal-v6-lower-tag", "none", "EHLO [ipv6:2001:db8::25]", HELLO)
c("ehlo-literal-v6-no-tag", "none", "EHLO [2001:db8::25]", HELLO)  # invalid, but only a name
c("ehlo-literal-out-of-range", "none", "EHLO [300.1.1.1]", HELLO)
c("ehlo-literal-unterminated", "none", "EHLO [127.0.0.1", HELLO)
c("ehlo-bare-ipv4", "none", "EHLO 127.0.0.1", HELLO)  # common among broken clients
c("ehlo-bare-ipv6", "none", "EHLO 2001:db8::25", HELLO)
c("ehlo-underscore", "none", "EHLO my_pc.example", HELLO)  # Windows machine names
c("ehlo-trailing-dot", "none", "EHLO client.test.", HELLO)
c("ehlo-single-label", "none", "EHLO localhost", HELLO)
c("ehlo-numeric-label", "none", "EHLO 123", HELLO)
c("ehlo-utf8", "none", "EHLO bücher.test", HELLO)
c("ehlo-latin1", "none", b"EHLO b\xfccher.test", "501 5.5.2", says="UTF-8")
c("ehlo-255", "none", "EHLO " + LONG_NAME, HELLO)
c("ehlo-505", "none", "EHLO " + "x" * 505, HELLO)  # the longest line of 512 octets
c("ehlo-506", "none", "EHLO " + "x" * 506, TOO_LONG, says="too long")
c("ehlo-semicolon", "none", "EHLO a;b", HELLO)  # neutered in Received: (policy.cleanup)
c("ehlo-empty", "none", "EHLO", HELLO_SYNTAX, says="EHLO hostname")
c("ehlo-empty-tab", "none", "EHLO\t", HELLO_SYNTAX, says="EHLO hostname")
c("ehlo-space-only", "none", "EHLO ", HELLO_SYNTAX, says="EHLO hostname")
c("helo-empty", "none", "HELO", HELLO_SYNTAX, says="HELO hostname")
c("ehlo-two-words", "none", "EHLO client.test extra", HELLO_SYNTAX, says="EHLO hostname")
c("helo-two-words", "none", "HELO my host", HELLO_SYNTAX, says="HELO hostname")
c("ehlo-two-spaces", "none", "EHLO  client.test", HELLO)
c("ehlo-trailing-space", "none", "EHLO client.test ", HELLO)
c("ehlo-trailing-tab", "none", "EHLO client.test\t", HELLO)  # RFC 5321 4.1.1: trailing white space
c("ehlo-tab-separator", "none", "EHLO\tclient.test", UNKNOWN)  # SP only (4.1.1.1)
c("ehlo-control", "none", b"EHLO a\x01b", HELLO_SYNTAX, says="EHLO hostname")
c("ehlo-nul", "none", b"EHLO a\x00b", "501 5.5.2", says="NUL")
# A bare LF ends the line, which is refused (RFC 5321 2.3.8): one reply per line, as the client counts.
c("ehlo-bare-lf", "none", b"EHLO a\nb", "500 5.5.2", UNKNOWN)
# -- HELO / EHLO: in each state (RFC 5321 4.1.4: EHLO again resets; a refused one changes nothing)
c("ehlo-again", "ehlo", EHLO, HELLO, says="PIPELINING")
c("ehlo-after-helo", "helo", EHLO, HELLO, says="PIPELINING")
c("helo-after-ehlo", "ehlo", "HELO client.test", HELLO, lacks="PIPELINING")
c("ehlo-resets-rcpt", "rcpt", (EHLO, RCPT), HELLO, SEQUENCE)
c("ehlo-resets-mail", "mail", (EHLO, "DATA"), HELLO, SEQUENCE)
c("helo-resets-rcpt", "rcpt", ("HELO client.test", RCPT), HELLO, SEQUENCE)
c("ehlo-refused-keeps-mail", "mail", ("EHLO", RCPT), HELLO_SYNTAX, RCPT_OK)
c("ehlo-mail-again-after-ehlo", "rcpt", (EHLO, "MAIL FROM:<t@client.test>"), HELLO, "250 2.1.0")
# RFC 3207 4.2: after the handshake the client starts over, and STARTTLS is no longer offered.
c("ehlo-after-tls", "tls", EHLO, HELLO, says="PIPELINING", lacks="STARTTLS")
c("ehlo-before-tls", "none", EHLO, HELLO, says="STARTTLS")
c("helo-after-tls", "tls", "HELO client.test", HELLO)
c("mail-after-tls-without-ehlo", "tls", "MAIL FROM:<s@client.test>", SEQUENCE, says="EHLO")
c("mail-after-tls-ehlo", "tls-ehlo", "MAIL FROM:<s@client.test>", "250 2.1.0")
c("noop-after-tls", "tls", "NOOP", OK)
c("rset-after-tls", "tls", "RSET", OK)
c("quit-after-tls", "tls", "QUIT", BYE, "closed")

# -- NOOP (RFC 5321 4.1.1.9: "NOOP" [ SP String ])
c("noop", "ehlo", "NOOP", OK)
c("noop-arg", "ehlo", "NOOP hello world", OK)
c("noop-before-ehlo", "none", "NOOP", OK)
c("noop-lower", "ehlo", "noop", OK)
c("noop-trailing-space", "ehlo", "NOOP ", OK)
c("noop-trailing-tab", "ehlo", "NOOP\t", OK)  # RFC 5321 4.1.1: tolerate trailing white space
c("noop-keeps-transaction", "rcpt", ("NOOP", "RCPT TO:<v@mx.test>"), OK, RCPT_OK)
c("noop-tab-arg", "ehlo", "NOOP\tx", UNKNOWN)  # verb and argument are separated by SP
c("noop-latin1", "ehlo", b"NOOP caf\xe9", "501 5.5.2", says="UTF-8")  # RFC 6531: 8-bit is UTF-8

# -- RSET (RFC 5321 4.1.1.5: "RSET" CRLF)
c("rset", "ehlo", "RSET", OK)
c("rset-before-ehlo", "none", "RSET", OK)
c("rset-lower", "ehlo", "rset", OK)
c("rset-ends-transaction", "rcpt", ("RSET", RCPT), OK, SEQUENCE)
c("rset-keeps-ehlo", "rcpt", ("RSET", "MAIL FROM:<s@client.test> SIZE=10"), OK, "250 2.1.0")
c("rset-arg-keeps-transaction", "rcpt", ("RSET x", "RCPT TO:<v@mx.test>"), SYNTAX, RCPT_OK)
c("rset-trailing-space", "rcpt", ("RSET ", RCPT), OK, SEQUENCE)
c("rset-trailing-tab", "rcpt", ("RSET\t", RCPT), OK, SEQUENCE)

# -- VRFY / EXPN (RFC 5321 3.5.3, 4.1.1.6-7, 7.3: no verification, no leak: 252 for any address)
c("vrfy-user", "ehlo", "VRFY " + spawn.USER, CANNOT_VRFY)
c("vrfy-unknown", "ehlo", "VRFY nobody-here@mx.test", CANNOT_VRFY)
c("vrfy-local-part", "ehlo", "VRFY alice", CANNOT_VRFY)
c("vrfy-brackets", "ehlo", "VRFY <alice@mx.test>", CANNOT_VRFY)
c("vrfy-postmaster", "ehlo", "VRFY postmaster", CANNOT_VRFY)
c("vrfy-other-domain", "ehlo", "VRFY u@other.test", CANNOT_VRFY)
c("vrfy-empty", "ehlo", "VRFY", SYNTAX, says="VRFY")
c("vrfy-before-ehlo", "none", "VRFY alice@mx.test", CANNOT_VRFY)
c("vrfy-keeps-transaction", "rcpt", ("VRFY x@mx.test", "RCPT TO:<v@mx.test>"), CANNOT_VRFY, RCPT_OK)
c("expn", "ehlo", "EXPN staff", "502 5.5.1")
c("expn-user", "ehlo", "EXPN " + spawn.USER, "502 5.5.1")
c("expn-empty", "ehlo", "EXPN", "502 5.5.1")
c("expn-before-ehlo", "none", "EXPN staff", "502 5.5.1")
c("vrfy-trailing-tab", "ehlo", "VRFY\t", SYNTAX, says="VRFY")

# -- HELP (RFC 5321 4.1.1.8: "HELP" [ SP String ]; 214)
c("help", "ehlo", "HELP", "214 2.0.0")
c("help-before-ehlo", "none", "HELP", "214 2.0.0")
c("help-topic", "ehlo", "HELP RSET", "214 2.0.0")
c("help-trailing-tab", "ehlo", "HELP\t", "214 2.0.0")

# -- QUIT (RFC 5321 4.1.1.10: 221, then close; nothing after it is answered)
c("quit", "ehlo", "QUIT", BYE, "closed")
c("quit-before-ehlo", "none", "QUIT", BYE, "closed")
c("quit-lower", "ehlo", "quit", BYE, "closed")
c("quit-in-transaction", "rcpt", "QUIT", BYE, "closed")
c("quit-words", "ehlo", "QUIT see you", BYE, "closed")  # refusing a QUIT helps nobody
c("quit-trailing-space", "ehlo", "QUIT ", BYE, "closed")
c("quit-trailing-tab", "ehlo", "QUIT\t", BYE, "closed")
c("quit-then-commands", "ehlo", ("QUIT", "NOOP", "RSET"), BYE, "closed")
c("quit-then-mail", "ehlo", ("QUIT", "MAIL FROM:<s@client.test>", RCPT), BYE, "closed")

# -- verbs: unknown, odd, empty (RFC 5321 2.4: case-insensitive; 4.2.4: 500 unrecognized)
c("unknown", "ehlo", "XYZZY", UNKNOWN)
c("unknown-args", "ehlo", "XYZZY a b c", UNKNOWN)
c("unknown-before-ehlo", "none", "XYZZY", UNKNOWN)
c("empty-line", "ehlo", "", UNKNOWN)
c("space-line", "ehlo", " ", UNKNOWN)
c("leading-space", "ehlo", " NOOP", UNKNOWN)  # a command line starts with its verb
c("verb-mixed-case", "ehlo", "NoOp", OK)
c("verb-8bit", "ehlo", b"N\xd6OP", UNKNOWN)
c("verb-sharp-s", "ehlo", "\u00dfTARTTLS", UNKNOWN)  # "ß".upper() is "SS": no command
c("line-too-long", "ehlo", "NOOP " + "x" * 600, TOO_LONG, says="too long")
c("http-get", "none", "GET / HTTP/1.0", UNKNOWN)
c("http-post", "none", "POST /cgi HTTP/1.1", UNKNOWN)
c("http-connect", "none", "CONNECT mx.test:25 HTTP/1.0", UNKNOWN)
c("turn", "ehlo", "TURN", UNKNOWN)  # RFC 5321 4.1.1 obsoletes it
c("etrn", "ehlo", "ETRN mx.test", UNKNOWN)  # RFC 1985: not offered

# -- early talkers: commands before the greeting (RFC 5321 4.3.1); answered in order after it
c("early-ehlo", "none", EHLO, HELLO, early=True)
c("early-quit", "none", "QUIT", BYE, "closed", early=True)
_ENVELOPE = (EHLO, "MAIL FROM:<s@client.test>", RCPT)
c("early-pipeline", "none", _ENVELOPE, HELLO, "250 2.1.0", RCPT_OK, early=True)
c("early-starttls", "none", (EHLO, "STARTTLS"), HELLO, TLS_GO, early=True, tls_after=True)

# -- STARTTLS (RFC 3207 4: no arguments; 501 syntax; 4.2 after the handshake start over; 6)
c("starttls", "ehlo", "STARTTLS", TLS_GO, tls_after=True)
c("starttls-lower", "ehlo", "starttls", TLS_GO, tls_after=True)
c("starttls-trailing-space", "ehlo", "STARTTLS ", TLS_GO, tls_after=True)
c("starttls-trailing-tab", "ehlo", "STARTTLS\t", TLS_GO, tls_after=True)
c("starttls-arg", "ehlo", "STARTTLS now", SYNTAX, says="STARTTLS")
c("starttls-after-helo", "helo", "STARTTLS", TLS_GO, tls_after=True)
c("starttls-before-ehlo", "none", "STARTTLS", TLS_GO, tls_after=True)
c("starttls-in-mail", "mail", "STARTTLS", SEQUENCE, says="transaction")
c("starttls-in-rcpt", "rcpt", "STARTTLS", SEQUENCE, says="transaction")
c("starttls-twice", "tls-ehlo", "STARTTLS", SEQUENCE, says="TLS")
c("starttls-twice-no-ehlo", "tls", "STARTTLS", SEQUENCE, says="TLS")
# RFC 3207 6: what is pipelined after STARTTLS must be discarded, never run under TLS.
c("starttls-pipelined-noop", "ehlo", ("STARTTLS", "NOOP"), TLS_GO, tls_after=True)
c("starttls-pipelined-mail", "ehlo", ("STARTTLS", "MAIL FROM:<s@client.test>", RCPT), TLS_GO, tls_after=True)
c("starttls-pipelined-quit", "ehlo", ("STARTTLS", "QUIT"), TLS_GO, tls_after=True)

# -- the error count: a bad command is answered and the session stays in step
c("errors-then-good", "ehlo", ("XYZZY", "VRFY", "NOOP"), UNKNOWN, SYNTAX, OK)

# Where Postfix's reply class differs from mailwright's, by this project's choice. Postfix 3.7
# with its defaults (smtpd_forbidden_commands, smtpd_helo_required = no, no HELP, VRFY enabled)
# is lenient where mailwright follows RFC 5321's command syntax.
_SP = "RFC 5321 4.1.1: verb and argument are separated by SP; Postfix splits on any white space"
DELIBERATE: dict[str, str] = {
    "ehlo-506": "RFC 5321 4.5.3.1.4: 512-octet command line; Postfix reads up to 2048 octets",
    "ehlo-two-words": "RFC 5321 4.1.1.1: EHLO SP Domain; Postfix takes the rest of the line",
    "helo-two-words": "RFC 5321 4.1.1.1: HELO SP Domain; Postfix takes the rest of the line",
    "ehlo-tab-separator": _SP,
    "noop-tab-arg": _SP,
    "leading-space": "a command line starts with its verb (RFC 5321 4.1.1); Postfix skips white space",
    "ehlo-control": "a control character would travel in the reply and in Received:; Postfix neuters it",
    "ehlo-bare-lf": "RFC 5321 2.3.8: a line ended by a bare LF is refused; Postfix takes it",
    "help": "Postfix has no HELP (500 5.5.2); RFC 5321 4.1.1.8 describes it",
    "help-before-ehlo": "Postfix has no HELP (500 5.5.2)",
    "help-topic": "Postfix has no HELP (500 5.5.2)",
    "help-trailing-tab": "Postfix has no HELP (500 5.5.2)",
    "http-get": "Postfix hangs up (221) on smtpd_forbidden_commands; here 500, and the error limit",
    "http-post": "Postfix hangs up (221) on smtpd_forbidden_commands; here 500, and the error limit",
    "http-connect": "Postfix hangs up (221) on smtpd_forbidden_commands; here 500, and the error limit",
    "ehlo-nul": "NUL refused in any command; Postfix drops it",
    "line-too-long": "RFC 5321 4.5.3.1.4: 512-octet command line; Postfix reads up to 2048 octets",
    "etrn": "ETRN (RFC 1985) is not offered here (500); Postfix offers it (459: not a queued domain)",
    "mail-after-tls-without-ehlo": "EHLO/HELO first, after STARTTLS too; Postfix: smtpd_helo_required = no",
    # RFC 5321 7.3: a server that does not verify MUST answer 252, whatever the address, so that
    # nothing can be learnt from it; Postfix runs its recipient restrictions on VRFY.
    "vrfy-local-part": "RFC 5321 7.3: 252 for every address; Postfix applies its relay restrictions",
    "vrfy-other-domain": "RFC 5321 7.3: 252 for every address; Postfix applies its relay restrictions",
    # RFC 3207 does not forbid it, but a transaction half in clear and half under TLS helps nobody;
    # Postfix answers 220 (and the plain-text NOOP after it is then out of step).
    "starttls-in-mail": "STARTTLS is refused inside a transaction (503); Postfix starts TLS",
    "starttls-in-rcpt": "STARTTLS is refused inside a transaction (503); Postfix starts TLS",
}


# -- the wire ------------------------------------------------------------------------------------


class Wire(differential.Wire):
    """The shared line client, which also keeps the reply lines over RFC 5321's 512 octets
    (4.5.3.1.5: every reply line of every case is checked) and can turn to TLS."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, TIMEOUT)
        self.long_lines: list[bytes] = []

    def seen(self, line: bytes) -> None:
        if len(line) + 2 > 512:
            self.long_lines.append(line)

    def starttls(self) -> None:
        assert not self.buf, f"octets after the 220 to STARTTLS, in clear: {self.buf!r}"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock.settimeout(TIMEOUT)
        self.sock = ctx.wrap_socket(self.sock)


@dataclass
class Outcome:
    replies: list[Got]
    in_step: bool | None  # None: the session was closed, nothing to check
    long_lines: list[bytes]

    def __str__(self) -> str:
        step = {True: "in step", False: "OUT OF STEP", None: ""}[self.in_step]
        return " | ".join(map(str, self.replies)) + (f" [{step}]" if step else "")


def run_case(port: int, case: Case) -> Outcome:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        wire = Wire(sock)
        try:
            if case.early:
                wire.send(case.send)
            greeting = wire.reply()
            assert greeting.code == "220", f"greeting: {greeting}"
            if not case.send:
                return Outcome([greeting], None, wire.long_lines)
            for line in SETUPS[case.setup]:
                wire.send(line.encode() + b"\r\n")
                got = wire.reply()
                assert got.code.startswith("2"), f"setup {line!r} of {case.id}: {got}"
                if line == "STARTTLS":
                    wire.starttls()
            if not case.early:
                wire.send(case.send)
            replies = [wire.reply() for _ in case.expect]
            if replies[-1].code in ("closed", "hung"):
                return Outcome(replies, None, wire.long_lines)
            if case.tls_after and replies[-1].code == "220":
                wire.starttls()
                wire.send(EHLO.encode() + b"\r\n")
                after = wire.reply()
                # The first reply under TLS is EHLO's: nothing pipelined before it was run.
                return Outcome(replies, after.code == "250" and "PIPELINING" in after.text, wire.long_lines)
            wire.send(b"NOOP\r\n")
            return Outcome(replies, wire.reply().code == "250", wire.long_lines)
        finally:
            wire.sock.close()


def check(case: Case, out: Outcome) -> list[str]:
    """What is wrong with mailwright's outcome for the case (empty: nothing)."""
    wrong = []
    shapes = tuple(g.shape() for g in out.replies)
    expect = case.expect or ("220",)
    if shapes != expect:
        wrong.append(f"replies {shapes}, want {expect}")
    last = out.replies[-1].text.lower()
    if case.says and case.says.lower() not in last:
        wrong.append(f"the last reply does not say {case.says!r}")
    if case.lacks and case.lacks.lower() in last:
        wrong.append(f"the last reply says {case.lacks!r}")
    if out.in_step is False:
        wrong.append("out of step afterwards")
    if out.long_lines:
        wrong.append(f"reply lines over 512 octets: {[len(x) + 2 for x in out.long_lines]}")
    return wrong


def agrees(ours: Outcome, theirs: Outcome) -> bool:
    return [reply_class(g.code) for g in ours.replies] == [reply_class(g.code) for g in theirs.replies] and (
        ours.in_step == theirs.in_step
    )


# -- the servers ---------------------------------------------------------------------------------


mw = mailwright_server("commands")


@pytest.fixture(scope="module")
def postfix() -> Iterator[int]:
    with private_postfix(tls=True) as pf:
        yield pf.port


# -- tests ---------------------------------------------------------------------------------------


def test_the_table_is_well_formed() -> None:
    assert_table_ids([case.id for case in CASES], DELIBERATE, 80)
    assert all(case.setup in SETUPS for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_mailwright_answers_each_command_as_the_rfcs_ask(mw: spawn.SpawnedServer, case: Case) -> None:
    out = run_case(mw.ports["mx"], case)
    assert not check(case, out), f"{case.send!r}: {out}: {check(case, out)}"


def test_postfix_agrees_on_the_reply_class_but_where_this_project_chose_otherwise(
    mw: spawn.SpawnedServer, postfix: int
) -> None:
    disagreements = Disagreements(DELIBERATE)
    for case in CASES:
        ours = run_case(mw.ports["mx"], case)
        theirs = run_case(postfix, case)
        assert all(g.code != "hung" for g in theirs.replies), f"Postfix did not answer {case.send!r}"
        row = f"{case.id}: mailwright {ours} || Postfix {theirs}"
        if os.environ.get("MAILWRIGHT_DIFF_DUMP"):
            print(row)
        disagreements.note(case.id, not agrees(ours, theirs), row)
    disagreements.check()


# -- the limits: bad commands and junk commands (Postfix's smtpd_hard_error_limit and
# smtpd_junk_command_limit, docs/architecture.md) -------------------------------------------------


def replies_until_closed(port: int, payload: bytes) -> list[Got]:
    """The replies to EHLO then `payload` (one write), up to the server's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        wire = Wire(sock)
        assert wire.reply().code == "220"
        wire.send(EHLO.encode() + b"\r\n" + payload)
        assert wire.reply().code == "250"
        got: list[Got] = []
        while not got or got[-1].code not in ("closed", "hung"):
            got.append(wire.reply())
        return got


def limit_counts(port: int, payload: bytes) -> tuple[int, str]:
    """(how many replies came before the last one, the last one as "code enhanced")."""
    got = replies_until_closed(port, payload)
    assert got[-1].code == "closed", got[-3:]
    return len(got) - 2, got[-2].shape()


def test_twenty_bad_commands_end_the_session_with_421(mw: spawn.SpawnedServer) -> None:
    got = replies_until_closed(mw.ports["mx"], b"XYZZY\r\n" * 30)
    # 20 errors answered, then 421 4.7.0 (RFC 5321 4.2.5 lets a server close so) and the close.
    assert [g.shape() for g in got] == [UNKNOWN] * 20 + ["421 4.7.0", "closed"], got[-3:]
    assert "too many errors" in got[-2].text.lower()


def test_twenty_refused_expns_end_the_session_with_421(mw: spawn.SpawnedServer) -> None:
    # EXPN's 502 did not count: a client could hold its connection for ever with EXPN alone.
    got = replies_until_closed(mw.ports["mx"], b"EXPN staff\r\n" * 30)
    assert [g.shape() for g in got] == ["502 5.5.1"] * 20 + ["421 4.7.0", "closed"], got[-3:]


def test_past_the_junk_limit_each_noop_counts_as_an_error(mw: spawn.SpawnedServer) -> None:
    # 100 NOOPs are free; each one after them is an error too, so the 20th error is the 120th NOOP.
    assert limit_counts(mw.ports["mx"], b"NOOP\r\n" * 130) == (120, "421 4.7.0")


def test_an_ehlo_loop_ends_at_the_junk_limit(mw: spawn.SpawnedServer) -> None:
    # It held the connection for ever: each EHLO restarts the idle time-out, and none was counted.
    got = replies_until_closed(mw.ports["mx"], b"EHLO client.test\r\n" * 130)
    assert len(got) == 120 + 2 and got[-2].shape() == "421 4.7.0", got[-3:]


def test_postfix_counts_the_same_limits(mw: spawn.SpawnedServer, postfix: int) -> None:
    for payload in (
        b"XYZZY\r\n" * 30,
        b"NOOP\r\n" * 130,
        b"VRFY\r\nNOOP\r\n" * 60,
        b"EXPN a\r\n" * 30,
        b"EHLO client.test\r\n" * 130,
        b"HELO client.test\r\nRSET\r\n" * 65,
    ):
        ours, theirs = limit_counts(mw.ports["mx"], payload), limit_counts(postfix, payload)
        assert ours[0] == theirs[0] and ours[1][0] == theirs[1][0], (payload[:12], ours, theirs)


# -- VRFY tells nothing; STARTTLS where TLS is already up; EHLO changes after STARTTLS -----------


def test_vrfy_answers_the_same_for_a_user_and_for_no_one(mw: spawn.SpawnedServer) -> None:
    """RFC 5321 7.3: a server that does not verify answers 252 whatever the address, so a prober
    learns nothing; the reply does not even echo the address."""
    seen = set()
    for who in (spawn.USER, "alice", "postmaster@mx.test", "nobody-at-all@mx.test", "x@other.test"):
        case = Case("vrfy", "ehlo", f"VRFY {who}\r\n".encode(), (CANNOT_VRFY,))
        out = run_case(mw.ports["mx"], case)
        seen.add(str(out))
    assert len(seen) == 1, seen


def test_starttls_on_the_implicit_tls_listener_is_refused(mw: spawn.SpawnedServer) -> None:
    ctx = ssl.create_default_context(cafile=str(mw.ca_file))
    raw = socket.create_connection(("127.0.0.1", mw.ports["submissions"]), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=spawn.LOCAL_DOMAIN) as sock:
        wire = Wire(sock)
        assert wire.reply().code == "220"
        wire.send(EHLO.encode() + b"\r\n")
        ehlo = wire.reply()
        assert ehlo.shape() == HELLO and "STARTTLS" not in ehlo.text and "AUTH" in ehlo.text
        wire.send(b"STARTTLS\r\nNOOP\r\n")
        refused = wire.reply()
        assert refused.shape() == SEQUENCE and "TLS" in refused.text, refused
        assert wire.reply().shape() == OK  # in step, and still under TLS
        assert not wire.long_lines


def test_the_ehlo_reply_after_starttls_offers_what_tls_allows(mw: spawn.SpawnedServer) -> None:
    """RFC 3207 4.2: the client starts over with EHLO, and may be offered other extensions: on
    submission AUTH appears (it needs TLS), STARTTLS goes (RFC 3207 4.2: MUST NOT be offered)."""
    with socket.create_connection(("127.0.0.1", mw.ports["submission"]), timeout=TIMEOUT) as sock:
        wire = Wire(sock)
        assert wire.reply().code == "220"
        wire.send(EHLO.encode() + b"\r\n")
        before = wire.reply()
        assert "STARTTLS" in before.text and "AUTH" not in before.text, before
        wire.send(b"STARTTLS\r\n")
        assert wire.reply().shape() == TLS_GO
        wire.starttls()
        wire.send(EHLO.encode() + b"\r\n")
        after = wire.reply()
        assert after.shape() == HELLO and "STARTTLS" not in after.text and "AUTH PLAIN" in after.text, after
        wire.sock.close()
