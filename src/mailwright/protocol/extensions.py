"""EHLO service extensions: parse a server's 250 EHLO reply, and format one.

An EHLO reply (RFC 5321 section 4.1.1.1, RFC 1869 section 4.3) is a multi-line 250 reply.
Its first line carries the server's domain and an optional greeting; every further line
is ``ehlo-keyword *(SP ehlo-param)``.  `parse_ehlo` turns that into an immutable
`Extensions` value; `format_ehlo` builds the reply a server sends.

Invariants:
- `Extensions.keywords` maps the upper-cased keyword to its parameter text ("" if none);
  the mapping is read-only, so an `Extensions` value can be shared and hashed.
- Parsing is tolerant of what the client cannot use: a line whose keyword does not fit the
  RFC 5321 grammar is ignored (an extension we cannot name is one we never use), and the
  first advertisement of a keyword wins.  The one exception is AUTH: the pre-RFC 4954
  form ``AUTH=PLAIN LOGIN`` (still sent by old servers, sometimes beside the standard
  form) is merged into the ``AUTH`` entry, so `has("AUTH")` and `auth_mechanisms` see
  every mechanism advertised either way.
- Formatting is strict: keywords must fit the grammar and no text may hold CR, LF or NUL;
  violations raise ValueError, because a server that emits them is broken.
- No enhanced status code is put on an EHLO reply: RFC 2034 section 3 says EHLO replies
  carry none, and some clients would read "2.0.0" as the server's domain.

Keywords we know by name (others are kept too): PIPELINING (RFC 2920), CHUNKING (RFC
3030), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), SIZE (RFC 1870), DSN (RFC 3461),
ENHANCEDSTATUSCODES (RFC 2034), STARTTLS (RFC 3207), AUTH (RFC 4954), REQUIRETLS (RFC 8689).

Not responsible for: deciding which extensions a server offers (server and policy do),
nor validating MAIL/RCPT parameters against them (params does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from mailwright.protocol.reply import Reply

__all__ = [
    "AUTH",
    "CHUNKING",
    "DSN",
    "EIGHTBITMIME",
    "ENHANCEDSTATUSCODES",
    "PIPELINING",
    "REQUIRETLS",
    "SIZE",
    "SMTPUTF8",
    "STARTTLS",
    "Extensions",
    "format_ehlo",
    "parse_ehlo",
]

PIPELINING = "PIPELINING"
CHUNKING = "CHUNKING"
EIGHTBITMIME = "8BITMIME"
SMTPUTF8 = "SMTPUTF8"
SIZE = "SIZE"
DSN = "DSN"
ENHANCEDSTATUSCODES = "ENHANCEDSTATUSCODES"
STARTTLS = "STARTTLS"
AUTH = "AUTH"
REQUIRETLS = "REQUIRETLS"

# RFC 5321 4.1.1.1: ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# ehlo-param = 1*(%d33-126); params are separated by single spaces on the wire, but we
# accept runs of whitespace when parsing.
_PARAM_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_OLD_AUTH = re.compile(r"AUTH=(\S*)(.*)", re.IGNORECASE)


def _merge_words(first: str, second: str) -> str:
    words: list[str] = []
    for w in (first + " " + second).split():
        if w.upper() not in (x.upper() for x in words):
            words.append(w)
    return " ".join(words)


@dataclass(frozen=True, slots=True)
class Extensions:
    """The service extensions a server advertised, keyed by upper-cased keyword."""

    keywords: Mapping[str, str]

    def __post_init__(self) -> None:
        normalized = {k.upper(): v for k, v in self.keywords.items()}
        object.__setattr__(self, "keywords", MappingProxyType(normalized))

    def __hash__(self) -> int:
        return hash(frozenset(self.keywords.items()))

    def has(self, kw: str) -> bool:
        return kw.upper() in self.keywords

    def param(self, kw: str) -> str | None:
        """The parameter text of `kw`, "" when it has none, None when not advertised."""
        return self.keywords.get(kw.upper())

    @property
    def size(self) -> int | None:
        """SIZE limit in octets; None if SIZE was not advertised; 0 means no fixed limit.

        A SIZE without a number, or with one that is not a decimal integer, is read as
        0: the server supports the SIZE parameter but declared no usable maximum
        (RFC 1870 section 4 makes the number optional).
        """
        value = self.keywords.get(SIZE)
        if value is None:
            return None
        head = value.split(" ", 1)[0]
        return int(head) if head.isascii() and head.isdigit() else 0

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        """Upper-cased SASL mechanism names from AUTH (and the old ``AUTH=`` form)."""
        return frozenset(m.upper() for m in self.keywords.get(AUTH, "").split())


def _parse_line(line: str) -> tuple[str, str] | None:
    text = line.strip()
    old = _OLD_AUTH.fullmatch(text)
    if old is not None:
        return AUTH, " ".join((old.group(1) + " " + old.group(2)).split())
    keyword, _, params = text.partition(" ")
    if _KEYWORD.fullmatch(keyword) is None:
        return None
    return keyword.upper(), " ".join(params.split())


def parse_ehlo(reply: Reply) -> tuple[str, Extensions]:
    """Split a 250 EHLO reply into (the server's domain from line 1, its extensions).

    Raises ValueError when the reply is not a 250: a failed EHLO advertises nothing.
    """
    if reply.code != 250:
        raise ValueError(f"an EHLO reply must be 250 to carry extensions, got {reply.code}")
    first, *rest = reply.lines
    domain = first.split(" ", 1)[0].strip()
    found: dict[str, str] = {}
    for line in rest:
        parsed = _parse_line(line)
        if parsed is None:
            continue
        keyword, params = parsed
        if keyword == AUTH and keyword in found:
            found[keyword] = _merge_words(found[keyword], params)
        elif keyword not in found:
            found[keyword] = params
    return domain, Extensions(found)


def format_ehlo(hostname: str, keywords: Sequence[tuple[str, str]], greeting: str = "") -> Reply:
    """Build the multi-line 250 EHLO reply: ``hostname [greeting]`` then one line per keyword."""
    if not hostname or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in hostname):
        raise ValueError(f"EHLO hostname {hostname!r} must be one non-empty token")
    if any(c in greeting for c in "\r\n\x00"):
        raise ValueError("EHLO greeting contains CR, LF or NUL")
    lines = [f"{hostname} {greeting}".rstrip(" ")]
    for keyword, params in keywords:
        if _KEYWORD.fullmatch(keyword) is None:
            raise ValueError(f"EHLO keyword {keyword!r} does not fit RFC 5321 ehlo-keyword")
        if params and _PARAM_TEXT.fullmatch(params) is None:
            raise ValueError(f"EHLO parameters {params!r} for {keyword} are not printable ASCII words")
        lines.append(f"{keyword.upper()} {params}" if params else keyword.upper())
    return Reply(250, None, tuple(lines))
