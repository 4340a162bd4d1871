"""The header section as stored, side by side: what mailwright keeps of a message's header section,
and what Postfix's smtpd and cleanup keep of the same one.

`CASES` is a table of header sections (RFC 5322 2.1, 2.2, 3.6; RFC 5321 4.4 and 4.5.3.1.6; RFC
6409 8): missing Date and/or Message-ID on submission and on MX, empty, duplicate and
obsolete-syntax fields, Resent blocks, a first line without a colon or beginning with white
space, no empty line before the body, a body that starts with the empty line, 8-bit and UTF-8
with and without 8BITMIME and SMTPUTF8, NUL and bare CR/LF, lines of 998, 999 and over 1000
octets, a field over Postfix's header_size_limit and a header section over cleanup's
MAX_HEADER_HOLD, mbox separators (`From `, `>From `, first, repeated and later), messages that
are only headers or empty, HELO names with RFC 5322 specials, and SMTPUTF8 and quoted
recipients in `for <...>`. Most are sent with DATA and again, as `...-bdat`, with BDAT.

- Always: a real `mailwright serve` (tests/spawn.py: the mx listener, and the submissions
  listener with implicit TLS and AUTH) takes each case, and what it stored (read back as `queue
  show --body` reads it) must be the table's bytes after our Received field, with the values
  we generate put as `<generated>`: nothing else added, removed or moved. What we add is held to
  the RFCs: the Received field first and parsed as RFC 5322 3.6.7 reads it (tokens, one `;`, a
  3.3 date-time of now), `from` the HELO name made safe, `by` our name, `with` the RFC 3848 /
  RFC 6531 protocol name of the session, `for <addr>` with exactly one recipient (RFC 5321
  4.4); a generated Message-ID a 3.6.4 msg-id and a generated Date the Received field's time,
  each at most once and inside the header section; every line we write within 998 octets.
- As root with Postfix installed: a private Postfix (bench/postfix_instance.py) gets the same
  dialogues, on an MX smtpd (`local_header_rewrite_clients` empty, so its cleanup adds no field
  for loopback clients, as mailwright's MX) and on a submission smtpd whose master.cf line says
  `-o local_header_rewrite_clients=static:all` (cleanup adds missing fields there: an operator's
  way to mirror the rule mailwright documents, added fields on submission only). Read back with
  postcat, Postfix's message must be ours (line ends aside: its queue file holds lines, and a
  last line always ends) after the same normalisation, its Received field must carry the same
  `from` name, `for` clause and, on MX, protocol name, and its reply the same class, except
  for `DELIBERATE`, the differences this project chose, each with its reason. That list is
  exact: a case on it that no longer differs fails too.

About 20 s with Postfix (as root), a few seconds without.

Not responsible for: the reply codes of DATA and BDAT themselves (test_data_differential.py),
how Received carries each HELO name and recipient (test_stored_headers.py), cleanup's output
for every cut of the client's bytes (tests/policy/test_cleanup.py).
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import spawn

from .conftest import QUEUED, stored_body
from .differential import (
    Disagreements,
    Got,
    Wire,
    assert_table_ids,
    mailwright_server,
    private_postfix,
    reply_class,
)
from .test_stored_headers import MSG_ID, received_tokens

MX, SUB = "mx", "sub"
SENDER = {MX: "s@client.test", SUB: spawn.USER}  # a submission's sender is the user's own
TIMEOUT = 10.0
GEN_MSGID = b"Message-ID: <generated>\r\n"
GEN_DATE = b"Date: <generated>\r\n"
ACCEPTED, BAD_CONTENT = "250 2.0.0", "550 5.6.0"
AS_SENT = b"\x00as sent"  # a case's `stored` default: the message as the client sent it


@dataclass(frozen=True)
class Case:
    id: str
    message: bytes  # as the client means it (DATA stuffs it)
    stored: bytes | None  # after our Received field, generated values as GEN_*; None: refused
    listener: str = MX
    how: str = "data"  # or "bdat": one BDAT LAST chunk
    reply: str = ACCEPTED  # mailwright's reply to the end of the message
    hello: bytes = b"EHLO client.test"
    params: bytes = b""  # MAIL FROM parameters
    rcpts: tuple[str, ...] = ("u@mx.test",)
    name: str = "client.test"  # the HELO name as the Received field's `from` carries it
    starttls: bool = False  # STARTTLS (RFC 3207) and EHLO again before MAIL


CASES: list[Case] = []


def c(
    id: str,
    message: bytes,
    stored: bytes | None = AS_SENT,
    *,
    data: bool = True,
    bdat: bool = True,
    bdat_stored: bytes | None = AS_SENT,
    **kw: object,
) -> None:
    """A case sent with DATA as `id` and, with the same header section, with BDAT as `id`-bdat
    (stored as `bdat_stored` where BDAT's octets are kept where DATA refuses them)."""
    want = message if stored == AS_SENT else stored
    if data:
        CASES.append(Case(id, message, want, **kw))  # type: ignore[arg-type]
    if bdat:
        if bdat_stored != AS_SENT:
            want, kw = bdat_stored, {**kw, "reply": ACCEPTED}
        CASES.append(Case(id + "-bdat" if data else id, message, want, how="bdat", **kw))  # type: ignore[arg-type]


def s(id: str, message: bytes, stored: bytes | None = AS_SENT, **kw: object) -> None:
    """A case on the submission listener."""
    c(id, message, stored, listener=SUB, **kw)


def refused(id: str, message: bytes, bdat_stored: bytes | None = AS_SENT, **kw: object) -> None:
    """DATA refuses it whole (bare CR/LF, a line over 998 octets); BDAT, not line-checked, stores it
    (as sent, or as `bdat_stored`)."""
    c(
        id,
        message,
        None,
        reply=BAD_CONTENT,
        bdat_stored=message if bdat_stored == AS_SENT else bdat_stored,
        **kw,
    )


SUBJ = b"Subject: t\r\n"
B = b"\r\nb\r\n"  # the empty line and a body
FROM_A = b"From: a@client.test\r\n"
DATE = b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n"
MSGID = b"Message-ID: <a@client.test>\r\n"
REC = b"Received: from a.test by b.test; Mon, 07 Dec 2026 10:00:00 +0000\r\n"
PAD = b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"p" * 60) for i in range(4000))  # > MAX_HEADER_HOLD
BIG_FIELD = b"X-Big: a\r\n" + b"".join([b" " + b"b" * 900 + b"\r\n"] * 130)  # 117 KB folded
MBOX_998 = b"From " + b"s" * (998 - 37) + b"@b.test Mon Dec  7 10:00:00 2026"
assert len(MBOX_998) == 998

# -- the header section's end (RFC 5322 2.1: the empty line; Postfix's cleanup: the first line
#    that is no field, and there the empty line is supplied)
c("plain", SUBJ + B)
c("headers-only", SUBJ)
c("headers-only-no-line-end", b"Subject: t", data=False)
c("empty", b"")
c("empty-line-only", b"\r\n")
c("body-starts-with-empty-line", B)
c("body-starts-with-two-empty-lines", b"\r\n" + B)
c("no-empty-line", SUBJ + b"body\r\n", SUBJ + b"\r\nbody\r\n")
c("colon-less-first-line", b"hello\r\n" + SUBJ + B, b"\r\nhello\r\n" + SUBJ + B)
c("colon-less-later-line", SUBJ + b"hello\r\nX-A: 1\r\n" + B, SUBJ + b"\r\nhello\r\nX-A: 1\r\n" + B)
c("empty-field-name", b": t\r\n" + SUBJ + B, b"\r\n: t\r\n" + SUBJ + B)
# A first line beginning with white space continued our Received field (Postfix's smtpd puts an
# empty line before it): the client wrote into our trace header, here a date after a ";".
c("continuation-first", b" cont\r\n" + SUBJ + B, b"\r\n cont\r\n" + SUBJ + B)
c("tab-continuation-first", b"\tcont\r\n" + B, b"\r\n\tcont\r\n" + B)
c(
    "continuation-first-moves-the-date",
    b" ; Mon, 1 Jan 2001 00:00:00 +0000\r\n",
    b"\r\n ; Mon, 1 Jan 2001 00:00:00 +0000\r\n",
)
c("obs-fold", b"Subject: a\r\n b\r\n\tc\r\n" + B)
c("whitespace-only-continuation", b"Subject: a\r\n \r\nX-A: 1\r\n" + B)
c("space-before-colon", b"Subject : t\r\n" + B)  # RFC 5322 4.5.3 obs-optional
c("tab-before-colon", b"Subject\t: t\r\n" + B)
c("no-space-after-colon", b"Subject:t\r\n" + B)
c("empty-fields", b"Subject:\r\nX-Empty:\r\n" + B)
c("duplicate-fields", b"Subject: a\r\nSubject: b\r\n" + DATE + DATE + MSGID + MSGID + B)
c(
    "resent-block",
    b"Resent-From: r@client.test\r\nResent-Date: Tue, 08 Dec 2026 10:00:00 +0000\r\n"
    b"Resent-Message-ID: <r@client.test>\r\n" + FROM_A + DATE + MSGID + B,
)
c("client-received-fields", REC * 3 + SUBJ + B)
c("many-received-fields", REC * 60 + SUBJ + B)  # RFC 5321 6.3: a loop threshold is at least 100
c("return-path", b"Return-Path: <x@client.test>\r\n" + SUBJ + B)
c("content-length", b"Content-Length: 5\r\n" + SUBJ + B)
c("bcc", b"Bcc: h@client.test\r\n" + SUBJ + B)  # RFC 5322 3.6.3: the preparer's to remove, or keep
c("address-spacing", b"From:   Bob   <bob@client.test>   (c)\r\nTo: a@x.test,b@y.test\r\n" + B)

# -- octets: 8-bit (RFC 6152), UTF-8 (RFC 6532), NUL, controls, bare CR and LF
EIGHT = b"Subject: caf\xc3\xa9\r\n" + B
c("8bit-value", EIGHT)
c("8bit-value-8bitmime", EIGHT, params=b" BODY=8BITMIME")
c("8bit-value-7bit", EIGHT, params=b" BODY=7BIT")
c("utf8-smtputf8", b"From: \xc3\xbc@client.test\r\n" + EIGHT, params=b" SMTPUTF8")
c("latin1-value", b"Subject: caf\xe9\r\n" + B)
c("8bit-field-name", b"Subj\xc3\xa9ct: x\r\n" + SUBJ + B, b"\r\nSubj\xc3\xa9ct: x\r\n" + SUBJ + B)
c("nul-in-value", b"Subject: a\x00b\r\n" + B)  # RFC 5322 4.1 obs-utext
c("nul-in-field-name", b"X-A\x00B: c\r\n" + SUBJ + B, b"\r\nX-A\x00B: c\r\n" + SUBJ + B)
c("controls-in-value", b"Subject: a\x01b\x7f\x1bc\r\n" + B)
refused("bare-cr-in-value", b"Subject: a\rb\r\n" + B)
refused("bare-lf-line-ends", b"Subject: t\nX-A: 1\n\nb\r\n")
refused("bare-lf-no-empty-line", b"Subject: t\nbody\r\n", bdat_stored=b"Subject: t\n\r\nbody\r\n")
c("crlf-fields-bare-lf-empty-line", b"Subject: t\r\n\nb\r\n", data=False)
refused("cr-only-line", SUBJ + b"\r\r\nb\r\n", bdat_stored=SUBJ + b"\r\n\r\r\nb\r\n")

# -- line lengths (RFC 5322 2.1.1, RFC 5321 4.5.3.1.6: DATA takes 998 octets and CRLF)
c("line-998", b"X-Long: " + b"a" * 990 + b"\r\n" + B)
refused("line-999", b"X-Long: " + b"a" * 991 + b"\r\n" + B)
c("line-3000", b"X-Long: " + b"a" * 2992 + b"\r\n" + B, data=False)
c("field-name-1500", b"X" * 1500 + b": v\r\n" + B, b"\r\n" + b"X" * 1500 + b": v\r\n" + B, data=False)
c("field-over-postfix-header-size-limit", BIG_FIELD + SUBJ + B)
c("header-section-over-hold", PAD + SUBJ + b"body\r\n", PAD + SUBJ + b"\r\nbody\r\n")

# -- mbox separators (Postfix's smtpd renames each before the first other line, `>From ` too)
MBOX = b"From s@client.test Mon Dec  7 10:00:00 2026\r\n"
c("mbox-from", MBOX + SUBJ + B, b"X-Mailbox-Line: " + MBOX + SUBJ + B)
c(
    "mbox-from-twice",
    b"From a\r\nFrom b\r\n" + SUBJ + B,
    b"X-Mailbox-Line: From a\r\nX-Mailbox-Line: From b\r\n" + SUBJ + B,
)
c("mbox-quoted-from", b">From a\r\n" + SUBJ + B, b"X-Mailbox-Line: >From a\r\n" + SUBJ + B)
c("mbox-quoted-twice", b">>From a\r\n" + SUBJ + B, b"X-Mailbox-Line: >>From a\r\n" + SUBJ + B)
c("mbox-from-later", SUBJ + b"From a\r\n" + B, SUBJ + b"\r\nFrom a\r\n" + B)
c("mbox-from-in-body", SUBJ + b"\r\nFrom a\r\n>From b\r\n")
c(
    "mbox-from-then-continuation",
    b"From a\r\n cont\r\n" + SUBJ + B,
    b"X-Mailbox-Line: From a\r\n\r\n cont\r\n" + SUBJ + B,
)
c("mbox-from-only", b"From a\r\n", b"X-Mailbox-Line: From a\r\n")
c("mbox-from-only-no-line-end", b"From a", b"X-Mailbox-Line: From a", data=False)
c(
    "mbox-from-998",
    MBOX_998 + b"\r\n" + SUBJ + B,
    b"X-Mailbox-Line: From\r\n" + MBOX_998[4:] + b"\r\n" + SUBJ + B,
)
c("from-colon-no-space", b"From:a@client.test\r\n" + B)
c("from-tab-not-a-separator", b"From\ta\r\n" + SUBJ + B, b"\r\nFrom\ta\r\n" + SUBJ + B)

# -- the Received field: HELO names with specials (client-controlled), protocol, `for`
c("helo", SUBJ + B, hello=b"HELO client.test", bdat=False)  # BDAT only after EHLO
c("helo-semicolon", SUBJ + B, hello=b"EHLO a;b", name="a?b", bdat=False)
c("helo-open-comment", SUBJ + B, hello=b"EHLO x(y", name="x?y", bdat=False)
c("helo-quote", SUBJ + B, hello=b'EHLO q"uote', name="q?uote", bdat=False)
c("helo-angle-address", SUBJ + B, hello=b"EHLO <a@b>", name="?a?b?", bdat=False)
c("helo-comma-bracket", SUBJ + B, hello=b"EHLO a:b,c[d", name="a?b?c?d", bdat=False)
c("helo-address-literal", SUBJ + B, hello=b"EHLO [127.0.0.1]", name="[127.0.0.1]", bdat=False)
c("helo-ipv6-literal", SUBJ + B, hello=b"EHLO [IPv6:::1]", name="[IPv6:::1]", bdat=False)
c("helo-non-ascii", SUBJ + B, hello="EHLO h\u00e9llo.test".encode(), name="xn--hllo-bpa.test", bdat=False)
c(
    "helo-non-ascii-smtputf8",
    SUBJ + B,
    hello="EHLO h\u00e9llo.test".encode(),
    name="h\u00e9llo.test",
    params=b" SMTPUTF8",
    bdat=False,
)
c("starttls", SUBJ + B, starttls=True)
c("starttls-smtputf8", SUBJ + B, starttls=True, params=b" SMTPUTF8", bdat=False)
c(
    "starttls-continuation-first",
    b" cont\r\n" + SUBJ + B,
    b"\r\n cont\r\n" + SUBJ + B,
    starttls=True,
    bdat=False,
)
c("rcpt-smtputf8", SUBJ + B, rcpts=("\u00fc\u00df@mx.test",), params=b" SMTPUTF8")
c("rcpt-quoted-local-part", SUBJ + B, rcpts=('"a;b"@mx.test',))
c("two-rcpts", SUBJ + B, rcpts=("u@mx.test", "v@mx.test"))

# -- submission: Message-ID and Date added where missing (RFC 6409 8.2, 8.3), at the section's end
s("sub-missing-both", FROM_A + SUBJ + B, FROM_A + SUBJ + GEN_MSGID + GEN_DATE + B)
s("sub-missing-message-id", FROM_A + DATE + B, FROM_A + DATE + GEN_MSGID + B)
s("sub-missing-date", FROM_A + MSGID + B, FROM_A + MSGID + GEN_DATE + B)
s("sub-both-present", FROM_A + DATE + MSGID + B)
s(
    "sub-present-other-case",
    FROM_A + b"message-id: <a@client.test>\r\ndATE: Mon, 07 Dec 2026 10:00:00 +0000\r\n" + B,
)
s("sub-present-but-empty", FROM_A + b"Message-ID:\r\nDate:\r\n" + B)
s("sub-message-id-folded", FROM_A + DATE + b"Message-ID:\r\n <a@client.test>\r\n" + B)
s("sub-space-before-colon", FROM_A + b"Message-ID : <a@client.test>\r\nDate\t: x\r\n" + B)
s("sub-duplicate-message-id", FROM_A + DATE + MSGID + MSGID + B)
s(
    "sub-x-message-id",
    FROM_A + b"X-Message-ID: <a@client.test>\r\n" + B,
    FROM_A + b"X-Message-ID: <a@client.test>\r\n" + GEN_MSGID + GEN_DATE + B,
)
s("sub-message-id-in-body", FROM_A + b"\r\n" + MSGID, FROM_A + GEN_MSGID + GEN_DATE + b"\r\n" + MSGID)
s(
    "sub-message-id-in-continuation",
    FROM_A + b"Subject: a\r\n Message-ID: <a@client.test>\r\n" + B,
    FROM_A + b"Subject: a\r\n Message-ID: <a@client.test>\r\n" + GEN_MSGID + GEN_DATE + B,
)
s("sub-no-empty-line", FROM_A + SUBJ + b"body\r\n", FROM_A + SUBJ + GEN_MSGID + GEN_DATE + b"\r\nbody\r\n")
s("sub-headers-only", FROM_A + SUBJ, FROM_A + SUBJ + GEN_MSGID + GEN_DATE)
s("sub-headers-only-no-line-end", FROM_A + b"Subject: t", FROM_A + SUBJ + GEN_MSGID + GEN_DATE, data=False)
s("sub-empty", b"", GEN_MSGID + GEN_DATE)
s("sub-body-only", B, GEN_MSGID + GEN_DATE + B)
s("sub-no-from", SUBJ + B, SUBJ + GEN_MSGID + GEN_DATE + B)
s("sub-continuation-first", b" cont\r\n" + FROM_A + B, GEN_MSGID + GEN_DATE + b"\r\n cont\r\n" + FROM_A + B)
s("sub-mbox-from", MBOX + FROM_A + B, b"X-Mailbox-Line: " + MBOX + FROM_A + GEN_MSGID + GEN_DATE + B)
s(
    "sub-mbox-quoted-from",
    b">From a\r\n" + FROM_A + B,
    b"X-Mailbox-Line: >From a\r\n" + FROM_A + GEN_MSGID + GEN_DATE + B,
)
RESENT = b"Resent-From: r@client.test\r\n"
s("sub-resent-without-dates", RESENT + FROM_A + B, RESENT + FROM_A + GEN_MSGID + GEN_DATE + B)
s("sub-resent-block-without-resent-date", RESENT + FROM_A + DATE + MSGID + B)
s(
    "sub-resent-complete",
    RESENT + b"Resent-Date: Tue, 08 Dec 2026 10:00:00 +0000\r\nResent-Message-ID: <r@client.test>\r\n"
    + FROM_A + DATE + MSGID + B,
)  # fmt: skip
# Bcc on submission: removed (policy.cleanup, as Postfix's cleanup), folded and Resent- ones too.
s("sub-bcc", FROM_A + b"Bcc: h@client.test\r\n" + DATE + MSGID + B, FROM_A + DATE + MSGID + B)
s(
    "sub-bcc-folded",
    FROM_A + b"BCC : h@client.test,\r\n\tj@client.test\r\n" + DATE + MSGID + B,
    FROM_A + DATE + MSGID + B,
)
s("sub-resent-bcc", FROM_A + DATE + MSGID + b"Resent-bcc: k@client.test\r\n" + B, FROM_A + DATE + MSGID + B)
s("sub-unqualified-addresses", b"From: alice\r\nTo: bob\r\n" + DATE + MSGID + B)
s("sub-header-section-over-hold", PAD + FROM_A + B)
s(
    "sub-header-section-just-under-hold",
    PAD[: 76 * 2600] + FROM_A + B,
    PAD[: 76 * 2600] + FROM_A + GEN_MSGID + GEN_DATE + B,
)
s(
    "sub-utf8-smtputf8",
    b"From: \xc3\xbc@client.test\r\n" + EIGHT,
    b"From: \xc3\xbc@client.test\r\n" + EIGHT[:-5] + GEN_MSGID + GEN_DATE + B,
    params=b" SMTPUTF8",
)
refused(
    "sub-bare-lf",
    b"From: a@client.test\nSubject: t\n\nb\r\n",
    bdat_stored=b"From: a@client.test\nSubject: t\n" + GEN_MSGID + GEN_DATE + b"\nb\r\n",
    listener=SUB,
)
s("sub-two-rcpts", FROM_A + DATE + MSGID + B, rcpts=("u@mx.test", "v@mx.test"))


# Where Postfix stores (or answers) otherwise, by this project's choice (Postfix 3.7, defaults but
# for the two local_header_rewrite_clients settings above).
_KEPT = "a field is stored as it came (RFC 5322 4.5: obsolete syntax is kept, not rewritten); "
_NO_FROM = (
    "RFC 6409 8 has the MSA add Date and Message-ID (8.2, 8.3), not From: an author invented from"
    " the envelope sender would speak for the client; Postfix adds From: <sender>"
)
_STRICT = (
    "DATA takes CRLF lines of at most 998 octets (RFC 5321 2.3.8, 4.5.3.1.6; docs/architecture.md,"
    " strictness); Postfix takes bare CR/LF and longer lines"
)
_BDAT_CR = "BDAT's octets are stored as sent (RFC 3030); Postfix turns a bare CR into a space, or drops it"
_RESENT = (
    "RFC 6409 8.2/8.3 name Date and Message-ID; Postfix adds Resent-Date and Resent-Message-Id"
    " instead where a Resent- field is present, and never both"
)
_BDAT_FIRST = (
    "the message's first lines are handled alike in DATA and BDAT; Postfix's BDAT path skips its DATA"
    " path's (no X-Mailbox-Line, no empty line before a first line with leading white space, which"
    " then continues Postfix's own Received field)"
)
_DROPPED = "a field is stored as it came (nothing in RFC 5321/6409 has a server remove it); Postfix drops "
DELIBERATE: dict[str, str] = {
    "continuation-first-bdat": _BDAT_FIRST,
    "tab-continuation-first-bdat": _BDAT_FIRST,
    "continuation-first-moves-the-date-bdat": _BDAT_FIRST + ": there a second date after a ';'",
    "mbox-from-bdat": _BDAT_FIRST,
    "mbox-from-twice-bdat": _BDAT_FIRST,
    "mbox-quoted-from-bdat": _BDAT_FIRST,
    "mbox-quoted-twice-bdat": _BDAT_FIRST,
    "mbox-from-then-continuation-bdat": _BDAT_FIRST,
    "mbox-from-only-bdat": _BDAT_FIRST,
    "mbox-from-only-no-line-end": _BDAT_FIRST,
    "sub-mbox-from-bdat": _BDAT_FIRST + "; there the client's fields became body",
    "sub-mbox-quoted-from-bdat": _BDAT_FIRST + "; there the client's fields became body",
    "content-length": _DROPPED + "Content-Length (a local mailbox's field; no mailbox is written here)",
    "content-length-bdat": _DROPPED + "Content-Length",
    "bcc": _DROPPED + "Bcc, which RFC 5322 3.6.3 leaves to the message's preparer (relayed mail keeps it)",
    "bcc-bdat": _DROPPED + "Bcc",
    "space-before-colon": _KEPT + "Postfix removes the space",
    "space-before-colon-bdat": _KEPT + "Postfix removes the space",
    "tab-before-colon": _KEPT + "Postfix removes the tab",
    "tab-before-colon-bdat": _KEPT + "Postfix removes the tab",
    "sub-space-before-colon": _KEPT + "Postfix removes the white space (both see the fields present)",
    "sub-space-before-colon-bdat": _KEPT + "Postfix removes the white space (both see the fields present)",
    "many-received-fields": "RFC 5321 6.3 asks a loop threshold of at least 100 Received fields; Postfix"
    " refuses at its hopcount_limit, 50",
    "many-received-fields-bdat": "as many-received-fields",
    "return-path": "RFC 5321 4.4: a relay MUST NOT inspect the message for Return-Path; Postfix drops it",
    "return-path-bdat": "as return-path",
    "nul-in-value": _KEPT + "Postfix cuts the field at the NUL (obs-utext allows it, RFC 5322 4.1)",
    "nul-in-value-bdat": _KEPT + "Postfix cuts the field at the NUL",
    "bare-cr-in-value": _STRICT,
    "bare-cr-in-value-bdat": _BDAT_CR,
    "bare-lf-line-ends": _STRICT,
    "bare-lf-no-empty-line": _STRICT,
    "cr-only-line": _STRICT,
    "cr-only-line-bdat": _BDAT_CR,
    "line-999": _STRICT,
    "field-name-1500": "a line is classified on its first 1,000 octets (no field name is longer than"
    " a line RFC 5322 2.1.1 allows); Postfix on its first 2,048",
    "field-over-postfix-header-size-limit": _KEPT + "Postfix drops what passes header_size_limit, 100 KiB",
    "field-over-postfix-header-size-limit-bdat": _KEPT + "Postfix drops what passes header_size_limit",
    "mbox-from-998": "RFC 5322 2.1.1: the renamed line is folded after From to stay within 998 octets"
    " (docs/architecture.md); Postfix writes it 1,014 octets long",
    "mbox-from-998-bdat": "as mbox-from-998",
    "helo-non-ascii": "a message without SMTPUTF8 gains no 8-bit octet: the HELO name as A-labels"
    " (docs/architecture.md); Postfix writes it as UTF-8",
    "helo-comma-bracket": "the HELO name keeps atext and dots only (RFC 5322 3.6.7 must parse); Postfix"
    " keeps ',' and an open '['",
    "sub-empty": _NO_FROM,
    "sub-empty-bdat": _NO_FROM,
    "sub-body-only": _NO_FROM,
    "sub-body-only-bdat": _NO_FROM,
    "sub-no-from": _NO_FROM,
    "sub-no-from-bdat": _NO_FROM,
    "sub-continuation-first": _NO_FROM + " (its From: is body there)",
    "sub-continuation-first-bdat": _NO_FROM + " (its From: is body there)",
    "sub-resent-bcc": _RESENT,
    "sub-resent-bcc-bdat": _RESENT,
    "sub-resent-without-dates": _RESENT,
    "sub-resent-without-dates-bdat": _RESENT,
    "sub-resent-block-without-resent-date": _RESENT,
    "sub-resent-block-without-resent-date-bdat": _RESENT,
    "sub-unqualified-addresses": "addresses in fields are not rewritten (RFC 6409 8.8 is a MAY);"
    " Postfix appends @$myorigin on its submission port",
    "sub-unqualified-addresses-bdat": "as sub-unqualified-addresses",
    "sub-header-section-over-hold": "nothing is added to a header section over MAX_HEADER_HOLD, 256 KiB"
    " (it is not held in memory; docs/architecture.md); Postfix adds",
    "sub-header-section-over-hold-bdat": "as sub-header-section-over-hold",
    "sub-bare-lf": _STRICT,
}


# -- running a case ------------------------------------------------------------------------------


@dataclass
class Stored:
    """One side's outcome: the reply to the end of the message, and what was stored, with the
    Received field split off, the values generated there normalised, and line ends as LF."""

    reply: Got
    trace: tuple[str, ...] = ()  # the Received field's from-name, protocol, and `for` clause
    text: bytes | None = None

    def shown(self) -> str:
        stored = (
            "" if self.text is None else f" {self.text[:120]!r}" + ("..." if len(self.text) > 120 else "")
        )
        return f"{self.reply.shape()} {' '.join(self.trace)}{stored}"


def stuff(message: bytes) -> bytes:
    """DATA's transparency (RFC 5321 4.5.2): a dot begins no line unstuffed."""
    return (b"." if message.startswith(b".") else b"") + message.replace(b"\r\n.", b"\r\n..")


def send(
    port: int, case: Case, tls: ssl.SSLContext, *, implicit_tls: bool = False, auth: bool = False
) -> tuple[Got, str | None]:
    """The case's dialogue on a connection of its own (`tls` for implicit TLS or STARTTLS): the
    reply to the end of the message, and the queue id it names."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if implicit_tls:
        sock = tls.wrap_socket(sock, server_hostname=spawn.LOCAL_DOMAIN)
    wire = Wire(sock, timeout=TIMEOUT)

    def step(line: bytes, want: str) -> None:
        got = wire.command(line)
        assert got.code == want, f"{case.id}: {line[:60]!r} got {got}"

    try:
        assert wire.reply().code == "220"
        step(case.hello, "250")
        if case.starttls:
            step(b"STARTTLS", "220")
            wire = Wire(tls.wrap_socket(wire.sock, server_hostname=spawn.LOCAL_DOMAIN), timeout=TIMEOUT)
            step(case.hello, "250")
        if auth:
            step(b"AUTH PLAIN " + base64.b64encode(f"\0{spawn.USER}\0{spawn.PASSWORD}".encode()), "235")
        step(f"MAIL FROM:<{SENDER[case.listener]}>".encode() + case.params, "250")
        for rcpt in case.rcpts:
            step(f"RCPT TO:<{rcpt}>".encode(), "250")
        if case.how == "data":
            step(b"DATA", "354")
            wire.send(stuff(case.message) + b".\r\n")
        else:
            wire.send(b"BDAT %d LAST\r\n" % len(case.message) + case.message)
        got = wire.reply()
        wire.command(b"QUIT")
    finally:
        wire.sock.close()
    m = QUEUED.search(got.first)
    return got, m.group(1) if m else None


def split_trace(stored: bytes, eol: bytes) -> tuple[str, bytes]:
    """The first field, which must be a Received field (unfolded), and what follows it."""
    assert stored.startswith(b"Received: "), stored[:80]
    m = re.match(rb"Received:(.*?" + eol + rb")(?![ \t])", stored, re.S)
    assert m is not None, stored[:300]
    field = re.sub(rb"\r?\n(?=[ \t])", b"", m.group(1)).rstrip(b"\r\n")
    return field.decode("utf-8"), stored[m.end() :]


DATE_TIME = re.compile(  # RFC 5322 3.3 date-time, without the obsolete forms
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d\d:\d\d(?::\d\d)? [+-]\d{4}"
)


def check_date(date: str, since: float) -> None:
    assert DATE_TIME.fullmatch(date), date
    stamp = email.utils.parsedate_to_datetime(date).timestamp()
    assert int(since) <= stamp <= time.time() + 1, (date, since)


def mailwright_side(srv: spawn.SpawnedServer, case: Case) -> Stored:
    """Runs the case on mailwright and holds what it stored to the RFCs (module docstring)."""
    since = time.time()
    sub = case.listener == SUB
    port = srv.ports["submissions" if sub else "mx"]
    tls = ssl.create_default_context(cafile=str(srv.ca_file))
    got, queue_id = send(port, case, tls, implicit_tls=sub, auth=sub)
    if queue_id is None:
        return Stored(got)
    stored = stored_body(srv.queue_db.parent, queue_id)
    utf8 = b"SMTPUTF8" in case.params
    field, rest = split_trace(stored, b"\r\n")
    raw_trace = stored[: len(stored) - len(rest)]
    tokens, date = received_tokens(field, utf8=utf8)
    check_date(date, since)
    tls = sub or case.starttls
    proto = "SMTP"  # RFC 3848 and RFC 6531 3.7.3: after EHLO, ESMTP or UTF8SMTP, then S for TLS, A for AUTH
    if case.hello.startswith(b"EHLO"):
        proto = ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if sub else "")
    for_ = ["for", f"<{case.rcpts[0]}>"] if len(case.rcpts) == 1 else []
    assert tokens == ["from", case.name, "by", spawn.LOCAL_DOMAIN, "with", proto, *for_], tokens
    # The comments: the peer as an address literal, our software; on submission the TLS facts.
    assert re.match(
        rf" from {re.escape(case.name)} \(\[127\.0\.0\.1\]\)\s+by mx\.test \(mailwright\) with ", field
    ), field
    assert tls == ("(using TLS" in field), field
    written = raw_trace.split(b"\r\n")
    # What we generate: a Message-ID (RFC 5322 3.6.4) and a Date of the Received field's time.
    msgids = re.findall(rb"(?m)^Message-ID: (<[0-9a-f]+\.[0-9a-f]{12}@mx\.test>)\r\n", rest)
    dates = re.findall(rb"(?m)^Date: " + re.escape(date.encode()) + rb"\r\n", rest)
    assert len(msgids) <= 1 and len(dates) <= 1, (msgids, dates)
    assert sub or not (msgids or dates), "a field added on MX"
    for msgid in msgids:
        assert MSG_ID.fullmatch(msgid.decode()), msgid
        rest = rest.replace(b"Message-ID: " + msgid + b"\r\n", GEN_MSGID)
        written.append(b"Message-ID: " + msgid)
    if dates:
        rest = rest.replace(b"Date: " + date.encode() + b"\r\n", GEN_DATE)
    end = re.search(rb"\n\r?\n", b"\n" + rest)  # the empty line (after our field, a first line is one)
    head = rest if end is None else rest[: end.start()]
    assert head.count(GEN_MSGID) == len(msgids) and head.count(GEN_DATE) == len(dates), (
        "added past the header"
    )
    for renamed in re.findall(rb"(?m)^X-Mailbox-Line: [^\r\n]*(?:\r\n [^\r\n]*)?", rest):
        written += renamed.split(b"\r\n")
    if max(len(x.rstrip(b"\r")) for x in case.message.split(b"\n")) <= 998:
        assert all(len(line) <= 998 for line in written), "a line over 998 octets written"
    return Stored(got, (case.name, proto, " ".join(for_)), rest)


# Postfix's mail_date(): local time, the offset, the zone's name; a client's dates here have no name.
POSTFIX_DATE = rb"\w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \([A-Za-z]+\)"


def postfix_side(port: int, config_dir: Path, case: Case) -> Stored:
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # its trustme certificate, made for this run
    got, queue_id = send(port, case, unverified)
    if queue_id is None:
        return Stored(got)
    from bench.postfix_instance import POSTFIX

    postcat = str(Path(POSTFIX).with_name("postcat"))
    out = subprocess.run(
        [postcat, "-c", str(config_dir), "-bh", "-q", queue_id], capture_output=True, timeout=30, check=True
    ).stdout
    field, rest = split_trace(out, b"\n")
    generated = re.escape(queue_id.encode()) + rb"@postfix\.bench\.test>\n"
    rest = re.sub(
        rb"(?mi)^(Resent-)?Message-Id: <\d{14}\." + generated, rb"\1" + GEN_MSGID[:-2] + b"\n", rest
    )
    rest = re.sub(rb"(?m)^(Resent-)?Date: " + POSTFIX_DATE + rb"\n", rb"\1" + GEN_DATE[:-2] + b"\n", rest)
    try:
        tokens, _ = received_tokens(field, utf8=True)
    except AssertionError:  # Postfix keeps some specials of a HELO name (helo-comma-bracket)
        return Stored(got, (f"unparsable: {field[:80]}",), rest)
    assert tokens[2:4] == ["by", "postfix.bench.test"] and tokens[6:8] == ["id", queue_id], tokens
    return Stored(got, (tokens[1], tokens[5], " ".join(tokens[8:])), rest)


def as_lines(text: bytes) -> bytes:
    """Stored text as a Postfix queue file holds it: lines, each ended (CRLF and LF alike)."""
    text = text.replace(b"\r\n", b"\n")
    return text + b"\n" if text and not text.endswith(b"\n") else text


def first_difference(ours: bytes, theirs: bytes) -> str:
    """Where two stored texts part, for the report ("" where they do not)."""
    if ours == theirs:
        return ""
    at = next(
        (i for i, (x, y) in enumerate(zip(ours, theirs, strict=False)) if x != y), min(len(ours), len(theirs))
    )
    start = max(at - 20, 0)
    return f" [from octet {at}: {ours[start : at + 60]!r} | {theirs[start : at + 60]!r}]"


mw = mailwright_server("headers")


def test_the_table_is_well_formed() -> None:
    assert_table_ids([case.id for case in CASES], DELIBERATE, 190)
    for case in CASES:
        # DATA's terminator begins with the CRLF that ends the last line: a message sent with
        # DATA ends in one (or is empty).
        assert case.how == "bdat" or not case.message or case.message.endswith(b"\r\n"), case.id
        assert case.listener in (MX, SUB) and (case.stored is None) == (case.reply != ACCEPTED), case.id


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_mailwright_stores_the_header_section_as_the_table_says(mw: spawn.SpawnedServer, case: Case) -> None:
    ours = mailwright_side(mw, case)
    assert ours.reply.shape() == case.reply, f"{case.id}: {ours.reply}"
    assert ours.text == case.stored


@pytest.fixture(scope="module")
def postfix() -> Iterator[tuple[int, int, Path]]:
    """A private Postfix: (MX port, submission port, configuration directory)."""
    submission = spawn.free_ports(1)[0]
    service = f"127.0.0.1:{submission} inet n - n - - smtpd -o local_header_rewrite_clients=static:all\n"
    with private_postfix({"local_header_rewrite_clients": ""}, tls=True, services=service) as pf:
        yield pf.port, submission, pf.config_dir


def test_postfix_stores_the_same_but_where_this_project_chose_otherwise(
    mw: spawn.SpawnedServer, postfix: tuple[int, int, Path]
) -> None:
    mx_port, sub_port, config_dir = postfix
    disagreements = Disagreements(DELIBERATE)
    table: list[str] = []
    for case in CASES:
        ours = mailwright_side(mw, case)
        theirs = postfix_side(sub_port if case.listener == SUB else mx_port, config_dir, case)
        compared_trace = ours.trace if case.listener == MX else ours.trace[::2]
        their_trace = theirs.trace if case.listener == MX else theirs.trace[::2]
        differs = (
            reply_class(ours.reply.code) != reply_class(theirs.reply.code)
            or compared_trace != their_trace
            or (ours.text is not None and theirs.text is not None and as_lines(ours.text) != theirs.text)
        )
        row = f"{case.id}: mailwright {ours.shown()} | Postfix {theirs.shown()}"
        if ours.text is not None and theirs.text is not None:
            row += first_difference(as_lines(ours.text), theirs.text)
        table.append(row)
        disagreements.note(case.id, differs, row)
    if os.environ.get("MAILWRIGHT_DIFF_TABLE"):
        Path(os.environ["MAILWRIGHT_DIFF_TABLE"]).write_text("\n".join(table) + "\n")
    disagreements.check()
