"""The envelope commands, side by side: what mailwright answers, and whether Postfix's smtpd agrees.

`CASES` is a table of MAIL FROM / RCPT TO variants (and a few neighbours) that real clients and
attackers send: odd paths (quoted local parts, escapes, dots, length limits, address literals,
source routes, missing brackets, control and 8-bit octets, UTF-8 with and without SMTPUTF8,
"<Postmaster>"), odd parameters (SIZE, BODY, SMTPUTF8, RET/ENVID/NOTIFY/ORCPT, AUTH, unknown,
duplicated, empty, over-long lines) and sequencing mistakes. Each case is sent on a connection of
its own, after its setup commands, over a raw loopback socket.

- Always: a real `mailwright serve` (tests/spawn.py, mx listener) must give each case the reply
  code and enhanced status code written in the table. Those were chosen from the RFCs (5321,
  1870, 6152, 3030, 3461, 4954, 6531, and 3463 for the enhanced codes), not copied from a run;
  where a refusal's text must name the fault, the table says which words.
- As root with Postfix installed: a private Postfix smtpd (bench/postfix_instance.py, accepting
  mail for the same domain and holding it) gets the same cases, and the two must agree on the
  reply class (2xx/4xx/5xx) except for `DELIBERATE`, the differences this project chose, each
  with its reason. That list is exact: a case on it that no longer differs fails too, so it
  never hides a change.

Both run within seconds: about 250 short connections each.

Not responsible for: the text of Postfix's replies, DATA/BDAT bodies (tests/protocol,
test_hostile.py), AUTH= on an authenticated submission session (tests/protocol/test_params.py).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest

import spawn

from .differential import (
    Disagreements,
    Got,
    Wire,
    assert_table_ids,
    mailwright_server,
    private_postfix,
    reply_class,
)

SIZE_LIMIT = 1_000_000  # max_message_size of both servers, so the SIZE cases mean the same

SETUPS: dict[str, tuple[bytes, ...]] = {
    "none": (),
    "ehlo": (b"EHLO client.test",),
    "helo": (b"HELO client.test",),
    "mail": (b"EHLO client.test", b"MAIL FROM:<s@client.test>"),
    "utf8": (b"EHLO client.test", b"MAIL FROM:<s@client.test> SMTPUTF8"),
    "rcpt": (b"EHLO client.test", b"MAIL FROM:<s@client.test>", b"RCPT TO:<u@mx.test>"),
    "rset": (b"EHLO client.test", b"MAIL FROM:<s@client.test>", b"RSET"),
}


@dataclass(frozen=True)
class Case:
    id: str
    setup: str  # a key of SETUPS: the commands sent first, each of which must succeed
    line: bytes  # sent with CRLF
    expect: str  # mailwright's reply: "code enhanced" ("code" alone when it has none)
    says: str = ""  # words the reply text must contain (case-insensitive)


CASES: list[Case] = []


def c(id: str, setup: str, line: str | bytes, expect: str, says: str = "") -> None:
    CASES.append(Case(id, setup, line.encode() if isinstance(line, str) else line, expect, says))


def _domain(octets: int) -> str:
    """A domain of exactly `octets` octets: 63-octet labels, then ".test"."""
    labels, rest = [], octets - len(".test")
    while rest > 0:
        take = min(63, rest - 2) if rest > 63 else rest
        labels.append("d" * take)
        rest -= take + 1
    name = ".".join(labels) + ".test"
    assert len(name) == octets
    return name


OK_MAIL, OK_RCPT = "250 2.1.0", "250 2.1.5"
BAD_SENDER, BAD_RCPT = "501 5.1.7", "501 5.1.3"  # RFC 3463: bad sender's / destination mailbox syntax
BAD_PARAM = "501 5.5.4"  # RFC 3463 5.5.4: invalid command arguments
UNSUPPORTED = "555 5.5.4"  # RFC 5321 4.2.3: parameters not recognized or not implemented
NEEDS_UTF8 = "553 5.6.7"  # RFC 6531 3.7.4.1 / RFC 6532
SEQUENCE = "503 5.5.1"  # RFC 5321 4.2.3, RFC 3463 5.5.1
M, R = "MAIL FROM:", "RCPT TO:"
P = M + "<s@client.test> "  # a good sender, then the parameters of the case
T = R + "<u@mx.test> "  # a good recipient, then the parameters of the case

# -- MAIL FROM: the command's own syntax (RFC 5321 4.1.1.2, 4.1.2)
c("mail-ok", "ehlo", M + "<s@client.test>", OK_MAIL)
c("mail-lower", "ehlo", "mail from:<s@client.test>", OK_MAIL)  # verbs are case-insensitive (2.4)
c("mail-mixed", "ehlo", "Mail From:<s@client.test>", OK_MAIL)
c("mail-space-after-colon", "ehlo", "MAIL FROM: <s@client.test>", OK_MAIL)  # common; harmless
c("mail-space-before-colon", "ehlo", "MAIL FROM :<s@client.test>", BAD_PARAM, "MAIL FROM:<address>")
c("mail-two-spaces-after-verb", "ehlo", "MAIL  FROM:<s@client.test>", BAD_PARAM, "MAIL FROM:<address>")
c("mail-tab-separator", "ehlo", "MAIL\tFROM:<s@client.test>", "500 5.5.1")  # SP only: no such verb
c("mail-tab-after-colon", "ehlo", "MAIL FROM:\t<s@client.test>", BAD_SENDER, "control")
c("mail-trailing-space", "ehlo", "MAIL FROM:<s@client.test> ", OK_MAIL)
c("mail-trailing-tab", "ehlo", "MAIL FROM:<s@client.test>\t", BAD_SENDER, "after closing angle")
c("mail-no-brackets", "ehlo", M + "s@client.test", BAD_SENDER, "angle brackets")
c("mail-empty", "ehlo", M, BAD_SENDER, "missing")
c("mail-no-colon", "ehlo", "MAIL FROM", BAD_PARAM)
c("mail-bare", "ehlo", "MAIL", BAD_PARAM)
c("mail-to", "ehlo", "MAIL TO:<s@client.test>", BAD_PARAM)
c("mailfrom-joined", "ehlo", "MAILFROM:<s@client.test>", "500 5.5.1")
c("mail-null", "ehlo", M + "<>", OK_MAIL)
c("mail-null-space", "ehlo", M + "< >", BAD_SENDER, "' '")
c("mail-null-params", "ehlo", M + "<> SIZE=10 BODY=8BITMIME", OK_MAIL)
c("mail-double-brackets", "ehlo", M + "<<s@client.test>>", BAD_SENDER, "'<'")
c("mail-missing-gt", "ehlo", M + "<s@client.test", BAD_SENDER, "closing angle")
c("mail-missing-lt", "ehlo", M + "s@client.test>", BAD_SENDER, "angle brackets")
c("mail-junk-after-gt", "ehlo", M + "<s@client.test>junk", BAD_SENDER, "after closing angle")
c("mail-two-at", "ehlo", M + "<a@b@client.test>", BAD_SENDER)
c("mail-no-domain", "ehlo", M + "<s>", BAD_SENDER, "missing @")
c("mail-empty-local", "ehlo", M + "<@client.test>", BAD_SENDER, "empty local part")
c("mail-empty-domain", "ehlo", M + "<s@>", BAD_SENDER, "empty domain")
# "<Postmaster>" without a domain is a recipient form only (RFC 5321 4.1.1.3).
c("mail-postmaster-nodomain", "ehlo", M + "<postmaster>", BAD_SENDER, "missing @")

# -- local parts: Dot-string / Quoted-string (RFC 5321 4.1.2), 64 octets (4.5.3.1.1)
c("local-quoted-space", "ehlo", M + '<"a b"@client.test>', OK_MAIL)
c("local-quoted-escaped-quote", "ehlo", M + '<"a\\"b"@client.test>', OK_MAIL)
c("local-quoted-escaped-backslash", "ehlo", M + '<"a\\\\b"@client.test>', OK_MAIL)
c("local-quoted-at", "ehlo", M + '<"a@b"@client.test>', OK_MAIL)
c("local-quoted-specials", "ehlo", M + '<"(a),[b];<c>:"@client.test>', OK_MAIL)
c("local-quoted-empty", "ehlo", M + '<""@client.test>', OK_MAIL)  # Quoted-string = DQUOTE *qcontent DQUOTE
c("local-quoted-then-atom", "ehlo", M + '<"a"b@client.test>', BAD_SENDER, "'b'")
c("local-atom-then-quoted", "ehlo", M + '<a."b"@client.test>', BAD_SENDER)  # RFC 822's mix is gone
c("local-quoted-unterminated", "ehlo", M + '<"ab@client.test>', BAD_SENDER, "quotes")
c("local-quoted-bare-backslash-end", "ehlo", M + '<"ab\\">', BAD_SENDER, "quotes")
c("local-quoted-escaped-tab", "ehlo", M.encode() + b'<"a\\\tb"@client.test>', BAD_SENDER, "control")
c("local-quoted-dots", "ehlo", M + '<"a..b"@client.test>', OK_MAIL)
c("local-double-dot", "ehlo", M + "<a..b@client.test>", BAD_SENDER, "dot")
c("local-leading-dot", "ehlo", M + "<.a@client.test>", BAD_SENDER, "dot")
c("local-trailing-dot", "ehlo", M + "<a.@client.test>", BAD_SENDER, "dot")
c("local-specials-atext", "ehlo", M + "<!#$%&'*+-/=?^_`{|}~@client.test>", OK_MAIL)
c("local-comma", "ehlo", M + "<a,b@client.test>", BAD_SENDER, "','")
c("local-paren", "ehlo", M + "<a(b)@client.test>", BAD_SENDER, "'('")
c("local-space", "ehlo", M + "<a b@client.test>", BAD_SENDER, "' '")
c("local-64", "ehlo", M + f"<{'l' * 64}@client.test>", OK_MAIL)
c("local-65", "ehlo", M + f"<{'l' * 65}@client.test>", BAD_SENDER, "64 octets")
c("local-quoted-65", "ehlo", M + f'<"{"q" * 63}"@client.test>', BAD_SENDER, "64 octets")

# -- domains (RFC 5321 4.1.2 Domain, 4.5.3.1.2 and .3: 255-octet domain, 256-octet path)
c("domain-trailing-dot", "ehlo", M + "<s@client.test.>", BAD_SENDER, "trailing dot")
c("domain-double-dot", "ehlo", M + "<s@client..test>", BAD_SENDER, "label")
c("domain-leading-dot", "ehlo", M + "<s@.client.test>", BAD_SENDER, "label")
c("domain-hyphen-start", "ehlo", M + "<s@-client.test>", BAD_SENDER, "label")
c("domain-hyphen-end", "ehlo", M + "<s@client-.test>", BAD_SENDER, "label")
c("domain-underscore", "ehlo", M + "<s@cli_ent.test>", BAD_SENDER, "label")
c("domain-single-label", "ehlo", M + "<s@localhost>", OK_MAIL)
c("domain-numeric-first", "ehlo", M + "<s@123.test>", OK_MAIL)
# An IP address is no domain name: it is written as an address literal (RFC 5321 4.1.3).
c("domain-dotted-quad", "ehlo", M + "<s@127.0.0.1>", BAD_SENDER, "address literal")
c("domain-dotted-quad-5", "ehlo", M + "<s@1.2.3.4.5>", BAD_SENDER, "numeric")
c("domain-numeric-single", "ehlo", M + "<s@123>", BAD_SENDER, "numeric")
c("domain-numeric-tld", "ehlo", M + "<s@foo.123>", BAD_SENDER, "numeric")  # RFC 3696 2
c("domain-label-63", "ehlo", M + f"<s@{'x' * 63}.test>", OK_MAIL)
c("domain-label-64", "ehlo", M + f"<s@{'x' * 64}.test>", BAD_SENDER, "63 octets")
c("domain-252-path-256", "ehlo", M + f"<s@{_domain(252)}>", OK_MAIL)
c("domain-253-path-257", "ehlo", M + f"<s@{_domain(253)}>", BAD_SENDER, "256 octets")
c("domain-255", "ehlo", M + f"<s@{_domain(255)}>", BAD_SENDER, "256 octets")
c("domain-256", "ehlo", M + f"<s@{_domain(256)}>", BAD_SENDER, "255 octets")

# -- address literals (RFC 5321 4.1.3)
c("lit-ipv4", "ehlo", M + "<s@[127.0.0.1]>", OK_MAIL)
c("lit-ipv4-256", "ehlo", M + "<s@[256.0.0.1]>", BAD_SENDER, "range")
c("lit-ipv4-3parts", "ehlo", M + "<s@[127.0.0]>", BAD_SENDER, "literal")
c("lit-ipv4-leading-zero", "ehlo", M + "<s@[127.000.0.1]>", OK_MAIL)  # Snum = 1*3DIGIT
c("lit-ipv6-loopback", "ehlo", M + "<s@[IPv6:::1]>", OK_MAIL)
c("lit-ipv6-doc", "ehlo", M + "<s@[IPv6:2001:db8::1]>", OK_MAIL)
c("lit-ipv6-full", "ehlo", M + "<s@[IPv6:2001:db8:0:0:0:0:0:1]>", OK_MAIL)
c("lit-ipv6-v4", "ehlo", M + "<s@[IPv6:::ffff:127.0.0.1]>", OK_MAIL)
c("lit-ipv6-lowercase-tag", "ehlo", M + "<s@[ipv6:::1]>", OK_MAIL)
c("lit-ipv6-7-groups-comp", "ehlo", M + "<s@[IPv6:1:2:3:4:5:6:7::]>", BAD_SENDER, "IPv6")  # IPv6-comp: <= 6
c("lit-ipv6-9-groups", "ehlo", M + "<s@[IPv6:1:2:3:4:5:6:7:8:9]>", BAD_SENDER, "IPv6")
c("lit-ipv6-bad-hex", "ehlo", M + "<s@[IPv6:zz::1]>", BAD_SENDER, "IPv6")
c("lit-ipv6-no-tag", "ehlo", M + "<s@[::1]>", BAD_SENDER, "literal")
c("lit-ipv6-zone", "ehlo", M + "<s@[IPv6:fe80::1%eth0]>", BAD_SENDER, "IPv6")
c("lit-general", "ehlo", M + "<s@[x-tag:foo]>", BAD_SENDER, "general address literal")
c("lit-unterminated", "ehlo", M + "<s@[127.0.0.1>", BAD_SENDER, "literal")
c("lit-junk-after", "ehlo", M + "<s@[127.0.0.1]x>", BAD_SENDER)
c("lit-empty", "ehlo", M + "<s@[]>", BAD_SENDER, "literal")

# -- source routes: checked, then ignored (RFC 5321 4.1.2, appendix C)
c("route-one", "ehlo", M + "<@relay.test:s@client.test>", OK_MAIL)
c("route-two", "ehlo", M + "<@r1.test,@r2.test:s@client.test>", OK_MAIL)
c("route-empty-hop", "ehlo", M + "<@:s@client.test>", BAD_SENDER, "empty domain")
c("route-no-colon", "ehlo", M + "<@r1.test s@client.test>", BAD_SENDER, "route")
c("route-null", "ehlo", M + "<@r1.test:>", BAD_SENDER, "empty local part")

# -- octets: NUL, controls, bare CR, 8-bit without SMTPUTF8, UTF-8 with it (RFC 6531 3.3)
c("nul-in-path", "ehlo", M.encode() + b"<s\x00@client.test>", "501 5.5.2", "NUL")
c("tab-in-path", "ehlo", M.encode() + b"<s\t@client.test>", BAD_SENDER, "control")
c("del-in-path", "ehlo", M.encode() + b"<s\x7f@client.test>", BAD_SENDER, "control")
c("bare-cr", "ehlo", M.encode() + b"<s@client.test>\r", "500 5.5.2", "bare CR")  # RFC 5321 2.3.8
c("8bit-latin1", "ehlo", M.encode() + b"<j\xf6@client.test>", "501 5.5.2", "UTF-8")
c("utf8-local-no-smtputf8", "ehlo", M + "<jö@client.test>", NEEDS_UTF8, "SMTPUTF8")
c("utf8-domain-no-smtputf8", "ehlo", M + "<s@bücher.test>", NEEDS_UTF8, "SMTPUTF8")
c("utf8-local-smtputf8", "ehlo", M + "<jö@client.test> SMTPUTF8", OK_MAIL)
c("utf8-domain-smtputf8", "ehlo", M + "<s@bücher.test> SMTPUTF8", OK_MAIL)
c(
    "utf8-bad-idna-smtputf8",
    "ehlo",
    M + "<s@b\u00fc\u200dcher.test> SMTPUTF8",
    BAD_SENDER,
    "internationalized",
)
c("utf8-quoted-smtputf8", "ehlo", M + '<"jö x"@client.test> SMTPUTF8', OK_MAIL)
c("utf8-invalid-octets", "ehlo", M.encode() + b"<j\xc3@client.test> SMTPUTF8", "501 5.5.2", "UTF-8")
c("utf8-nbsp-local", "ehlo", M + "<j\u00a0x@client.test> SMTPUTF8", BAD_SENDER, "unexpected")

# -- MAIL parameters: SIZE (RFC 1870: 1*20DIGIT; 552 5.3.4 over the limit)
c("size-ok", "ehlo", P + "SIZE=1000", OK_MAIL)
c("size-zero", "ehlo", P + "SIZE=0", OK_MAIL)
c("size-lower", "ehlo", P + "size=1000", OK_MAIL)
c("size-at-limit", "ehlo", P + f"SIZE={SIZE_LIMIT}", OK_MAIL)
c("size-over-limit", "ehlo", P + f"SIZE={SIZE_LIMIT + 1}", "552 5.3.4", "size")
c("size-20-digits", "ehlo", P + "SIZE=" + "9" * 20, "552 5.3.4", "size")
c("size-21-digits", "ehlo", P + "SIZE=" + "9" * 21, BAD_PARAM, "SIZE")
c("size-junk", "ehlo", P + "SIZE=abc", BAD_PARAM, "SIZE")
c("size-negative", "ehlo", P + "SIZE=-1", BAD_PARAM, "SIZE")
c("size-plus", "ehlo", P + "SIZE=+1", BAD_PARAM, "SIZE")
c("size-hex", "ehlo", P + "SIZE=0x10", BAD_PARAM, "SIZE")
c("size-empty", "ehlo", P + "SIZE=", BAD_PARAM, "SIZE")
c("size-no-value", "ehlo", P + "SIZE", BAD_PARAM, "SIZE")
c("size-duplicate", "ehlo", P + "SIZE=1 SIZE=2", BAD_PARAM, "duplicate")
c("size-duplicate-case", "ehlo", P + "SIZE=1 size=1", BAD_PARAM, "duplicate")
c("size-two-equals", "ehlo", P + "SIZE=1=2", BAD_PARAM, "SIZE")
c("size-after-helo", "helo", P + "SIZE=1000", UNSUPPORTED, "SIZE")  # no extension without EHLO
# BODY (RFC 6152; BINARYMIME, RFC 3030, is not offered)
c("body-7bit", "ehlo", P + "BODY=7BIT", OK_MAIL)
c("body-8bitmime", "ehlo", P + "BODY=8BITMIME", OK_MAIL)
c("body-lower", "ehlo", P + "body=8bitmime", OK_MAIL)
c("body-binarymime", "ehlo", P + "BODY=BINARYMIME", UNSUPPORTED, "BODY=BINARYMIME")
c("body-junk", "ehlo", P + "BODY=JUNK", UNSUPPORTED, "BODY=JUNK")
c("body-empty", "ehlo", P + "BODY=", BAD_PARAM, "BODY")
c("body-no-value", "ehlo", P + "BODY", BAD_PARAM, "BODY")
c("body-duplicate", "ehlo", P + "BODY=7BIT BODY=8BITMIME", BAD_PARAM, "duplicate")
# SMTPUTF8 takes no value (RFC 6531 3.4)
c("smtputf8", "ehlo", P + "SMTPUTF8", OK_MAIL)
c("smtputf8-lower", "ehlo", P + "smtputf8", OK_MAIL)
c("smtputf8-value", "ehlo", P + "SMTPUTF8=YES", BAD_PARAM, "SMTPUTF8")
c("smtputf8-empty-value", "ehlo", P + "SMTPUTF8=", BAD_PARAM, "SMTPUTF8")
c("smtputf8-duplicate", "ehlo", P + "SMTPUTF8 SMTPUTF8", BAD_PARAM, "duplicate")
# DSN: RET and ENVID (RFC 3461 4.3, 4.4: xtext, at most 100 characters, printable once decoded)
c("ret-full", "ehlo", P + "RET=FULL", OK_MAIL)
c("ret-hdrs-lower", "ehlo", P + "RET=hdrs", OK_MAIL)
c("ret-junk", "ehlo", P + "RET=ALL", BAD_PARAM, "RET")
c("ret-no-value", "ehlo", P + "RET", BAD_PARAM, "RET")
c("ret-duplicate", "ehlo", P + "RET=FULL RET=HDRS", BAD_PARAM, "duplicate")
c("envid-ok", "ehlo", P + "ENVID=QQ314159", OK_MAIL)
c("envid-xtext", "ehlo", P + "ENVID=a+2Bb+3Dc", OK_MAIL)
c("envid-bad-xtext", "ehlo", P + "ENVID=a+2", BAD_PARAM, "xtext")
c("envid-bad-hex", "ehlo", P + "ENVID=a+ZZ", BAD_PARAM, "xtext")
c("envid-control", "ehlo", P + "ENVID=a+0Db", BAD_PARAM, "printable")
c("envid-100", "ehlo", P + "ENVID=" + "e" * 100, OK_MAIL)
c("envid-101", "ehlo", P + "ENVID=" + "e" * 101, BAD_PARAM, "100")
c("envid-8bit", "ehlo", P + "ENVID=é", BAD_PARAM, "ENVID")
c("envid-empty", "ehlo", P + "ENVID=", BAD_PARAM, "ENVID")
c("envid-duplicate", "ehlo", P + "ENVID=a ENVID=b", BAD_PARAM, "duplicate")
# AUTH= (RFC 4954 5) and REQUIRETLS (RFC 8689) are not offered on a plaintext MX session
c("auth-null-mx", "ehlo", P + "AUTH=<>", UNSUPPORTED, "AUTH")
c("auth-xtext-mx", "ehlo", P + "AUTH=s+2Bx@client.test", UNSUPPORTED, "AUTH")
c("auth-empty", "ehlo", P + "AUTH=", BAD_PARAM, "AUTH")
c("requiretls-plain", "ehlo", P + "REQUIRETLS", UNSUPPORTED, "REQUIRETLS")
# The parameter list itself (RFC 5321 4.1.2 Mail-parameters, 4.5.3.1.4 line length)
c("unknown-param", "ehlo", P + "FOO=bar", UNSUPPORTED, "FOO")
c("unknown-param-novalue", "ehlo", P + "XFOO", UNSUPPORTED, "XFOO")
c("empty-keyword", "ehlo", P + "=bar", BAD_PARAM, "keyword")
c("bad-keyword", "ehlo", P + "SI_ZE=1", BAD_PARAM, "keyword")
c("two-spaces-between", "ehlo", P + "SIZE=1  BODY=7BIT", OK_MAIL)
c("all-params", "ehlo", P + "SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x1", OK_MAIL)
c("param-comma", "ehlo", P + "SIZE=1,BODY=7BIT", BAD_PARAM, "SIZE")
c("param-control-char", "ehlo", P.encode() + b"ENVID=a\x01", BAD_PARAM, "character in parameters")
c("param-trailing-tab", "ehlo", P.encode() + b"SIZE=1\t", BAD_PARAM, "character in parameters")
c("param-vt", "ehlo", P.encode() + b"SIZE=1\x0bBODY=7BIT", BAD_PARAM, "character in parameters")
c("long-param-line-600", "ehlo", P + "XFOO=" + "v" * 600, UNSUPPORTED, "XFOO")
c("long-param-line-2046", "ehlo", P + "XFOO=" + "v" * (2046 - len(P) - 5), UNSUPPORTED, "XFOO")
c("long-param-line-2100", "ehlo", P + "XFOO=" + "v" * 2100, "500 5.5.2", "too long")

# -- RCPT TO (RFC 5321 4.1.1.3)
c("rcpt-ok", "mail", R + "<u@mx.test>", OK_RCPT)
c("rcpt-lower", "mail", "rcpt to:<u@mx.test>", OK_RCPT)
c("rcpt-space-after-colon", "mail", "RCPT TO: <u@mx.test>", OK_RCPT)
c("rcpt-space-before-colon", "mail", "RCPT TO :<u@mx.test>", BAD_PARAM, "RCPT TO:<address>")
c("rcpt-domain-upper", "mail", R + "<u@MX.TEST>", OK_RCPT)
c("rcpt-domain-trailing-dot", "mail", R + "<u@mx.test.>", BAD_RCPT, "trailing dot")
c("rcpt-domain-numeric", "mail", R + "<u@127.0.0.1>", BAD_RCPT, "address literal")
c("rcpt-no-brackets", "mail", R + "u@mx.test", BAD_RCPT, "angle brackets")
c("rcpt-null", "mail", R + "<>", BAD_RCPT, "null")
c("rcpt-empty", "mail", R, BAD_RCPT, "missing")
c("rcpt-from", "mail", "RCPT FROM:<u@mx.test>", BAD_PARAM, "RCPT TO:<address>")
c("rcpt-postmaster", "mail", R + "<postmaster>", OK_RCPT)  # 4.5.1: must be accepted
c("rcpt-postmaster-upper", "mail", R + "<POSTMASTER>", OK_RCPT)
c("rcpt-postmaster-mixed", "mail", R + "<PostMaster>", OK_RCPT)
c("rcpt-postmaster-space", "mail", R + " <Postmaster>", OK_RCPT)
c("rcpt-postmaster-notify", "mail", R + "<postmaster> NOTIFY=NEVER", OK_RCPT)
c("rcpt-postmaster-junk", "mail", R + "<postmaster>NOTIFY=NEVER", BAD_RCPT, "after closing angle")
c("rcpt-postmaster-tab", "mail", R.encode() + b"<postmaster>\t", BAD_RCPT, "after closing angle")
c("rcpt-postmaster-gt", "mail", R + "<postmaster>>", BAD_RCPT, "after closing angle")
c("rcpt-postmaster-unknown-param", "mail", R + "<postmaster> FOO=1", UNSUPPORTED, "FOO")
c("rcpt-postmaster-quoted", "mail", R + '<"postmaster">', BAD_RCPT, "missing @")
c("rcpt-postmaster-route", "mail", R + "<@r.test:postmaster>", BAD_RCPT, "missing @")
c("rcpt-postmaster-domain", "mail", R + "<postmaster@mx.test>", OK_RCPT)
c("rcpt-postmaster-other-domain", "mail", R + "<postmaster@other.test>", "554 5.7.1", "relay")
c("rcpt-other-domain", "mail", R + "<u@other.test>", "554 5.7.1", "relay")
c("rcpt-percent-hack", "mail", R + "<u%other.test@mx.test>", "554 5.7.1", "relay")
c("rcpt-bang-path", "mail", R + "<other.test!u@mx.test>", "554 5.7.1", "relay")
c("rcpt-quoted-at", "mail", R + '<"u@other.test"@mx.test>', "554 5.7.1", "relay")
c("rcpt-quoted-space", "mail", R + '<"u v"@mx.test>', OK_RCPT)
c("rcpt-route", "mail", R + "<@relay.test:u@mx.test>", OK_RCPT)
c("rcpt-literal", "mail", R + "<u@[127.0.0.1]>", "554 5.7.1", "relay")
c("rcpt-local-64", "mail", R + f"<{'l' * 64}@mx.test>", OK_RCPT)
c("rcpt-local-65", "mail", R + f"<{'l' * 65}@mx.test>", BAD_RCPT, "64 octets")
c("rcpt-double-dot", "mail", R + "<u..v@mx.test>", BAD_RCPT, "dot")
c("rcpt-nul", "mail", R.encode() + b"<u@mx.test>\x00", "501 5.5.2", "NUL")
c("rcpt-utf8-no-smtputf8", "mail", R + "<jö@mx.test>", NEEDS_UTF8, "SMTPUTF8")
c("rcpt-utf8-smtputf8", "utf8", R + "<jö@mx.test>", OK_RCPT)
c("rcpt-8bit-latin1", "mail", R.encode() + b"<j\xf6@mx.test>", "501 5.5.2", "UTF-8")
# RCPT parameters: NOTIFY and ORCPT (RFC 3461 4.1, 4.2)
c("notify-success-failure", "mail", T + "NOTIFY=SUCCESS,FAILURE", OK_RCPT)
c("notify-never", "mail", T + "NOTIFY=NEVER", OK_RCPT)
c("notify-lower", "mail", T + "NOTIFY=delay", OK_RCPT)
c("notify-never-combined", "mail", T + "NOTIFY=NEVER,SUCCESS", BAD_PARAM, "NEVER")
c("notify-junk", "mail", T + "NOTIFY=ALWAYS", BAD_PARAM, "NOTIFY")
c("notify-empty", "mail", T + "NOTIFY=", BAD_PARAM, "NOTIFY")
c("notify-no-value", "mail", T + "NOTIFY", BAD_PARAM, "NOTIFY")
c("notify-repeated-value", "mail", T + "NOTIFY=SUCCESS,SUCCESS", BAD_PARAM, "repeated")
c("notify-empty-element", "mail", T + "NOTIFY=SUCCESS,,FAILURE", BAD_PARAM, "NOTIFY")
c("notify-duplicate", "mail", T + "NOTIFY=SUCCESS NOTIFY=FAILURE", BAD_PARAM, "duplicate")
c("orcpt-ok", "mail", T + "ORCPT=rfc822;u@mx.test", OK_RCPT)
c("orcpt-xtext", "mail", T + "ORCPT=rfc822;u+2Bx@mx.test", OK_RCPT)
c("orcpt-no-semicolon", "mail", T + "ORCPT=rfc822", BAD_PARAM, "ORCPT")
c("orcpt-empty-type", "mail", T + "ORCPT=;u@mx.test", BAD_PARAM, "ORCPT")
c("orcpt-empty-address", "mail", T + "ORCPT=rfc822;", BAD_PARAM, "ORCPT")
c("orcpt-bad-xtext", "mail", T + "ORCPT=rfc822;u+ZZ@mx.test", BAD_PARAM, "xtext")
c("orcpt-utf8-type", "mail", T + "ORCPT=utf-8;j\\x{F6}@mx.test", OK_RCPT)
c("orcpt-unknown-type", "mail", T + "ORCPT=x-foo;whatever", OK_RCPT)
c("orcpt-500", "mail", T + "ORCPT=rfc822;" + "o" * 493, OK_RCPT)
c("orcpt-501", "mail", T + "ORCPT=rfc822;" + "o" * 494, BAD_PARAM, "500")
c("orcpt-duplicate", "mail", T + "ORCPT=rfc822;a@b ORCPT=rfc822;c@d", BAD_PARAM, "duplicate")
c("rcpt-size-param", "mail", T + "SIZE=1", UNSUPPORTED, "SIZE")
c("rcpt-unknown-param", "mail", T + "FOO", UNSUPPORTED, "FOO")
c("rcpt-notify-orcpt", "mail", T + "NOTIFY=FAILURE ORCPT=rfc822;u@mx.test", OK_RCPT)

# -- sequencing (RFC 5321 3.3, 4.1.4) and the other commands' arguments
c("seq-rcpt-before-mail", "ehlo", R + "<u@mx.test>", SEQUENCE, "MAIL")
c("seq-second-mail", "mail", M + "<t@client.test>", SEQUENCE)
c("seq-mail-after-rcpt", "rcpt", M + "<t@client.test>", SEQUENCE)
c("seq-data-no-rcpt", "mail", "DATA", "554 5.5.1", "no valid recipients")  # 3.3: 503 or 554
c("seq-data-no-mail", "ehlo", "DATA", SEQUENCE)
c("seq-rset-then-rcpt", "rset", R + "<u@mx.test>", SEQUENCE)
c("seq-mail-before-ehlo", "none", M + "<s@client.test>", SEQUENCE, "EHLO")
c("seq-rcpt-before-ehlo", "none", R + "<u@mx.test>", SEQUENCE)
c("seq-bdat-no-mail", "ehlo", "BDAT 0 LAST", SEQUENCE)
c("seq-unknown-verb", "ehlo", "XYZZY", "500 5.5.1")
c("seq-data-arg", "rcpt", "DATA x", BAD_PARAM, "DATA")
c("seq-rset-arg", "rcpt", "RSET x", BAD_PARAM, "RSET")  # 4.1.1.5: "RSET" CRLF
c("rset-arg-ready", "ehlo", "RSET x", BAD_PARAM, "RSET")
c("seq-noop-arg", "ehlo", "NOOP x", "250 2.0.0")  # 4.1.1.9: NOOP [ SP String ]
c("quit-arg", "ehlo", "QUIT now", "221 2.0.0")  # refusing a QUIT helps nobody
c("help-arg", "ehlo", "HELP MAIL", "214 2.0.0")
c("vrfy-empty", "ehlo", "VRFY", BAD_PARAM, "VRFY")
c("expn", "ehlo", "EXPN list", "502 5.5.1")
c("ehlo-empty", "none", "EHLO", "501", "EHLO")  # no enhanced code on a reply to EHLO (RFC 2034 3)
c("helo-two-words", "none", "HELO a b", "501", "HELO")
c("starttls-arg", "ehlo", "STARTTLS x", BAD_PARAM, "STARTTLS")

# Where Postfix's reply class differs from mailwright's, by this project's choice. Postfix 3.7
# with its defaults (strict_rfc821_envelopes = no, smtputf8_autodetect_classes, no SASL) is
# lenient where mailwright follows the RFC grammar strictly (the project's rule: README).
_LAX_SYNTAX = "RFC 5321 4.1.2 path syntax; Postfix's RFC 822 tokenizer takes it"
DELIBERATE: dict[str, str] = {
    "mail-two-spaces-after-verb": "RFC 5321 4.1.1.2: one SP; Postfix splits on any white space",
    "mail-tab-separator": "RFC 5321 4.1.1: SP, not HTAB; Postfix splits on any white space",
    "mail-tab-after-colon": "control character; Postfix drops white space",
    "mail-trailing-tab": "control character; Postfix drops white space",
    "param-trailing-tab": "control character; Postfix drops white space",
    "param-vt": "control character; Postfix splits on it",
    "tab-in-path": "control character in the path; Postfix drops it",
    "del-in-path": "control character in the path; Postfix keeps it",
    "local-quoted-escaped-tab": "quoted-pairSMTP is backslash + %d32-126 (RFC 5321 4.1.2)",
    "mail-no-brackets": "RFC 5321 4.1.2: Path needs <>; Postfix: strict_rfc821_envelopes = no",
    "mail-missing-lt": "as mail-no-brackets",
    "rcpt-no-brackets": "as mail-no-brackets",
    "mailfrom-joined": "Postfix hangs up (221) on smtpd_forbidden_commands' '^[^ ]+:'",
    "mail-null-space": _LAX_SYNTAX,
    "mail-double-brackets": _LAX_SYNTAX,
    "mail-two-at": _LAX_SYNTAX,
    "mail-empty-local": _LAX_SYNTAX,
    "route-empty-hop": _LAX_SYNTAX,
    "route-null": _LAX_SYNTAX,
    "lit-unterminated": _LAX_SYNTAX,
    "local-paren": _LAX_SYNTAX + " (and drops the comment)",
    "local-atom-then-quoted": _LAX_SYNTAX + " (RFC 822's obs-local-part)",
    "mail-no-domain": "RFC 5321 4.1.2: Mailbox needs a domain; Postfix appends $myorigin",
    "mail-postmaster-nodomain": "'<Postmaster>' is a recipient form only (RFC 5321 4.1.1.3)",
    "rcpt-postmaster-tab": "text after '>' without SP; Postfix drops white space",
    "rcpt-postmaster-gt": _LAX_SYNTAX,
    "rcpt-postmaster-quoted": "only '<Postmaster>' may go without a domain (RFC 5321 4.1.1.3)",
    "rcpt-postmaster-route": "only '<Postmaster>' may go without a domain (RFC 5321 4.1.1.3)",
    "local-double-dot": "Dot-string (RFC 5321 4.1.2)",
    "local-leading-dot": "Dot-string (RFC 5321 4.1.2)",
    "local-trailing-dot": "Dot-string (RFC 5321 4.1.2)",
    "rcpt-double-dot": "Dot-string (RFC 5321 4.1.2)",
    "local-65": "RFC 5321 4.5.3.1.1: 64 octets (a server may refuse more)",
    "local-quoted-65": "RFC 5321 4.5.3.1.1, counted on the local part as written",
    "rcpt-local-65": "RFC 5321 4.5.3.1.1: 64 octets",
    "domain-253-path-257": "RFC 5321 4.5.3.1.3: 256-octet path",
    "domain-255": "RFC 5321 4.5.3.1.3: 256-octet path",
    "domain-trailing-dot": "RFC 5321 4.1.2 Domain has no trailing dot; Postfix strips it",
    "rcpt-domain-trailing-dot": "RFC 5321 4.1.2 Domain has no trailing dot; Postfix strips it",
    "domain-underscore": "RFC 5321 4.1.2 Domain is LDH",
    "domain-numeric-tld": "RFC 3696 2: no all-numeric top-level domain; Postfix refuses all-numeric names",
    "bare-cr": "RFC 5321 2.3.8; smuggling defence: a bare CR ends no line here",
    "utf8-local-no-smtputf8": "RFC 6531 3.4: non-ASCII needs SMTPUTF8; Postfix autodetects",
    "rcpt-utf8-no-smtputf8": "RFC 6531 3.4: non-ASCII needs SMTPUTF8; Postfix autodetects",
    "utf8-bad-idna-smtputf8": "RFC 6531 3.3: U-labels (IDNA2008); Postfix does not check them",
    "utf8-nbsp-local": "white space of any script is kept out of a Dot-string",
    "size-duplicate": "a parameter given twice is refused; Postfix takes the last",
    "size-duplicate-case": "a parameter given twice is refused; Postfix takes the last",
    "body-duplicate": "a parameter given twice is refused; Postfix takes the last",
    "smtputf8-duplicate": "a parameter given twice is refused; Postfix takes the last",
    "size-after-helo": "service extensions only after EHLO (RFC 5321 2.2.1, 4.1.1.1)",
    "envid-101": "RFC 3461 4.4: ENVID at most 100 characters",
    "orcpt-501": "RFC 3461 4.2: ORCPT at most 500 characters",
    "orcpt-empty-address": "an empty original recipient says nothing; RFC 3461 4.2 wants an address",
    "notify-empty-element": "RFC 3461 4.1: notify-list-element, no empty ones",
    "notify-repeated-value": "a repeated NOTIFY keyword is refused as a duplicate parameter is",
    "auth-null-mx": "AUTH not offered on the MX: RFC 5321 4.1.1.11 555; Postfix ignores AUTH=",
    "auth-xtext-mx": "AUTH not offered on the MX: RFC 5321 4.1.1.11 555; Postfix ignores AUTH=",
    "auth-empty": "empty parameter value; Postfix ignores AUTH=",
    "rcpt-literal": "policy: address literals are not our domains (policy/relay.py)",
    "rcpt-nul": "NUL refused in any command; Postfix drops it",
    "seq-mail-before-ehlo": "EHLO/HELO required first; Postfix: smtpd_helo_required = no",
    "help-arg": "Postfix has no HELP",
    "helo-two-words": "RFC 5321 4.1.1.1: HELO SP Domain; Postfix takes the rest of the line",
}


def run_case(port: int, case: Case) -> Got:
    """The reply to the case's line, after its setup, on a connection of its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        wire = Wire(sock, timeout=10)
        assert wire.reply().code == "220"
        for line in SETUPS[case.setup]:
            got = wire.command(line)
            assert got.code.startswith("2"), f"setup {line!r} of {case.id}: {got}"
        return wire.command(case.line)


mw = mailwright_server("envelope", limits=f"max_message_size = {SIZE_LIMIT}")


def test_the_table_is_well_formed() -> None:
    assert_table_ids([case.id for case in CASES], DELIBERATE, 120)
    assert all(case.setup in SETUPS for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_mailwright_answers_each_envelope_command_as_the_rfcs_ask(
    mw: spawn.SpawnedServer, case: Case
) -> None:
    got = run_case(mw.ports["mx"], case)
    assert got.shape() == case.expect, f"{case.line!r}: {got}"
    assert case.says.lower() in got.first.lower(), f"{case.line!r}: {got.first!r} does not say {case.says!r}"


def test_postfix_agrees_on_the_reply_class_but_where_this_project_chose_otherwise(
    mw: spawn.SpawnedServer,
) -> None:
    with private_postfix({"message_size_limit": str(SIZE_LIMIT)}) as pf:
        disagreements = Disagreements(DELIBERATE)
        for case in CASES:
            ours = run_case(mw.ports["mx"], case)
            theirs = run_case(pf.port, case)
            assert theirs.code != "hung", f"Postfix did not answer {case.line!r}"
            differs = reply_class(ours.code) != reply_class(theirs.code)
            disagreements.note(case.id, differs, f"{case.id}: mailwright {ours} | Postfix {theirs}")
        disagreements.check()
