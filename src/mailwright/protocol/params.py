"""MAIL FROM and RCPT TO parameters: parse them from the command tail, render them back.

The parameter string is what `address.parse_path` leaves after the path:
esmtp-param *(SP esmtp-param), esmtp-param = esmtp-keyword ["=" esmtp-value]
(RFC 5321 section 4.1.2).  Keywords are case-insensitive; one or more spaces separate them.

Parameters understood, each only when its EHLO keyword is in `enabled`:
- MAIL: SIZE (RFC 1870), BODY=7BIT|8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531 section 3.4),
  RET and ENVID (RFC 3461 sections 4.3, 4.4), AUTH (RFC 4954 section 5), REQUIRETLS (RFC 8689).
- RCPT: NOTIFY and ORCPT (RFC 3461 sections 4.1, 4.2); ORCPT of type "utf-8" may use the
  \\x{HEX} escapes of RFC 6533 section 3, and raw UTF-8 when SMTPUTF8 is enabled; when it is,
  any other type's xtext may decode to UTF-8 too (Postfix sends "rfc822;" so).

Invariants:
- For any input string the parsers return a value or raise `SMTPError`; nothing else escapes.
- Unknown parameters, parameters of extensions not advertised, and BODY values we do not
  support (BINARYMIME is never advertised) raise 555 5.5.4 naming the parameter; malformed
  values, duplicates and stray characters raise 501 5.5.4 with a specific reason.
- `parse_mail_params(mail_params_to_text(p), all) == p` for every valid `p`; likewise for RCPT.
  xtext values are stored decoded.

Not responsible for: judging the values (a SIZE over the limit, an AUTH= the session may
not assert, REQUIRETLS without TLS: the state machine and policy decide), or the path itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from mailwright.protocol.reply import Reply, SMTPError

MAX_ENVID: Final = 100  # RFC 3461 section 4.4, xtext-encoded length
MAX_ORCPT: Final = 500  # RFC 3461 section 4.2, xtext-encoded length
NOTIFY_KEYWORDS: Final = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_NOTIFY_ORDER: Final = ("SUCCESS", "FAILURE", "DELAY")

_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_DIGITS: Final = re.compile(r"[0-9]{1,20}\Z")
_ADDR_TYPE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+\Z")
_HEX: Final = "0123456789ABCDEFabcdef"


@dataclass(frozen=True, slots=True, init=False)
class MailParams:
    size: int | None
    body: str | None
    smtputf8: bool
    ret: str | None
    envid: str | None
    auth: str | None
    requiretls: bool

    # init=False and this __init__: a generated one stays interpreted under mypyc (14x slower).
    def __init__(
        self,
        size: int | None = None,
        body: str | None = None,
        smtputf8: bool = False,
        ret: str | None = None,
        envid: str | None = None,
        auth: str | None = None,
        requiretls: bool = False,
    ) -> None:
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "envid", envid)
        object.__setattr__(self, "auth", auth)
        object.__setattr__(self, "requiretls", requiretls)


@dataclass(frozen=True, slots=True, init=False)
class RcptParams:
    notify: frozenset[str] | None
    orcpt: tuple[str, str] | None

    # init=False and this __init__: a generated one stays interpreted under mypyc (14x slower).
    def __init__(self, notify: frozenset[str] | None = None, orcpt: tuple[str, str] | None = None) -> None:
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "orcpt", orcpt)


def _syntax(reason: str) -> SMTPError:
    return SMTPError(Reply(501, "5.5.4", reason))


def _unsupported(what: str) -> SMTPError:
    return SMTPError(Reply(555, "5.5.4", f"Unsupported parameter {what}"))


# ---------------------------------------------------------------------------------------------
# xtext (RFC 3461 section 4) and the RFC 6533 utf-8 address encodings


def xtext_encode(s: str) -> str:
    """Encode text as xtext; non-ASCII characters become their UTF-8 octets as "+HH"."""
    out: list[str] = []
    for byte in s.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):  # "+" and "=" must be encoded
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def xtext_decode(s: str) -> str:
    """Decode xtext; raise SMTPError 501 if it is malformed or not UTF-8 once decoded."""
    data = bytearray()
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "+":
            pair = s[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise _syntax("Malformed xtext: '+' must be followed by two hex digits")
            data.append(int(pair, 16))
            i += 3
            continue
        if not ("!" <= ch <= "~") or ch == "=":
            raise _syntax("Malformed xtext: invalid character")
        data.append(ord(ch))
        i += 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _syntax("Malformed xtext: decoded value is not UTF-8") from None


def _utf8_addr_encode(s: str) -> str:
    """Encode as utf-8-addr-xtext (RFC 6533 section 3): \\x{HEX} for anything not a QCHAR."""
    return "".join(ch if "!" <= ch <= "~" and ch not in "+=\\" else f"\\x{{{ord(ch):X}}}" for ch in s)


def _utf8_addr_decode(s: str, *, raw_utf8: bool) -> str:
    """Decode utf-8-addr-xtext, or utf-8-addr-unitext when `raw_utf8` (RFC 6533 section 3).

    Plain xtext "+HH" is also accepted: "+" cannot appear unencoded, so it is unambiguous.
    """
    out: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            m = re.match(r"\\x\{([0-9A-Fa-f]{1,6})\}", s[i:])
            if m is None:
                raise _syntax("Malformed ORCPT: bad \\x{HEX} escape")
            code = int(m.group(1), 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF or code < 0x20 or 0x7F <= code <= 0x9F:
                raise _syntax("Malformed ORCPT: escape names a control character or no Unicode scalar value")
            out.append(chr(code))
            i += m.end()
            continue
        if ch == "+":
            out.append(xtext_decode(s[i : i + 3]))
            i += 3
            continue
        if ("!" <= ch <= "~" and ch != "=") or (raw_utf8 and not ch.isascii()):
            out.append(ch)
            i += 1
            continue
        raise _syntax("Malformed ORCPT: invalid character")
    return "".join(out)


def _printable_ascii(value: str, what: str) -> str:
    # RFC 3461 sections 4.2 and 4.4: the decoded value must be printable US-ASCII.
    if not all(" " <= ch <= "~" for ch in value):
        raise _syntax(f"{what} must be printable US-ASCII")
    return value


# ---------------------------------------------------------------------------------------------
# Splitting


def _param_char(ch: str) -> bool:
    # esmtp-keyword/esmtp-value are printable ASCII (RFC 5321); RFC 6531 adds UTF-8, but never
    # control characters or surrogates smuggled in by a lax decoder.
    if ch.isascii():
        return "!" <= ch <= "~"
    return unicodedata.category(ch) not in ("Cc", "Cs")


def _split(text: str) -> list[tuple[str, str | None]]:
    """Split the parameter string into (uppercased keyword, value or None) pairs."""
    result: list[tuple[str, str | None]] = []
    for token in text.split(" "):
        if not token:
            continue
        if not all(map(_param_char, token)):
            raise _syntax("Invalid character in parameters")
        keyword, eq, value = token.partition("=")
        if not keyword:
            raise _syntax("Parameter with an empty keyword")
        if not _KEYWORD.match(keyword):
            raise _syntax("Malformed parameter keyword")
        keyword = keyword.upper()
        if eq and not value:
            raise _syntax(f"Empty value for parameter {keyword[:40]}")
        if "=" in value:
            raise _syntax(f"'=' in value of parameter {keyword[:40]}")
        result.append((keyword, value if eq else None))
    return result


Handler = Callable[[dict[str, Any], str | None, frozenset[str]], None]


def _parse(text: str, enabled: frozenset[str], table: dict[str, tuple[str, Handler]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    seen: set[str] = set()
    for keyword, value in _split(text):
        entry = table.get(keyword)
        if entry is None or entry[0] not in enabled:
            raise _unsupported(keyword[:40])
        if keyword in seen:
            raise _syntax(f"Duplicate parameter {keyword}")
        seen.add(keyword)
        entry[1](fields, value, enabled)
    return fields


def _need_value(keyword: str, value: str | None) -> str:
    if value is None:
        raise _syntax(f"Parameter {keyword} needs a value")
    if not value.isascii():
        raise _syntax(f"Non-ASCII value for parameter {keyword}")
    return value


def _no_value(keyword: str, value: str | None) -> None:
    if value is not None:
        raise _syntax(f"Parameter {keyword} takes no value")


# ---------------------------------------------------------------------------------------------
# MAIL FROM


def _size(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    v = _need_value("SIZE", value)
    if not _DIGITS.match(v):
        raise _syntax("SIZE must be a decimal number of at most 20 digits")
    fields["size"] = int(v)


def _body(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    v = _need_value("BODY", value).upper()
    if v not in ("7BIT", "8BITMIME"):
        raise _unsupported(f"BODY={v[:20]}")
    fields["body"] = v


def _smtputf8(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    _no_value("SMTPUTF8", value)
    fields["smtputf8"] = True


def _ret(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    v = _need_value("RET", value).upper()
    if v not in ("FULL", "HDRS"):
        raise _syntax("RET must be FULL or HDRS")
    fields["ret"] = v


def _envid(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    v = _need_value("ENVID", value)
    if len(v) > MAX_ENVID:
        raise _syntax(f"ENVID longer than {MAX_ENVID} characters")
    fields["envid"] = _printable_ascii(xtext_decode(v), "ENVID")


def _auth(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    fields["auth"] = xtext_decode(_need_value("AUTH", value))


def _requiretls(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    _no_value("REQUIRETLS", value)
    fields["requiretls"] = True


_MAIL_TABLE: dict[str, tuple[str, Handler]] = {
    "SIZE": ("SIZE", _size),
    "BODY": ("8BITMIME", _body),
    "SMTPUTF8": ("SMTPUTF8", _smtputf8),
    "RET": ("DSN", _ret),
    "ENVID": ("DSN", _envid),
    "AUTH": ("AUTH", _auth),
    "REQUIRETLS": ("REQUIRETLS", _requiretls),
}


def parse_mail_params(text: str, enabled: frozenset[str]) -> MailParams:
    """Parse the parameters of MAIL FROM; `enabled` holds the EHLO keywords advertised."""
    return MailParams(**_parse(text, enabled, _MAIL_TABLE))


def mail_params_to_text(p: MailParams) -> str:
    """Render MAIL FROM parameters, e.g. "SIZE=123 BODY=8BITMIME" ("" when there are none)."""
    parts: list[str] = []
    if p.size is not None:
        parts.append(f"SIZE={p.size}")
    if p.body is not None:
        parts.append(f"BODY={p.body}")
    if p.smtputf8:
        parts.append("SMTPUTF8")
    if p.ret is not None:
        parts.append(f"RET={p.ret}")
    if p.envid is not None:
        parts.append(f"ENVID={xtext_encode(p.envid)}")
    if p.auth is not None:
        parts.append(f"AUTH={xtext_encode(p.auth)}")
    if p.requiretls:
        parts.append("REQUIRETLS")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# RCPT TO


def _notify(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    items = _need_value("NOTIFY", value).upper().split(",")
    if items == ["NEVER"]:
        fields["notify"] = frozenset(items)
        return
    if "NEVER" in items:
        raise _syntax("NOTIFY=NEVER cannot be combined with other values")
    if not all(item in NOTIFY_KEYWORDS for item in items):
        raise _syntax("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    if len(set(items)) != len(items):
        raise _syntax("Repeated value in NOTIFY")
    fields["notify"] = frozenset(items)


def _orcpt(fields: dict[str, Any], value: str | None, enabled: frozenset[str]) -> None:
    if value is None:
        raise _syntax("Parameter ORCPT needs a value")
    if len(value) > MAX_ORCPT:
        raise _syntax(f"ORCPT longer than {MAX_ORCPT} characters")
    addr_type, semi, encoded = value.partition(";")
    if not semi or not addr_type or not encoded:
        raise _syntax("ORCPT must be addr-type;address")
    if not _ADDR_TYPE.match(addr_type):
        raise _syntax("Malformed ORCPT address type")
    addr_type = addr_type.upper()
    if addr_type == "UTF-8":
        address = _utf8_addr_decode(encoded, raw_utf8="SMTPUTF8" in enabled)
        # Printable, as RFC 3461 4.2 asks of every ORCPT: "+0D+0A" decoded to a line break that
        # a bounce's Original-Recipient: field would carry (found by fuzzing).
        if not address.isprintable():
            raise _syntax("Malformed ORCPT: control or separator character in the address")
        # We pass ORCPT on as utf-8-addr-xtext, which spells each non-ASCII character and each
        # "+" in 5 or more characters: what we accept must still fit the limit once spelled so.
        if len(addr_type) + 1 + len(_utf8_addr_encode(address)) > MAX_ORCPT:
            raise _syntax(f"ORCPT longer than {MAX_ORCPT} characters once encoded as utf-8-addr-xtext")
    else:
        if not encoded.isascii():
            raise _syntax("Non-ASCII ORCPT address needs the utf-8 address type")
        address = xtext_decode(encoded)
        if address.isascii() or "SMTPUTF8" not in enabled:
            address = _printable_ascii(address, "ORCPT address")
        # Postfix passes a non-ASCII original recipient on as rfc822 xtext of its UTF-8 octets
        # ("rfc822;j+C3+B6s@x"), not as RFC 6533's utf-8 type; refused, every message it relayed
        # to such a recipient bounced (tests/interop/test_postfix_mta.py). Taken where SMTPUTF8
        # is offered, printable as any ORCPT must be; passed on the same way.
        elif not address.isprintable():
            raise _syntax("Malformed ORCPT: control or separator character in the address")
    if not address:
        raise _syntax("Empty ORCPT address")
    fields["orcpt"] = (addr_type, address)


_RCPT_TABLE: dict[str, tuple[str, Handler]] = {
    "NOTIFY": ("DSN", _notify),
    "ORCPT": ("DSN", _orcpt),
}


def parse_rcpt_params(text: str, enabled: frozenset[str]) -> RcptParams:
    """Parse the parameters of RCPT TO; `enabled` holds the EHLO keywords advertised."""
    return RcptParams(**_parse(text, enabled, _RCPT_TABLE))


def rcpt_params_to_text(p: RcptParams) -> str:
    """Render RCPT TO parameters, e.g. "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.org"."""
    parts: list[str] = []
    if p.notify is not None:
        order = ("NEVER", *_NOTIFY_ORDER)
        parts.append("NOTIFY=" + ",".join(k for k in order if k in p.notify))
    if p.orcpt is not None:
        addr_type, address = p.orcpt
        encoded = _utf8_addr_encode(address) if addr_type.upper() == "UTF-8" else xtext_encode(address)
        parts.append(f"ORCPT={addr_type};{encoded}")
    return " ".join(parts)
