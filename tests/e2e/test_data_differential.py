"""The message-transfer phase, side by side: what mailwright answers and stores, and whether
Postfix's smtpd agrees.

`CASES` is a table of dialogues around DATA (RFC 5321 4.1.1.4, 4.5.2, 4.5.3.1.6), BDAT (RFC 3030),
SIZE (RFC 1870) and BODY (RFC 6152; BINARYMIME, RFC 3030 3, is not offered): DATA and BDAT out of
sequence or with odd arguments, dot-stuffing edge cases, empty bodies, 8-bit and NUL octets, lines
of 998 and 999 octets (with and without a stuffing dot), bodies at and one octet over the size
limit, BDAT sizes that are no number, negative, huge, zero-padded, with extra arguments, chunks
summing over the limit, DATA and BDAT mixed in one transaction, RSET, QUIT and EHLO between
chunks, commands pipelined behind the final dot or the last chunk, many tiny chunks, and what a
client may do after each refusal. Each case runs on a connection of its own, after its setup
commands, over a raw loopback socket.

- Always: a real `mailwright serve` (tests/spawn.py, mx listener) must give each reply of a case
  the code and enhanced status code written in the table. Those were chosen from the RFCs (5321,
  3030, 1870, 6152, and 3463 for the enhanced codes: 5.3.4 too big, 5.5.1 bad sequence, 5.5.2
  syntax, 5.5.4 bad arguments, 5.6.0 bad content), not copied from a run; where a refusal's text
  must say what is wrong, the table says which words. A message accepted must be stored as sent
  (unstuffed for DATA, octet for octet for BDAT) behind the one trace header added (and, where
  its first line is no header field, the empty line put before the body: `HEADERLESS`), and after
  every case the session must still be in step: a NOOP gets its 250 and a QUIT its 221, so no
  octet of a chunk was read as a command and no reply is missing or extra.
- As root with Postfix installed: a private Postfix smtpd (bench/postfix_instance.py, accepting
  mail for the same domain and holding it, with the same size limit) gets the same dialogues, and
  the two must agree on the class (2xx/3xx/4xx/5xx) of every reply and on staying in step, except
  for `DELIBERATE`, the differences this project chose, each with its reason. That list is exact:
  a case on it that no longer differs fails too, so it never hides a change. Where both accept,
  the body Postfix stored (read back with postcat) must be the table's too, so the table's idea
  of unstuffing is not only this project's.

Both runs take seconds: 106 short connections each (about 20 s with Postfix, as root).

Not responsible for: SMTP smuggling and bare CR/LF (test_hostile.py, tests/protocol), how reads
are split (test_segmentation.py), the trace header's contents (test_stored_headers.py), MAIL/RCPT
themselves (test_envelope_differential.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import spawn

from . import differential
from .conftest import QUEUED, stored_body
from .differential import (
    Disagreements,
    Got,
    assert_table_ids,
    mailwright_server,
    private_postfix,
    reply_class,
)

SIZE_LIMIT = 100_000  # max_message_size of both servers
TIMEOUT = 5.0

EHLO = b"EHLO client.test"
MAIL = b"MAIL FROM:<s@client.test>"
RCPT = b"RCPT TO:<u@mx.test>"

# The commands sent before a case, each with the class its reply must have.
SETUPS: dict[str, tuple[tuple[bytes, str], ...]] = {
    "none": (),
    "ehlo": ((EHLO, "2"),),
    "mail": ((EHLO, "2"), (MAIL, "2")),
    "refused": ((EHLO, "2"), (MAIL, "2"), (b"RCPT TO:<u@other.test>", "5")),
    "rcpt": ((EHLO, "2"), (MAIL, "2"), (RCPT, "2")),
    "helo-rcpt": ((b"HELO client.test", "2"), (MAIL, "2"), (RCPT, "2")),
    "7bit": ((EHLO, "2"), (MAIL + b" BODY=7BIT", "2"), (RCPT, "2")),
    "8bitmime": ((EHLO, "2"), (MAIL + b" BODY=8BITMIME", "2"), (RCPT, "2")),
    "size-10": ((EHLO, "2"), (MAIL + b" SIZE=10", "2"), (RCPT, "2")),
    "binarymime": ((EHLO, "2"), (MAIL + b" BODY=BINARYMIME", "5")),
}


@dataclass(frozen=True)
class Case:
    id: str
    setup: str  # a key of SETUPS
    steps: tuple[tuple[bytes, int], ...]  # octets sent as they are, then how many replies to read
    expect: tuple[str, ...]  # mailwright's replies: "code enhanced", "code", or "closed"
    says: str = ""  # words the last reply's text must contain (case-insensitive; the last before EOF)
    stored: bytes | None = None  # what each message the case queues is, behind the trace header
    closes: bool = False  # the case ends the session (no NOOP/QUIT probe)


CASES: list[Case] = []


def c(
    id: str,
    setup: str,
    *steps: bytes | tuple[bytes, int],
    expect: str,
    says: str = "",
    stored: bytes | None = None,
    closes: bool = False,
) -> None:
    norm = tuple(s if isinstance(s, tuple) else (s, 1) for s in steps)
    CASES.append(Case(id, setup, norm, tuple(expect.split(" / ")), says, stored, closes))


def data(body: bytes) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
    """DATA, then `body` (already stuffed, without the terminator) and the terminator."""
    return (b"DATA\r\n", 1), (body + b".\r\n", 1)


def bdat(chunk: bytes, last: bool = False) -> tuple[bytes, int]:
    return (b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk, 1)


def sized(size: int) -> bytes:
    """A message of exactly `size` octets (>= 20) in CRLF lines of at most 100 octets."""
    head = b"Subject: size\r\n\r\n"
    rest = size - len(head)
    lines, left = [], rest
    while left > 0:
        n = min(100, left)
        lines.append(b"x" * (n - 2) + b"\r\n" if n >= 2 else b"\r\n")
        left -= n
    out = head + b"".join(lines)
    if len(out) != size:  # a last piece of 1 octet: fold it into the line before
        out = head + b"".join(lines[:-2]) + b"x" * (len(lines[-2]) - 1) + b"\r\n"
    assert len(out) == size, (len(out), size)
    return out


OK, START, QUEUED_OK = "250 2.0.0", "354", "250 2.0.0"
SEQUENCE = "503 5.5.1"  # RFC 5321 4.2.3 / RFC 3463 5.5.1
NO_RCPTS = "554 5.5.1"  # RFC 5321 3.3: DATA without a valid recipient gets 503 or 554
BAD_ARGS = "501 5.5.4"  # RFC 3463 5.5.4
TOO_BIG = "552 5.3.4"  # RFC 1870 / RFC 3463 5.3.4
BAD_CONTENT = "550 5.6.0"  # RFC 3463 5.6.0: other or undefined media error
CLOSING = "521 5.5.4"  # a BDAT command whose chunk cannot be delimited ends the session, as in Postfix
MSG = b"Subject: t\r\n\r\nbody\r\n"
# A message whose first line is no header field is all body: the empty line RFC 5322 2.1 puts
# before a body is supplied in front of it (policy.cleanup, as Postfix's cleanup does).
HEADERLESS = b"\r\n"
EIGHT_BIT = b"Subject: caf\xc3\xa9\r\n\r\nna\xefve \xff\x80\r\n"

# -- DATA out of sequence, and with arguments (RFC 5321 4.1.1.4, 3.3)
c("data-before-ehlo", "none", b"DATA\r\n", expect=SEQUENCE)
c("data-no-mail", "ehlo", b"DATA\r\n", expect=SEQUENCE, says="MAIL")
c("data-no-rcpt", "mail", b"DATA\r\n", expect=NO_RCPTS, says="recipient")
c("data-after-refused-rcpt", "refused", b"DATA\r\n", expect=NO_RCPTS, says="recipient")
# A DATA refused for want of recipients leaves the transaction open: a recipient may follow.
c(
    "data-no-rcpt-then-rcpt",
    "mail",
    b"DATA\r\n",
    RCPT + b"\r\n",
    *data(MSG),
    expect=f"{NO_RCPTS} / 250 2.1.5 / {START} / {QUEUED_OK}",
    stored=MSG,
)
c("data-no-rcpt-then-mail", "mail", b"DATA\r\n", MAIL + b"\r\n", expect=f"{NO_RCPTS} / {SEQUENCE}")
c("data-arg", "rcpt", b"DATA x\r\n", expect=BAD_ARGS, says="DATA")
c("data-arg-size", "rcpt", b"DATA 100\r\n", expect=BAD_ARGS, says="DATA")
# A refused DATA changes nothing: the transaction goes on.
c(
    "data-arg-then-data",
    "rcpt",
    b"DATA x\r\n",
    *data(MSG),
    expect=f"{BAD_ARGS} / {START} / {QUEUED_OK}",
    stored=MSG,
)
c(
    "data-trailing-space",
    "rcpt",
    (b"DATA \r\n", 1),
    (MSG + b".\r\n", 1),
    expect=f"{START} / {QUEUED_OK}",
    stored=MSG,
)
c("data-lower", "rcpt", (b"data\r\n", 1), (MSG + b".\r\n", 1), expect=f"{START} / {QUEUED_OK}", stored=MSG)
c("data-after-helo", "helo-rcpt", *data(MSG), expect=f"{START} / {QUEUED_OK}", stored=MSG)
c("data-twice", "rcpt", *data(MSG), b"DATA\r\n", expect=f"{START} / {QUEUED_OK} / {SEQUENCE}", stored=MSG)
c("data-nul-in-command", "rcpt", b"DATA\x00\r\n", expect="501 5.5.2", says="NUL")

# -- the body: dot-stuffing (RFC 5321 4.5.2), empty bodies, octets, line lengths (4.5.3.1.6)
c("body-simple", "rcpt", *data(MSG), expect=f"{START} / {QUEUED_OK}", stored=MSG)
c("body-empty", "rcpt", *data(b""), expect=f"{START} / {QUEUED_OK}", stored=b"")
c("body-crlf-only", "rcpt", *data(b"\r\n"), expect=f"{START} / {QUEUED_OK}", stored=b"\r\n")
c(
    "body-dotdot-line",
    "rcpt",
    *data(b"a\r\n..\r\nb\r\n"),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + b"a\r\n.\r\nb\r\n",
)
c(
    "body-dot-space-line",
    "rcpt",
    *data(b"a\r\n. \r\nb\r\n"),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + b"a\r\n \r\nb\r\n",
)
# A leading dot is removed from any line that has more after it, stuffed or not (4.5.2).
c(
    "body-dot-x-first-line",
    "rcpt",
    *data(b".x\r\nb\r\n"),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + b"x\r\nb\r\n",
)
c("body-only-a-dot", "rcpt", *data(b"..\r\n"), expect=f"{START} / {QUEUED_OK}", stored=HEADERLESS + b".\r\n")
c(
    "body-three-dots",
    "rcpt",
    *data(b"...\r\n"),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + b"..\r\n",
)
c(
    "body-dots-inside-lines",
    "rcpt",
    *data(b"a.b\r\nc.\r\n"),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + b"a.b\r\nc.\r\n",
)
c(
    "body-dot-last-line",
    "rcpt",
    *data(b"a\r\n..\r\n"),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + b"a\r\n.\r\n",
)
c("body-8bit-no-body", "rcpt", *data(EIGHT_BIT), expect=f"{START} / {QUEUED_OK}", stored=EIGHT_BIT)
# RFC 6152 puts BODY= on the client; like Postfix, the server labels, it does not inspect.
c("body-8bit-body-7bit", "7bit", *data(EIGHT_BIT), expect=f"{START} / {QUEUED_OK}", stored=EIGHT_BIT)
c("body-8bit-8bitmime", "8bitmime", *data(EIGHT_BIT), expect=f"{START} / {QUEUED_OK}", stored=EIGHT_BIT)
c(
    "body-nul",
    "rcpt",
    *data(b"a\x00b\r\n\x00\r\n"),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + b"a\x00b\r\n\x00\r\n",
)
LINE_998 = b"Subject: t\r\n\r\n" + b"y" * 998 + b"\r\n"
LINE_999 = b"Subject: t\r\n\r\n" + b"y" * 999 + b"\r\n"
c("line-998", "rcpt", *data(LINE_998), expect=f"{START} / {QUEUED_OK}", stored=LINE_998)
c("line-999", "rcpt", *data(LINE_999), expect=f"{START} / {BAD_CONTENT}", says="998")
# 4.5.3.1.6: 1000 octets with CRLF "not counting the leading dot duplicated for transparency".
DOT_998 = b"Subject: t\r\n\r\n." + b"y" * 997 + b"\r\n"
DOT_999 = b"Subject: t\r\n\r\n." + b"y" * 998 + b"\r\n"
c(
    "line-998-dot-stuffed",
    "rcpt",
    *data(DOT_998.replace(b"\n.", b"\n..")),
    expect=f"{START} / {QUEUED_OK}",
    stored=DOT_998,
)
c(
    "line-999-dot-stuffed",
    "rcpt",
    *data(DOT_999.replace(b"\n.", b"\n..")),
    expect=f"{START} / {BAD_CONTENT}",
    says="998",
)
c(
    "line-998-dot-stuffed-first",
    "rcpt",
    *data(b"." + DOT_998[15:]),
    expect=f"{START} / {QUEUED_OK}",
    stored=HEADERLESS + DOT_998[15:],
)
c(
    "line-999-then-mail",
    "rcpt",
    *data(LINE_999),
    MAIL + b"\r\n",
    expect=f"{START} / {BAD_CONTENT} / 250 2.1.0",
)

# -- size (RFC 1870: the limit is inclusive; SIZE= is the client's estimate)
AT_LIMIT = sized(SIZE_LIMIT)
OVER_LIMIT = sized(SIZE_LIMIT + 1)
c("size-at-limit", "rcpt", *data(AT_LIMIT), expect=f"{START} / {QUEUED_OK}", stored=AT_LIMIT)
c("size-over-limit", "rcpt", *data(OVER_LIMIT), expect=f"{START} / {TOO_BIG}", says="size")
c(
    "size-over-limit-then-mail",
    "rcpt",
    *data(OVER_LIMIT),
    MAIL + b"\r\n",
    expect=f"{START} / {TOO_BIG} / 250 2.1.0",
)
c("size-declared-smaller", "size-10", *data(MSG * 10), expect=f"{START} / {QUEUED_OK}", stored=MSG * 10)
c("bdat-size-declared-smaller", "size-10", bdat(MSG * 10, last=True), expect=QUEUED_OK, stored=MSG * 10)

# -- commands pipelined behind the final dot (RFC 2920)
c(
    "pipelined-after-dot",
    "rcpt",
    (b"DATA\r\n", 1),
    (MSG + b".\r\nRSET\r\n" + MAIL + b"\r\n" + RCPT + b"\r\nDATA\r\n", 5),
    (MSG + b".\r\n", 1),
    expect=f"{START} / {QUEUED_OK} / 250 2.0.0 / 250 2.1.0 / 250 2.1.5 / {START} / {QUEUED_OK}",
    stored=MSG,
)
c(
    "quit-pipelined-after-dot",
    "rcpt",
    (b"DATA\r\n", 1),
    (MSG + b".\r\nQUIT\r\n", 2),
    expect=f"{START} / {QUEUED_OK} / 221 2.0.0 / closed",
    stored=MSG,
    closes=True,
)
c(
    "data-and-body-in-one-write",
    "rcpt",
    (b"DATA\r\n" + MSG + b".\r\n", 2),
    expect=f"{START} / {QUEUED_OK}",
    stored=MSG,
)

# -- BDAT (RFC 3030)
c("bdat-one-chunk", "rcpt", bdat(MSG, last=True), expect=QUEUED_OK, stored=MSG)
c(
    "bdat-two-chunks",
    "rcpt",
    bdat(MSG[:5]),
    bdat(MSG[5:], last=True),
    expect=f"{OK} / {QUEUED_OK}",
    stored=MSG,
)
c("bdat-0-last", "rcpt", bdat(b"", last=True), expect=QUEUED_OK, stored=b"")
c("bdat-chunk-then-0-last", "rcpt", bdat(MSG), bdat(b"", last=True), expect=f"{OK} / {QUEUED_OK}", stored=MSG)
c(
    "bdat-0-chunks",
    "rcpt",
    bdat(b""),
    bdat(b""),
    bdat(MSG, last=True),
    expect=f"{OK} / {OK} / {QUEUED_OK}",
    stored=MSG,
)
c("bdat-last-lower", "rcpt", (b"BDAT %d last\r\n" % len(MSG) + MSG, 1), expect=QUEUED_OK, stored=MSG)
c("bdat-last-mixed", "rcpt", (b"bdat %d LaSt\r\n" % len(MSG) + MSG, 1), expect=QUEUED_OK, stored=MSG)
c("bdat-leading-zeros", "rcpt", (b"BDAT 00%d LAST\r\n" % len(MSG) + MSG, 1), expect=QUEUED_OK, stored=MSG)
# chunk-size = 1*DIGIT: however many zeros pad it, the size is small and its octets follow.
c(
    "bdat-many-leading-zeros",
    "rcpt",
    (b"BDAT %020d LAST\r\n" % len(MSG) + MSG, 1),
    expect=QUEUED_OK,
    stored=MSG,
)
c("bdat-zero-padded-zero", "rcpt", (b"BDAT 000 LAST\r\n", 1), expect=QUEUED_OK, stored=b"")
c("bdat-trailing-space", "rcpt", (b"BDAT %d LAST \r\n" % len(MSG) + MSG, 1), expect=QUEUED_OK, stored=MSG)
c("bdat-two-spaces", "rcpt", (b"BDAT  %d  LAST\r\n" % len(MSG) + MSG, 1), expect=QUEUED_OK, stored=MSG)
# Without a size that can be read, the octets that follow cannot be counted: none are sent here.
c("bdat-no-size", "rcpt", b"BDAT\r\n", expect=f"{CLOSING} / closed", says="BDAT size [LAST]", closes=True)
c(
    "bdat-only-last",
    "rcpt",
    b"BDAT LAST\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c(
    "bdat-not-a-number",
    "rcpt",
    b"BDAT abc LAST\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c(
    "bdat-negative",
    "rcpt",
    b"BDAT -5 LAST\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c(
    "bdat-plus-sign",
    "rcpt",
    b"BDAT +5 LAST\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c("bdat-hex", "rcpt", b"BDAT 0x5\r\n", expect=f"{CLOSING} / closed", says="BDAT size [LAST]", closes=True)
c(
    "bdat-decimal-point",
    "rcpt",
    b"BDAT 5.0\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c(
    "bdat-huge-20-digits",
    "rcpt",
    b"BDAT 99999999999999999999 LAST\r\n",
    expect=f"{CLOSING} / closed",
    says="",
    closes=True,
)
c(
    "bdat-extra-argument",
    "rcpt",
    b"BDAT 5 LAST X\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c(
    "bdat-not-last",
    "rcpt",
    b"BDAT 5 FIRST\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c(
    "bdat-lastx",
    "rcpt",
    b"BDAT 5 LASTX\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
c("bdat-joined", "rcpt", b"BDAT5 LAST\r\n", expect="500 5.5.1")
# A chunk behind a BDAT command that cannot be read must not be read as commands: it ends the
# session, so the transaction written inside this chunk is never run.
INNER = MAIL + b"\r\n" + RCPT + b"\r\nBDAT 4 LAST\r\nevil"
c(
    "bdat-bad-syntax-chunk-of-commands",
    "rcpt",
    (b"BDAT %d LAST X\r\n" % len(INNER) + INNER, 1),
    expect=f"{CLOSING} / closed",
    closes=True,
)
c(
    "bdat-bad-size-chunk-of-commands",
    "rcpt",
    (b"BDAT %dx LAST\r\n" % len(INNER) + INNER, 1),
    expect=f"{CLOSING} / closed",
    closes=True,
)
c(
    "bdat-16-digits",
    "rcpt",
    b"BDAT 1000000000000000 LAST\r\n",
    expect=f"{CLOSING} / closed",
    says="BDAT size [LAST]",
    closes=True,
)
# A size over the limit: the chunk is read to its end, then refused (RFC 3030 2: consumed).
c("bdat-chunk-over-limit", "rcpt", bdat(OVER_LIMIT, last=True), expect=TOO_BIG, says="size")
c(
    "bdat-at-limit",
    "rcpt",
    bdat(AT_LIMIT[:60000]),
    bdat(AT_LIMIT[60000:], last=True),
    expect=f"{OK} / {QUEUED_OK}",
    stored=AT_LIMIT,
)
c(
    "bdat-chunks-sum-over-limit",
    "rcpt",
    bdat(OVER_LIMIT[:60000]),
    bdat(OVER_LIMIT[60000:], last=True),
    expect=f"{OK} / {TOO_BIG}",
    says="size",
)
c(
    "bdat-over-limit-then-mail",
    "rcpt",
    bdat(OVER_LIMIT, last=True),
    MAIL + b"\r\n",
    RCPT + b"\r\n",
    bdat(MSG, last=True),
    expect=f"{TOO_BIG} / 250 2.1.0 / 250 2.1.5 / {QUEUED_OK}",
    stored=MSG,
)
# RFC 3030 2: chunks already pipelined behind a refused one are read and thrown away.
c(
    "bdat-pipelined-behind-refused",
    "rcpt",
    (b"BDAT %d\r\n" % len(OVER_LIMIT) + OVER_LIMIT + b"BDAT 5 LAST\r\nhello", 2),
    expect=f"{TOO_BIG} / 503 5.5.1",
)
# Out of sequence: refused, and the chunk is still consumed (RFC 3030 2), so the session stays in step.
c("bdat-before-ehlo", "none", bdat(b"QUIT\r\n", last=True), expect=SEQUENCE, says="EHLO")
c("bdat-no-mail", "ehlo", bdat(b"QUIT\r\n", last=True), expect=SEQUENCE, says="MAIL")
c("bdat-no-mail-not-last", "ehlo", bdat(b"QUIT\r\n"), expect=SEQUENCE, says="MAIL")
c("bdat-no-mail-0-last", "ehlo", bdat(b"", last=True), expect=SEQUENCE, says="MAIL")
c("bdat-no-rcpt", "mail", bdat(b"QUIT\r\n", last=True), expect=NO_RCPTS, says="recipient")
c("bdat-after-refused-rcpt", "refused", bdat(b"QUIT\r\n", last=True), expect=NO_RCPTS, says="recipient")
c("bdat-after-helo", "helo-rcpt", bdat(MSG, last=True), expect=SEQUENCE, says="EHLO")
c("bdat-after-binarymime-refused", "binarymime", bdat(MSG, last=True), expect=SEQUENCE, says="MAIL")
c("data-after-binarymime-refused", "binarymime", b"DATA\r\n", expect=SEQUENCE, says="MAIL")
# DATA and BDAT in one transaction (RFC 3030 3: 503, then RSET)
c("data-after-bdat-chunk", "rcpt", bdat(MSG), b"DATA\r\n", expect=f"{OK} / {SEQUENCE}", says="BDAT")
c(
    "data-after-bdat-chunk-then-rset",
    "rcpt",
    bdat(MSG),
    b"DATA\r\n",
    b"RSET\r\n",
    MAIL + b"\r\n",
    RCPT + b"\r\n",
    *data(MSG),
    expect=f"{OK} / {SEQUENCE} / 250 2.0.0 / 250 2.1.0 / 250 2.1.5 / {START} / {QUEUED_OK}",
    stored=MSG,
)
c(
    "bdat-after-data-message",
    "rcpt",
    *data(MSG),
    bdat(b"QUIT\r\n", last=True),
    expect=f"{START} / {QUEUED_OK} / {SEQUENCE}",
    stored=MSG,
)
c(
    "bdat-after-last",
    "rcpt",
    bdat(MSG, last=True),
    bdat(b"QUIT\r\n"),
    expect=f"{QUEUED_OK} / {SEQUENCE}",
    stored=MSG,
)
c("bdat-after-refused-data", "mail", b"DATA\r\n", bdat(MSG, last=True), expect=f"{NO_RCPTS} / {NO_RCPTS}")
c(
    "rcpt-after-bdat-chunk",
    "rcpt",
    bdat(MSG),
    b"RCPT TO:<v@mx.test>\r\n",
    expect=f"{OK} / {SEQUENCE}",
    says="BDAT",
)
c("mail-after-bdat-chunk", "rcpt", bdat(MSG), MAIL + b"\r\n", expect=f"{OK} / {SEQUENCE}")
c(
    "rset-between-chunks",
    "rcpt",
    bdat(b"first "),
    b"RSET\r\n",
    MAIL + b"\r\n",
    RCPT + b"\r\n",
    bdat(MSG, last=True),
    expect=f"{OK} / 250 2.0.0 / 250 2.1.0 / 250 2.1.5 / {QUEUED_OK}",
    stored=MSG,
)
c(
    "rset-then-bdat-last",
    "rcpt",
    bdat(b"first "),
    b"RSET\r\n",
    bdat(MSG, last=True),
    expect=f"{OK} / 250 2.0.0 / {SEQUENCE}",
)
c(
    "ehlo-between-chunks",
    "rcpt",
    bdat(b"first "),
    EHLO + b"\r\n",
    MAIL + b"\r\n",
    expect=f"{OK} / 250 / 250 2.1.0",
)
c(
    "quit-between-chunks",
    "rcpt",
    bdat(b"first "),
    b"QUIT\r\n",
    expect=f"{OK} / 221 2.0.0 / closed",
    closes=True,
)
c(
    "quit-inside-a-chunk",
    "rcpt",
    bdat(b"QUIT\r\n", last=True),
    expect=QUEUED_OK,
    stored=HEADERLESS + b"QUIT\r\n",
)
c(
    "noop-between-chunks",
    "rcpt",
    bdat(MSG[:5]),
    b"NOOP\r\n",
    bdat(MSG[5:], last=True),
    expect=f"{OK} / {OK} / {QUEUED_OK}",
    stored=MSG,
)
# BDAT carries octets, not lines: no unstuffing, no terminator, no line limit (RFC 3030 2).
BDAT_DOTS = b"Subject: t\r\n\r\n..x\r\n.\r\nQUIT\r\n"
c("bdat-dots-kept", "rcpt", bdat(BDAT_DOTS, last=True), expect=QUEUED_OK, stored=BDAT_DOTS)
c("bdat-line-999", "rcpt", bdat(LINE_999, last=True), expect=QUEUED_OK, stored=LINE_999)
c("bdat-8bit-body-7bit", "7bit", bdat(EIGHT_BIT, last=True), expect=QUEUED_OK, stored=EIGHT_BIT)
c("bdat-8bit-8bitmime", "8bitmime", bdat(EIGHT_BIT, last=True), expect=QUEUED_OK, stored=EIGHT_BIT)
c(
    "bdat-nul",
    "rcpt",
    bdat(b"a\x00b\r\n\x00", last=True),
    expect=QUEUED_OK,
    stored=HEADERLESS + b"a\x00b\r\n\x00",
)
# Pipelined behind the last chunk, and chunks pipelined with their commands (RFC 3030 4.2).
c(
    "pipelined-after-last-chunk",
    "rcpt",
    (b"BDAT %d LAST\r\n" % len(MSG) + MSG + b"RSET\r\nNOOP\r\n" + MAIL + b"\r\n", 4),
    expect=f"{QUEUED_OK} / 250 2.0.0 / 250 2.0.0 / 250 2.1.0",
    stored=MSG,
)
c(
    "chunks-pipelined",
    "rcpt",
    (b"BDAT 5\r\n" + MSG[:5] + b"BDAT %d LAST\r\n" % (len(MSG) - 5) + MSG[5:], 2),
    expect=f"{OK} / {QUEUED_OK}",
    stored=MSG,
)
c(
    "whole-transaction-pipelined",
    "ehlo",
    (MAIL + b"\r\n" + RCPT + b"\r\nBDAT %d LAST\r\n" % len(MSG) + MSG + b"QUIT\r\n", 4),
    expect=f"250 2.1.0 / 250 2.1.5 / {QUEUED_OK} / 221 2.0.0 / closed",
    stored=MSG,
    closes=True,
)
# Empty chunks that are not the last move nothing forward: past 100 of them each counts as an
# error, as NOOPs do, and the 20th error ends the session (as smtpd_junk_command_limit and
# smtpd_hard_error_limit in Postfix, which refuses every one of them).
c(
    "empty-chunk-flood",
    "rcpt",
    (b"BDAT 0\r\n" * 130, 121),
    expect=" / ".join([OK] * 120 + ["421 4.7.0", "closed"]),
    closes=True,
)
TINY = 400
c(
    "many-tiny-chunks",
    "rcpt",
    (b"".join(b"BDAT 1\r\n%c" % (97 + i % 26) for i in range(TINY)) + b"BDAT 0 LAST\r\n", TINY + 1),
    expect=" / ".join([OK] * TINY + [QUEUED_OK]),
    stored=HEADERLESS + bytes(97 + i % 26 for i in range(TINY)),
)


# Where Postfix's reply class differs from mailwright's, by this project's choice (Postfix 3.7 with
# its defaults).
_LINE = (
    "RFC 5321 4.5.3.1.6: 998 octets and CRLF (docs/architecture.md, strictness); Postfix takes longer lines"
)
_AT_LIMIT = (
    "RFC 1870 4: the SIZE advertised is the largest message accepted, counted as the client sent it;"
    " Postfix counts its own Received header and envelope records against message_size_limit"
)
_EMPTY_CHUNK = (
    "RFC 3030 chunk-size = 1*DIGIT: an empty chunk is legal; Postfix refuses it ('Null BDAT request')"
)
DELIBERATE: dict[str, str] = {
    "data-nul-in-command": "a NUL in a command is refused (501 5.5.2); Postfix cuts the line at the NUL",
    "line-999": _LINE,
    "line-999-dot-stuffed": _LINE + " (the stuffing dot is not counted, by either)",
    "line-999-then-mail": _LINE,
    "size-at-limit": _AT_LIMIT,
    "bdat-at-limit": _AT_LIMIT,
    "bdat-0-chunks": _EMPTY_CHUNK,
    "empty-chunk-flood": _EMPTY_CHUNK + "; past 100 they count as errors here, and both close at 20 errors",
    "bdat-after-helo": "service extensions only after EHLO (RFC 5321 2.2.1); Postfix takes BDAT after HELO",
    "bdat-16-digits": "a chunk of a petabyte or more is no size a client sends: closed here; Postfix waits",
}


@dataclass
class Outcome:
    replies: list[Got]
    in_step: bool  # NOOP then QUIT got 250 then 221 and the end of the connection
    probe: str  # what the probe got, for the report

    def shown(self) -> str:
        runs: list[list[object]] = []
        for got in self.replies:
            one = got.shape()
            if runs and runs[-1][0] == one:
                runs[-1][1] = int(str(runs[-1][1])) + 1
            else:
                runs.append([one, 1])
        got = " / ".join(f"{one} x{n}" if n != 1 else str(one) for one, n in runs)
        return got + ("" if self.in_step else f" [out of step: {self.probe}]")


class Wire(differential.Wire):
    """The shared line client, but a peer that let one reply time out is taken as silent from then
    on: the replies still due are "hung" at once. A case where Postfix waits for a chunk
    (bdat-16-digits) then costs one time-out, not one for each reply and probe still to come."""

    silent = False

    def reply(self) -> Got:
        if self.silent:
            return Got("hung")
        got = super().reply()
        self.silent = got.code == "hung"
        return got


def run_case(port: int, case: Case) -> Outcome:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        wire = Wire(sock, timeout=TIMEOUT)
        assert wire.reply().code == "220"
        for line, cls in SETUPS[case.setup]:
            got = wire.command(line)
            assert got.code.startswith(cls), f"setup {line!r} of {case.id}: {got}"
        replies: list[Got] = []
        for octets, count in case.steps:
            try:
                wire.send(octets)
            except OSError:
                pass  # closed: the replies say so
            for _ in range(count):
                replies.append(wire.reply())
        if case.closes:
            replies.append(wire.reply())
            return Outcome(replies, True, "")
        probe = []
        try:
            probe.append(wire.command(b"NOOP"))
            probe.append(wire.command(b"QUIT"))
            probe.append(wire.reply())
        except OSError as exc:
            probe.append(Got(type(exc).__name__, None, (str(exc),)))
        in_step = [p.code for p in probe] == ["250", "221", "closed"]
        return Outcome(replies, in_step, " / ".join(f"{p.code} {p.first}" for p in probe))


def without_trace(stored: bytes) -> bytes:
    """The message as stored, without the Received field added in front of it."""
    assert stored.startswith(b"Received: "), stored[:80]
    lines = stored.splitlines(keepends=True)
    i = 1
    while i < len(lines) and lines[i][:1] in (b"\t", b" "):
        i += 1
    return b"".join(lines[i:])


mw = mailwright_server("data", limits=f"max_message_size = {SIZE_LIMIT}")


def test_the_table_is_well_formed() -> None:
    assert_table_ids([case.id for case in CASES], DELIBERATE, 80)
    assert all(case.setup in SETUPS for case in CASES)
    for case in CASES:
        assert len(case.expect) == sum(n for _, n in case.steps) + case.closes, case.id


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_mailwright_answers_and_stores_as_the_rfcs_ask(mw: spawn.SpawnedServer, case: Case) -> None:
    out = run_case(mw.ports["mx"], case)
    got = tuple(r.shape() for r in out.replies)
    assert got == case.expect, f"{case.id}: {out.shown()} ({out.replies[-1].first})"
    text = [r.first for r in out.replies if r.code != "closed"][-1]
    assert case.says.lower() in text.lower(), f"{text!r} does not say {case.says!r}"
    assert out.in_step, f"{case.id}: the session fell out of step: {out.probe}"
    queued = [m.group(1) for r in out.replies if (m := QUEUED.search(r.first))]
    assert bool(queued) == (case.stored is not None), f"{case.id}: queued {queued}"
    for queue_id in queued:
        assert without_trace(stored_body(mw.queue_db.parent, queue_id)) == case.stored


def test_postfix_agrees_on_the_reply_class_but_where_this_project_chose_otherwise(
    mw: spawn.SpawnedServer,
) -> None:
    with private_postfix({"message_size_limit": str(SIZE_LIMIT)}) as pf:
        from bench.postfix_instance import POSTFIX

        postcat = str(Path(POSTFIX).with_name("postcat"))
        disagreements = Disagreements(DELIBERATE)
        table: list[str] = []
        stored_apart: list[str] = []
        compared = 0
        for case in CASES:
            ours = run_case(mw.ports["mx"], case)
            theirs = run_case(pf.port, case)
            classes = [reply_class(r.code) for r in ours.replies], ours.in_step
            differs = classes != ([reply_class(r.code) for r in theirs.replies], theirs.in_step)
            row = f"{case.id}: mailwright {ours.shown()} | Postfix {theirs.shown()}"
            table.append(row + (f"  ({theirs.replies[-1].first})" if differs else ""))
            if not differs and case.stored is not None and b"\r\n\r\n" in case.stored:
                # What Postfix stored, through postcat: its body must be the table's too.
                want = case.stored.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
                for queue_id in [m.group(1) for r in theirs.replies if (m := QUEUED.search(r.first))]:
                    cat = subprocess.run(
                        [postcat, "-c", str(pf.config_dir), "-bh", "-q", queue_id],
                        capture_output=True,
                        timeout=30,
                        check=True,
                    ).stdout
                    compared += 1
                    body = cat.split(b"\n\n", 1)[1]
                    if body != want:
                        stored_apart.append(
                            f"{case.id}: Postfix stored {body[:200]!r}, the table {want[:200]!r}"
                        )
            disagreements.note(case.id, differs, row)
        if os.environ.get("MAILWRIGHT_DIFF_TABLE"):
            Path(os.environ["MAILWRIGHT_DIFF_TABLE"]).write_text("\n".join(table) + "\n")
        disagreements.check()
        assert not stored_apart, "Postfix stored another body:\n" + "\n".join(stored_apart)
        assert compared >= 35, compared  # every accepted case with a header section
