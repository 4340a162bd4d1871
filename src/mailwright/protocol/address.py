"""Mailbox and path syntax: parse the address part of MAIL FROM / RCPT TO, and bare mailboxes.

`parse_path` reads a Reverse-path or Forward-path (RFC 5321 section 4.1.2) at the start of the
text following "MAIL FROM:" / "RCPT TO:" and hands back the parameter string that follows it.
`parse_mailbox` reads a bare "local@domain" for configuration and the command line.
`is_address_literal` says whether a text is an address literal (for the Received header's HELO
name, which is kept whole when it is one).

Grammar followed (RFC 5321 sections 4.1.2 and 4.1.3, extended by RFC 6531 section 3.3 when
`utf8` is true):
- Path = "<" [ A-d-l ":" ] Mailbox ">"; "<>" is the null reverse-path.  A source route (A-d-l)
  is checked for syntax and then ignored, as RFC 5321 section 4.1.2 and appendix C ask.
- Local-part = Dot-string / Quoted-string; with SMTPUTF8 both may carry non-ASCII characters.
- Domain = LDH labels, or (SMTPUTF8) U-labels validated by conversion to A-labels with `idna`
  (IDNA2008; of UTS 46 mapping only case folding is let through, so full-width or decomposed
  forms of a U-label are refused), the last label not all digits (an IP address is written as
  a literal); address literals "[IPv4]" and "[IPv6:...]".
- Control characters are refused in the path; the parameter text after it is handed back as
  it is, for `params` to judge.
- Limits of section 4.5.3.1: local-part 64 octets, label 63, domain 255, path 256 octets, all
  counted in UTF-8 on the text as written (for the local part that includes quotes and escapes).

Invariants:
- For any input string these functions return or raise `AddressError`; nothing else escapes.
- `Address.local` is the local part as the mailbox means it (quotes removed, quoted-pairs
  resolved), kept faithfully: "%", "!" and a quoted "@" survive, because relay policy looks
  for them.  `Address.domain` is the domain exactly as written.
- `str(address)` is canonical: the local part is quoted only when it cannot be a Dot-string,
  and parsing "<" + str(address) + ">" gives back an equal `Address`.

Not responsible for: "<Postmaster>" without a domain (RFC 5321 section 4.1.1.3; the state
machine handles that special form before calling here), the MAIL/RCPT parameters (see
`params`), relay or ownership policy, DNS, or case-folding of local parts.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

import idna

MAX_LOCAL_OCTETS: Final = 64
MAX_LABEL_OCTETS: Final = 63
MAX_DOMAIN_OCTETS: Final = 255
MAX_PATH_OCTETS: Final = 256

# RFC 5321 atext (via RFC 5322 section 3.2.3): letters, digits and these specials.
_ATEXT_ASCII: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
# The same classes as one table indexed by code point (< 128), for the compiled loops of the
# common case: a bytes index is a C array read where a set lookup hashes a one-character str.
_ATEXT: Final = 1
_LET_DIG: Final = 2
_CLASS: Final = bytes(
    (_ATEXT if chr(c) in _ATEXT_ASCII else 0) | (_LET_DIG if chr(c).isalnum() else 0) for c in range(128)
)
_LDH_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_IPV4: Final = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z")
_IPV6_CHARS: Final = re.compile(r"[0-9A-Fa-f:.]+\Z")
# Unicode categories never acceptable in an address: controls, surrogates, unassigned and
# private-use code points, and line/paragraph separators (which split reply lines).
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cs", "Cn", "Co", "Zl", "Zp"})


class AddressError(ValueError):
    """An address that does not follow the syntax; `reason` says why in a few words.

    `needs_smtputf8` is true when the only complaint is non-ASCII text in a session without
    SMTPUTF8, so the caller can answer 553 5.6.7 instead of a syntax error.
    """

    def __init__(self, reason: str, *, needs_smtputf8: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.needs_smtputf8 = needs_smtputf8


@dataclass(frozen=True, slots=True, init=False)
class Address:
    """A mailbox: decoded local part and domain (or bracketed address literal) as written."""

    local: str
    domain: str

    # init=False and this __init__: a generated one stays interpreted under mypyc (14x slower).
    def __init__(self, local: str, domain: str) -> None:
        object.__setattr__(self, "local", local)
        object.__setattr__(self, "domain", domain)

    def __str__(self) -> str:
        return f"{_quote_local(self.local)}@{self.domain}"

    @property
    def is_utf8(self) -> bool:
        return not (self.local.isascii() and self.domain.isascii())

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def ascii_domain(self) -> str:
        """The domain in A-label form, lowercased; address literals are returned unchanged."""
        if self.is_literal:
            return self.domain
        if self.domain.isascii():
            return self.domain.lower()
        return ".".join(
            label.lower() if label.isascii() else _to_alabel(label) for label in self.domain.split(".")
        )


def parse_path(text: str, *, utf8: bool, allow_null: bool) -> tuple[Address | None, str]:
    """Parse "<...>" at the start of `text`; return (address or None for "<>", parameter text)."""
    if text.isascii() and text.isprintable():
        local_start, at, gt, end = _simple_path(text)
        if (
            end >= 0
            and at - local_start <= MAX_LOCAL_OCTETS
            and gt - at - 1 <= MAX_DOMAIN_OCTETS
            and gt - local_start + 2 <= MAX_PATH_OCTETS
        ):
            return Address(text[local_start:at], text[at + 1 : gt]), text[end:]
    return _parse_path_full(text, utf8=utf8, allow_null=allow_null)


_NO_MATCH: Final = (-1, -1, -1, -1)


def _simple_path(text: str) -> tuple[int, int, int, int]:
    r"""The common case, a plain dot-atom at an LDH domain, in one pass over ASCII text: the
    positions of the local part, its "@", the ">" and the parameters, or all -1 when the text
    needs the full parser (quotes, literals, routes, UTF-8, errors).

    The same as matching ` *<(Atom(\.Atom)*)@(Label(\.Label)*)>( +|$)` where the last Label is not
    all digits (a property test holds it to that regex); written out because a regex match and
    its span calls are generic calls that cost several times this loop.
    """
    n = len(text)
    i = 0
    while i < n and text[i] == " ":
        i += 1
    if i >= n or text[i] != "<":
        return _NO_MATCH
    i += 1
    local_start = i
    after_dot = True  # a dot here would be a leading or doubled one
    while i < n:
        c = ord(text[i])
        if c == 46:  # "."
            if after_dot:
                return _NO_MATCH
            after_dot = True
        elif c < 128 and _CLASS[c] & _ATEXT:
            after_dot = False
        else:
            break
        i += 1
    if after_dot or i >= n or text[i] != "@":
        return _NO_MATCH
    at = i
    i += 1
    label = 0  # length of the label so far
    hyphen = False  # its last character was "-"
    while i < n:
        c = ord(text[i])
        if c == 46:
            if label == 0 or hyphen:
                return _NO_MATCH
            label = 0
        elif c == 45:  # "-"
            if label == 0:
                return _NO_MATCH
            label += 1
            hyphen = True
        elif c < 128 and _CLASS[c] & _LET_DIG:
            label += 1
            hyphen = False
        else:
            break
        if label > MAX_LABEL_OCTETS:
            return _NO_MATCH
        i += 1
    if label == 0 or hyphen or i >= n or text[i] != ">":
        return _NO_MATCH
    # A numeric last label ("1.2.3.4", "foo.123") is no domain name: the full parser says why.
    if 48 <= ord(text[i - 1]) <= 57 and text[i - label : i].isdigit():
        return _NO_MATCH
    gt = i
    i += 1
    if i < n:
        if text[i] != " ":
            return _NO_MATCH
        while i < n and text[i] == " ":
            i += 1
    return local_start, at, gt, i


def _parse_path_full(text: str, *, utf8: bool, allow_null: bool) -> tuple[Address | None, str]:
    start = len(text) - len(text.lstrip(" "))
    # The path's characters only: one in the parameters after it is theirs to refuse (501 5.5.4
    # from `params`), not a fault of the address.
    _check_characters(text[start : _path_end(text, start)])
    if start == len(text):
        raise AddressError("missing address")
    if text[start] != "<":
        raise AddressError("address must be enclosed in angle brackets")
    pos = start + 1
    if text.startswith(">", pos):
        if not allow_null:
            raise AddressError("null path <> is not allowed here")
        return None, _after_path(text, pos + 1)
    if text.startswith("@", pos):
        pos = _skip_source_route(text, pos, utf8)
    local, pos = _parse_local(text, pos, utf8)
    if not text.startswith("@", pos):
        raise AddressError(
            "missing @ in address" if pos >= len(text) or text[pos] == ">" else _bad_char(text, pos)
        )
    domain_end = _domain_end(text, pos + 1, ">")
    domain = text[pos + 1 : domain_end]
    _check_domain_or_literal(domain, utf8)
    if domain_end >= len(text) or text[domain_end] != ">":
        raise AddressError("missing closing angle bracket")
    if len(text[start : domain_end + 1].encode("utf-8")) > MAX_PATH_OCTETS:
        raise AddressError(f"path longer than {MAX_PATH_OCTETS} octets")
    return Address(local, domain), _after_path(text, domain_end + 1)


def parse_mailbox(text: str, *, utf8: bool = True) -> Address:
    """Parse a bare mailbox "local@domain" (surrounding spaces are ignored)."""
    _check_characters(text)
    text = text.strip(" ")
    if not text:
        raise AddressError("missing address")
    local, pos = _parse_local(text, 0, utf8)
    if not text.startswith("@", pos):
        raise AddressError("missing @ in address" if pos >= len(text) else _bad_char(text, pos))
    domain = text[pos + 1 :]
    _check_domain_or_literal(domain, utf8)
    # A mailbox must fit in a path once the angle brackets are added.
    if len(text.encode("utf-8")) + 2 > MAX_PATH_OCTETS:
        raise AddressError(f"address longer than {MAX_PATH_OCTETS - 2} octets")
    return Address(local, domain)


# ---------------------------------------------------------------------------------------------
# Pieces of the grammar


def _check_characters(text: str) -> None:
    for ch in text:
        if ch.isascii():
            if ch < " " or ch == "\x7f":
                raise AddressError(f"control character {ch!r} in address")
        elif unicodedata.category(ch) in _BAD_CATEGORIES:
            raise AddressError(f"character U+{ord(ch):04X} is not allowed in an address")


def _non_ascii() -> AddressError:
    return AddressError("non-ASCII address requires SMTPUTF8", needs_smtputf8=True)


def _bad_char(text: str, pos: int) -> str:
    return f"unexpected character {text[pos]!r} in address"


def _path_end(text: str, start: int) -> int:
    """Where the path starting at `start` ends: after the first ">" outside a quoted string
    (quoted-pairs skipped, as `_parse_quoted` reads them), else at the end of the text. For a
    path that parses this is exactly the text the parser reads."""
    quoted = False
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and quoted:
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i + 1
        i += 1
    return n


def _after_path(text: str, pos: int) -> str:
    rest = text[pos:]
    if rest and rest[0] != " ":
        raise AddressError("unexpected text after closing angle bracket")
    return rest.lstrip(" ")


def _is_atext(ch: str) -> bool:
    if ch.isascii():
        return ch in _ATEXT_ASCII
    # RFC 6531 adds UTF8-non-ascii to atext; spaces of any script would make it ambiguous.
    return unicodedata.category(ch) not in _BAD_CATEGORIES and not ch.isspace()


def _is_dot_string(local: str) -> bool:
    if not local or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    if local.isascii():
        for i in range(len(local)):
            c = ord(local[i])
            if c != 46 and not _CLASS[c] & _ATEXT:
                return False
        return True
    return all(ch == "." or _is_atext(ch) for ch in local)


def _quote_local(local: str) -> str:
    if _is_dot_string(local):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _skip_source_route(text: str, pos: int, utf8: bool) -> int:
    """Check the A-d-l "@one,@two:" starting at `pos` (an "@") and return the position after ":"."""
    while True:
        pos += 1  # past "@"
        end = pos
        while end < len(text) and text[end] not in ",:>":
            end += 1
        if end >= len(text) or text[end] == ">":
            # "<@example.com>" is far more often a local part left out than a route left open.
            raise AddressError("empty local part, or unterminated source route")
        _check_domain(text[pos:end], utf8)
        if text[end] == ":":
            return end + 1
        pos = end + 1
        if not text.startswith("@", pos):
            raise AddressError("malformed source route")


def _parse_local(text: str, pos: int, utf8: bool) -> tuple[str, int]:
    """Read a Dot-string or Quoted-string at `pos`; return (decoded local part, end position)."""
    if text.startswith('"', pos):
        local, end = _parse_quoted(text, pos, utf8)
    else:
        end = pos
        while end < len(text) and (text[end] == "." or _is_atext(text[end])):
            end += 1
        local = text[pos:end]
        if not local:
            # "< >", "<<a@b>>": name the character, which is what the sender has to fix.
            at_end = end >= len(text) or text[end] in "@>"
            raise AddressError("empty local part" if at_end else _bad_char(text, end))
        if local[0] == "." or local[-1] == "." or ".." in local:
            raise AddressError("misplaced dot in local part")
        if not utf8 and not local.isascii():
            raise _non_ascii()
    if len(text[pos:end].encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise AddressError(f"local part longer than {MAX_LOCAL_OCTETS} octets")
    return local, end


def _parse_quoted(text: str, pos: int, utf8: bool) -> tuple[str, int]:
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            # quoted-pairSMTP is a backslash and one printable ASCII character (RFC 5321 4.1.2).
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if not nxt.isascii():
                raise _non_ascii() if not utf8 else AddressError("invalid quoted-pair in local part")
            out.append(nxt)
            i += 2
            continue
        if not utf8 and not ch.isascii():
            raise _non_ascii()
        out.append(ch)
        i += 1
    raise AddressError("unbalanced quotes in local part")


def _domain_end(text: str, pos: int, stop: str) -> int:
    """Find where the domain starting at `pos` ends: at `stop`, or after a bracketed literal."""
    if text.startswith("[", pos):
        close = text.find("]", pos)
        return len(text) if close < 0 else close + 1
    end = text.find(stop, pos)
    return len(text) if end < 0 else end


def _check_domain_or_literal(domain: str, utf8: bool) -> None:
    if domain.startswith("["):
        _check_literal(domain)
    else:
        _check_domain(domain, utf8)


def comparable_domain(domain: str) -> str:
    """`domain` (from the configuration or the user store) in the form `Address.ascii_domain`
    gives, for comparing domains: A-labels (IDNA2008 with UTS 46 mapping), lower case, no
    trailing dot. Python's built-in "idna" codec is IDNA 2003, which makes "faß.de" of
    "fass.de", another domain. Text that is no domain name comes back lowercased, as written."""
    d = domain.strip().rstrip(".")
    if d.startswith("["):
        return d.lower()
    try:
        return Address("postmaster", d).ascii_domain
    except AddressError:
        return d.lower()


def is_address_literal(text: str) -> bool:
    """Whether `text` is an RFC 5321 address literal this module accepts ("[IPv4]", "[IPv6:...]")."""
    if not text.startswith("["):
        return False
    try:
        _check_literal(text)
    except AddressError:
        return False
    return True


def _check_literal(literal: str) -> None:
    if not literal.endswith("]") or len(literal) < 3:
        raise AddressError("unterminated address literal")
    body = literal[1:-1]
    if "[" in body or "]" in body:
        raise AddressError("malformed address literal")
    m = _IPV4.match(body)
    if m is not None:
        if any(int(part) > 255 for part in m.groups()):
            raise AddressError("IPv4 address literal out of range")
        return
    tag, colon, addr = body.partition(":")
    if not colon:
        raise AddressError("malformed address literal")
    if tag.lower() != "ipv6":
        raise AddressError("general address literals are not supported")
    _check_ipv6(addr)


def _check_ipv6(addr: str) -> None:
    if not _IPV6_CHARS.match(addr):
        raise AddressError("malformed IPv6 address literal")
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        raise AddressError("malformed IPv6 address literal") from None
    if "::" in addr:
        # RFC 5321 IPv6-comp: "::" stands for at least two groups, so at most six (four with
        # an embedded IPv4 address) explicit groups may accompany it; ipaddress is laxer.
        groups = [g for g in re.split(r":+", addr) if g]
        explicit = len(groups) + (1 if "." in addr else 0)
        if explicit > 6:
            raise AddressError("malformed IPv6 address literal")


def _check_domain(domain: str, utf8: bool) -> None:
    if not domain:
        raise AddressError("empty domain")
    if not utf8 and not domain.isascii():
        raise _non_ascii()
    if len(domain.encode("utf-8")) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"domain longer than {MAX_DOMAIN_OCTETS} octets")
    if domain.endswith("."):
        raise AddressError("trailing dot in domain")
    ascii_len = -1
    for label in domain.split("."):
        if not label:
            raise AddressError("empty label in domain")
        if label.isascii():
            if len(label) > MAX_LABEL_OCTETS:
                raise AddressError(f"domain label longer than {MAX_LABEL_OCTETS} octets")
            if not _LDH_LABEL.match(label):
                raise AddressError(f"invalid domain label {label[:MAX_LABEL_OCTETS]!r}")
            ascii_len += len(label) + 1
        else:
            ascii_len += len(_to_alabel(label)) + 1
    last = domain[domain.rfind(".") + 1 :]
    if last.isascii() and last.isdigit():
        # No top-level domain is all digits (RFC 3696 2, RFC 1123 2.1): "user@192.0.2.1" is an
        # IP address without the brackets of an address literal (RFC 5321 4.1.3); Postfix refuses it too.
        raise AddressError(
            f"domain ends in the numeric label {last[:MAX_LABEL_OCTETS]!r}; "
            "an IP address is written as an address literal, e.g. [192.0.2.1]"
        )
    if ascii_len > MAX_DOMAIN_OCTETS:
        raise AddressError(f"domain longer than {MAX_DOMAIN_OCTETS} octets in A-label form")


def _to_alabel(label: str) -> str:
    """Convert one non-ASCII label to its A-label, or raise AddressError if it is no U-label."""
    try:
        mapped = idna.uts46_remap(label, std3_rules=True, transitional=False)
        alabel = idna.encode(mapped).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise AddressError(f"invalid internationalized domain label: {exc}") from None
    # RFC 6531 3.3 asks for U-labels. UTS 46 mapping does more than fold case: it turns
    # compatibility forms into their letters (full-width "ｂüｃｈｅｒ" into "bücher", and so into
    # its A-label), decomposed text into NFC, one label into several (U+3002) or into plain
    # ASCII. A label that is a U-label only after such a mapping would be our domain here and
    # another text everywhere else (the stored envelope, a log, the next hop's comparison):
    # only case, per character, may differ from the mapped form.
    if mapped != "".join([ch.lower() for ch in label]) or "." in alabel or not alabel.startswith("xn--"):
        raise AddressError("invalid internationalized domain label: not a U-label (RFC 5890 2.3.2.1)")
    if len(alabel) > MAX_LABEL_OCTETS:
        raise AddressError(f"domain label longer than {MAX_LABEL_OCTETS} octets")
    return alabel
