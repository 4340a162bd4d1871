"""Tests for mailwright.protocol.address: RFC 5321 / RFC 6531 path and mailbox syntax."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailwright.protocol import address
from mailwright.protocol.address import Address, AddressError, is_address_literal, parse_mailbox, parse_path

# (path text, utf8, expected local, expected domain, expected remaining text)
VALID: list[tuple[str, bool, str, str, str]] = [
    ("<user@example.com>", False, "user", "example.com", ""),
    ("  <user@example.com>", False, "user", "example.com", ""),
    ("<user@example.com> SIZE=100 BODY=8BITMIME", False, "user", "example.com", "SIZE=100 BODY=8BITMIME"),
    ("<user@example.com>   SIZE=1", False, "user", "example.com", "SIZE=1"),
    ("<first.last@sub.example.org>", False, "first.last", "sub.example.org", ""),
    ("<User@Example.COM>", False, "User", "Example.COM", ""),
    ("<a@b>", False, "a", "b", ""),
    ("<!#$%&'*+-/=?^_`{|}~@example.com>", False, "!#$%&'*+-/=?^_`{|}~", "example.com", ""),
    ('<"a b"@example.com>', False, "a b", "example.com", ""),
    ('<"john..doe"@example.com>', False, "john..doe", "example.com", ""),
    ('<".leading"@example.com>', False, ".leading", "example.com", ""),
    ('<"quote\\"inside"@example.com>', False, 'quote"inside', "example.com", ""),
    ('<"back\\\\slash"@example.com>', False, "back\\slash", "example.com", ""),
    ('<"\\a\\b"@example.com>', False, "ab", "example.com", ""),
    ('<"plain"@example.com>', False, "plain", "example.com", ""),
    ('<""@example.com>', False, "", "example.com", ""),
    ('<"a>b"@example.com>', False, "a>b", "example.com", ""),
    ('<"user@relay"@example.com>', False, "user@relay", "example.com", ""),
    ("<user%other.example@relay.example>", False, "user%other.example", "relay.example", ""),
    ("<host!user@relay.example>", False, "host!user", "relay.example", ""),
    ("<@a.example,@b.example:user@c.example>", False, "user", "c.example", ""),
    ("<@a.example:user@c.example> NOTIFY=NEVER", False, "user", "c.example", "NOTIFY=NEVER"),
    ("<postmaster@[192.0.2.1]>", False, "postmaster", "[192.0.2.1]", ""),
    ("<a@[0.0.0.0]>", False, "a", "[0.0.0.0]", ""),
    ("<a@[255.255.255.255]>", False, "a", "[255.255.255.255]", ""),
    ("<a@[IPv6:::1]>", False, "a", "[IPv6:::1]", ""),
    ("<a@[IPv6:2001:db8::1]>", False, "a", "[IPv6:2001:db8::1]", ""),
    ("<a@[ipv6:2001:db8:0:0:0:0:0:1]>", False, "a", "[ipv6:2001:db8:0:0:0:0:0:1]", ""),
    ("<a@[IPv6:::ffff:192.0.2.1]>", False, "a", "[IPv6:::ffff:192.0.2.1]", ""),
    ("<a@xn--fsqu00a.xn--4rr70v>", False, "a", "xn--fsqu00a.xn--4rr70v", ""),
    ("<a@my-host.example>", False, "a", "my-host.example", ""),
    ("<a@123.example>", False, "a", "123.example", ""),
    ("<a@1.2.3.example>", False, "a", "1.2.3.example", ""),
    ("<a@example.x1>", False, "a", "example.x1", ""),
    ("<用户@例子.广告>", True, "用户", "例子.广告", ""),
    ("<δοκιμή@παράδειγμα.δοκιμή>", True, "δοκιμή", "παράδειγμα.δοκιμή", ""),
    ("<user@bücher.example>", True, "user", "bücher.example", ""),
    # Domains are case-insensitive: a U-label written in capitals is that U-label.
    ("<user@BÜCHER.example>", True, "user", "BÜCHER.example", ""),
    ("<user@ΣΑΣ.example>", True, "user", "ΣΑΣ.example", ""),
    ("<user@faß.example>", True, "user", "faß.example", ""),
    ('<"ü x"@example.com>', True, "ü x", "example.com", ""),
    ("<@例子.广告:用户@例子.广告>", True, "用户", "例子.广告", ""),
    ("<" + "a" * 64 + "@example.com>", False, "a" * 64, "example.com", ""),
    ("<a@" + "b" * 63 + ".example>", False, "a", "b" * 63 + ".example", ""),
]


@pytest.mark.parametrize(("text", "utf8", "local", "domain", "rest"), VALID)
def test_valid_paths(text: str, utf8: bool, local: str, domain: str, rest: str) -> None:
    addr, remaining = parse_path(text, utf8=utf8, allow_null=False)
    assert addr == Address(local, domain)
    assert remaining == rest


# (path text, utf8, allow_null, a word the reason must contain)
INVALID: list[tuple[str, bool, bool, str]] = [
    ("", True, True, "missing"),
    ("   ", True, True, "missing"),
    ("user@example.com", True, True, "angle"),
    ("<>", True, False, "null"),
    ("<user@example.com", True, True, "closing"),
    ("<user@example.com>x", True, True, "after"),
    ("<user>", True, True, "@"),
    ("<@example.com>", True, True, "empty local part"),
    ("<user@>", True, True, "domain"),
    ("<.user@example.com>", True, True, "dot"),
    ("<user.@example.com>", True, True, "dot"),
    ("<us..er@example.com>", True, True, "dot"),
    ('<"unbalanced@example.com>', True, True, "quote"),
    ('<"a"b@example.com>', True, True, "unexpected"),
    ("<a b@example.com>", True, True, "unexpected"),
    ("<a(b)@example.com>", True, True, "unexpected"),
    ("<user@example.com.>", True, True, "trailing dot"),
    ("<user@.example.com>", True, True, "label"),
    ("<user@exa..mple.com>", True, True, "label"),
    ("<user@-example.com>", True, True, "label"),
    ("<user@example-.com>", True, True, "label"),
    ("<user@exa_mple.com>", True, True, "label"),
    ("<user@exa mple.com>", True, True, "label"),
    ("<user@" + "b" * 64 + ".example>", True, True, "label"),
    ("<" + "a" * 65 + "@example.com>", True, True, "local part longer"),
    ('<"' + "a" * 63 + '"@example.com>', True, True, "local part longer"),
    ("<a@" + ".".join(["b" * 63] * 4) + ".c>", True, True, "domain longer"),
    ("<" + "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".cc>", True, True, "path longer"),
    ("<a@[192.0.2.256]>", True, True, "range"),
    ("<a@[192.0.2]>", True, True, "literal"),
    ("<a@[IPv6:::g]>", True, True, "IPv6"),
    ("<a@[IPv6:fe80::1%eth0]>", True, True, "IPv6"),
    ("<a@[IPv6:1:2:3:4:5:6:7::]>", True, True, "IPv6"),
    ("<a@[IPv6:1.2.3.4]>", True, True, "IPv6"),
    ("<a@[x-tag:content]>", True, True, "general"),
    ("<a@[192.0.2.1>", True, True, "literal"),
    ("<a@[192.0.2.1]x>", True, True, "closing"),
    ("<user@example.com\r\n>", True, True, "control"),
    ("<user\x00@example.com>", True, True, "control"),
    ('<"a\tb"@example.com>', True, True, "control"),
    ("<us\u2028er@example.com>", True, True, "not allowed"),
    ("<user@\ud800.com>", True, True, "not allowed"),
    ("<@a.example user@c.example>", True, True, "route"),
    ("<@a.example,b.example:user@c.example>", True, True, "route"),
    ("<@a..example:user@c.example>", True, True, "label"),
    ("<user@\uff21\uff22\uff23.example>", True, True, "internationalized"),
    ("<user@例子。广告>", True, True, "internationalized"),
    # A label that UTS 46 maps to a U-label is not one (RFC 5890 2.3.2.1): full-width letters
    # beside a "ü" (the A-label of "bücher"), a full-width "xn--" label spelling that A-label,
    # decomposed text (U-labels are NFC).
    ("<u@\uff42\u00fc\uff43\uff48\uff45\uff52.example>", True, True, "U-label"),
    (
        "<u@\uff58\uff4e\uff0d\uff0d\uff42\uff43\uff48\uff45\uff52\uff0d\uff4b\uff56\uff41.example>",
        True,
        True,
        "U-label",
    ),
    ("<u@bu\u0308cher.example>", True, True, "U-label"),
    ("<u@b\u00fc\ufb00.example>", True, True, "U-label"),
    ("<user@例-.example>", True, True, "internationalized"),
    ('<"\\ü"@example.com>', True, True, "quoted-pair"),
    ("<us\u00a0er@example.com>", True, True, "unexpected"),
    # An IP address is no domain name: it goes in brackets (RFC 5321 4.1.3, RFC 1123 2.1), and
    # no top-level domain is all digits (RFC 3696 2). Postfix refuses the first three too.
    ("<user@192.0.2.1>", True, True, "address literal"),
    ("<user@1.2.3.4.5>", True, True, "numeric"),
    ("<user@123>", True, True, "numeric"),
    ("<user@example.123>", True, True, "numeric"),
    ("<@192.0.2.1:user@example.com>", True, True, "numeric"),
    # The character at fault is named, not an "empty local part".
    ("< >", True, True, "unexpected character ' '"),
    ("<<user@example.com>>", True, True, "unexpected character '<'"),
    ("<user@example.com>\tSIZE=1", True, True, "after"),
]


@pytest.mark.parametrize(("text", "utf8", "allow_null", "word"), INVALID)
def test_invalid_paths(text: str, utf8: bool, allow_null: bool, word: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_path(text, utf8=utf8, allow_null=allow_null)
    assert word.lower() in info.value.reason.lower()
    assert not info.value.needs_smtputf8


@pytest.mark.parametrize(
    "text",
    [
        "<用户@例子.广告>",
        "<user@例子.广告>",
        "<用户@example.com>",
        '<"ü x"@example.com>',
        '<"\\ü"@example.com>',
        "<@例子.广告:user@example.com>",
    ],
)
def test_non_ascii_without_smtputf8(text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_path(text, utf8=False, allow_null=True)
    assert "SMTPUTF8" in info.value.reason
    assert info.value.needs_smtputf8


@pytest.mark.parametrize("params", ["SIZE=1\t", "ENVID=a\x01", "SIZE=1\x0bBODY=7BIT", "X=\x7f"])
def test_a_control_character_in_the_parameters_is_theirs_to_refuse(params: str) -> None:
    """The path is checked, the text after it handed back as it is: `params` refuses it with
    501 5.5.4, where the path's check said "501 5.1.7 ... control character in address"."""
    assert parse_path("<user@example.com> " + params, utf8=True, allow_null=True) == (
        Address("user", "example.com"),
        params,
    )
    assert parse_path('<"a>b"@example.com> ' + params, utf8=True, allow_null=True)[1] == params


def test_null_path() -> None:
    assert parse_path("<>", utf8=False, allow_null=True) == (None, "")
    assert parse_path(" <> SIZE=10 RET=HDRS", utf8=False, allow_null=True) == (None, "SIZE=10 RET=HDRS")
    with pytest.raises(AddressError):
        parse_path("<> ", utf8=False, allow_null=False)


def test_max_length_path_accepted_and_one_more_rejected() -> None:
    # "<" + 64 + "@" + 189 + ">" = 256 octets: the largest path RFC 5321 4.5.3.1.3 allows.
    domain = "d" * 63 + "." + "d" * 63 + "." + "d" * 61
    assert len(domain) == 189
    text = "<" + "l" * 64 + "@" + domain + ">"
    assert len(text) == 256
    addr, _ = parse_path(text, utf8=False, allow_null=False)
    assert addr is not None and addr.domain == domain
    with pytest.raises(AddressError, match="path longer"):
        parse_path("<" + "l" * 64 + "@" + domain + "c>", utf8=False, allow_null=False)


def test_local_part_limit_counts_utf8_octets() -> None:
    ok = "é" * 32  # 64 octets
    assert parse_path(f"<{ok}@example.com>", utf8=True, allow_null=False)[0] == Address(ok, "example.com")
    with pytest.raises(AddressError, match="local part longer"):
        parse_path(f"<{ok}a@example.com>", utf8=True, allow_null=False)


def test_str_is_canonical() -> None:
    cases = {
        Address("user", "example.com"): "user@example.com",
        Address("a b", "x"): '"a b"@x',
        Address('q"t', "x"): '"q\\"t"@x',
        Address("b\\s", "x"): '"b\\\\s"@x',
        Address("john..doe", "x"): '"john..doe"@x',
        Address("", "x"): '""@x',
        Address("user@relay", "x"): '"user@relay"@x',
        Address("用户", "例子.广告"): "用户@例子.广告",
        Address("a", "[IPv6:::1]"): "a@[IPv6:::1]",
    }
    for addr, text in cases.items():
        assert str(addr) == text
    # Quotes that are not needed are dropped.
    addr, _ = parse_path('<"plain"@x>', utf8=False, allow_null=False)
    assert str(addr) == "plain@x"


def test_properties() -> None:
    a = Address("用户", "例子.广告")
    assert a.is_utf8 and not a.is_literal
    assert a.ascii_domain == "xn--fsqu00a.xn--4rr70v"
    b = Address("user", "Bücher.Example")
    assert b.ascii_domain == "xn--bcher-kva.example"
    c = Address("User", "MAIL.Example.COM")
    assert not c.is_utf8
    assert c.ascii_domain == "mail.example.com"
    d = Address("x", "[IPv6:2001:DB8::1]")
    assert d.is_literal and d.ascii_domain == "[IPv6:2001:DB8::1]"
    assert Address("ü", "example.com").is_utf8


def test_comparable_domain_is_idna2008() -> None:
    """The form configuration and stored domains are compared in: Address.ascii_domain's."""
    assert address.comparable_domain("Bücher.Example.") == "xn--bcher-kva.example"
    # IDNA 2003 (Python's "idna" codec) made "fass.example" of it: another domain.
    assert address.comparable_domain("faß.example") == "xn--fa-hia.example"
    assert address.comparable_domain("FAß.example") == "xn--fa-hia.example"
    assert address.comparable_domain(" MX.Example ") == "mx.example"
    assert address.comparable_domain("[IPv6:2001:DB8::1]") == "[ipv6:2001:db8::1]"
    assert address.comparable_domain("\u2603.example") == "\u2603.example"  # IDNA2008 refuses it


def test_parse_mailbox() -> None:
    assert parse_mailbox("user@example.com") == Address("user", "example.com")
    assert parse_mailbox("  user@example.com ") == Address("user", "example.com")
    assert parse_mailbox('"a b"@example.com') == Address("a b", "example.com")
    assert parse_mailbox("用户@例子.广告") == Address("用户", "例子.广告")
    assert parse_mailbox("x@[192.0.2.1]") == Address("x", "[192.0.2.1]")
    for bad in ["", "user", "<user@example.com>", "user@", "@example.com", "a@b@c", "a@b c", "a@[1.2.3.4]x"]:
        with pytest.raises(AddressError):
            parse_mailbox(bad)
    with pytest.raises(AddressError) as info:
        parse_mailbox("用户@例子.广告", utf8=False)
    assert info.value.needs_smtputf8
    with pytest.raises(AddressError):
        parse_mailbox("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".ee")


def test_address_error_is_value_error() -> None:
    assert issubclass(AddressError, ValueError)


# ---------------------------------------------------------------------------------------------
# Properties

_PATHISH = st.text(alphabet=st.sampled_from(list('<>@"\\.,:[]; aZ09-_é例\x00\r\n\t+=%!')) | st.characters())


@settings(max_examples=400, deadline=None)
@given(text=_PATHISH, utf8=st.booleans(), allow_null=st.booleans())
def test_parse_path_only_raises_address_error(text: str, utf8: bool, allow_null: bool) -> None:
    try:
        addr, rest = parse_path(text, utf8=utf8, allow_null=allow_null)
    except AddressError:
        return
    assert isinstance(rest, str)
    assert addr is not None or allow_null
    if addr is not None and not utf8:
        assert not addr.is_utf8


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_parse_mailbox_only_raises_address_error(text: str) -> None:
    try:
        parse_mailbox(text)
    except AddressError:
        pass


_ATOM_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
_QUOTED_CHARS = _ATOM_CHARS + ' ."\\@()<>,;:[]'
_atom = st.text(alphabet=_ATOM_CHARS + "üé用户", min_size=1, max_size=10)
_dot_local = st.lists(_atom, min_size=1, max_size=4).map(".".join)
_quoted_local = st.text(alphabet=_QUOTED_CHARS + "é", max_size=30)
_ldh = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_ulabel = st.sampled_from(["例子", "广告", "bücher", "παράδειγμα", "δοκιμή", "испытание"])
# The last label never all digits: such a domain is refused (an IP address without brackets).
_domain = (
    st.lists(_ldh | _ulabel, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda d: not d.rsplit(".", 1)[-1].isdigit())
)
_literal = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "[" + ".".join(map(str, t)) + "]"),
    st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip}]"),
)


@settings(max_examples=400, deadline=None)
@given(local=_dot_local | _quoted_local, domain=_domain | _literal)
def test_round_trip(local: str, domain: str) -> None:
    addr = Address(local, domain)
    text = "<" + str(addr) + ">"
    wire_local = str(addr)[: -(len(domain) + 1)]
    assume(len(wire_local.encode()) <= 64)
    assume(len(text.encode()) <= 256)
    parsed, rest = parse_path(text, utf8=True, allow_null=False)
    assert parsed == addr
    assert rest == ""
    assert parse_mailbox(str(addr)) == addr
    if not addr.is_utf8:
        assert parse_path(text, utf8=False, allow_null=False)[0] == addr


@settings(max_examples=400, deadline=None)
@given(
    local=_dot_local | _quoted_local,
    domain=_domain | _literal,
    where=st.integers(0, 300),
    insert=st.characters() | st.sampled_from(list('<>@"\\.[]: \x00\r\n')),
    replace=st.booleans(),
)
def test_mutated_paths_only_raise_address_error(
    local: str, domain: str, where: int, insert: str, replace: bool
) -> None:
    text = "<" + str(Address(local, domain)) + ">"
    where %= len(text)
    mutated = text[:where] + insert + text[where + (1 if replace else 0) :]
    for utf8 in (True, False):
        try:
            addr, _ = parse_path(mutated, utf8=utf8, allow_null=True)
        except AddressError as exc:
            assert exc.reason
            continue
        if addr is not None:
            # Whatever was accepted must render to something that parses back the same.
            assert parse_path("<" + str(addr) + ">", utf8=True, allow_null=False)[0] == addr


_FAST_ALPHABET = 'ab.-_+%!@<> "[]:\\xZ09é' + "\t"


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet=_FAST_ALPHABET, max_size=40),
    st.sampled_from(["", " SIZE=10", "  X", ">", "x"]),
    st.booleans(),
    st.booleans(),
)
def test_fast_path_agrees_with_the_full_parser(core: str, tail: str, utf8: bool, allow_null: bool) -> None:
    from mailwright.protocol.address import _parse_path_full

    text = "<" + core + ">" + tail if not core.startswith("<") else core + tail

    def outcome(fn):  # type: ignore[no-untyped-def]
        try:
            return fn(text, utf8=utf8, allow_null=allow_null)
        except AddressError as exc:
            return ("error", exc.reason)

    fast, full = outcome(parse_path), outcome(_parse_path_full)
    if isinstance(full, tuple) and full and full[0] == "error":
        assert isinstance(fast, tuple) and fast[0] == "error"
    else:
        assert fast == full


# The definition that address._simple_path is written out from.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The last label is not all digits (an IP address without brackets is refused by the full parser).
SIMPLE_PATH = re.compile(rf" *<({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)*(?![0-9]+>){_LABEL})>(?: +|\Z)")
# Labels around the 63-octet limit, with hyphens at either end now and then.
_long_label = st.tuples(st.sampled_from(["", "-"]), st.integers(58, 66), st.sampled_from(["", "-"])).map(
    lambda t: t[0] + "b" * t[1] + t[2]
)


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet=_FAST_ALPHABET + "=.~", max_size=40)
    | st.tuples(st.text(alphabet="a.-", max_size=4), st.lists(_long_label, min_size=1, max_size=3)).map(
        lambda t: " <" + (t[0] or "a") + "@" + ".".join(t[1])
    ),
    st.sampled_from(["", ">", "> ", ">  SIZE=1", ">x", "> x", ">>"]),
)
def test_simple_path_scanner_matches_its_regex(core: str, tail: str) -> None:
    text = core + tail if core.lstrip(" ").startswith("<") else "<" + core + tail
    m = SIMPLE_PATH.match(text)
    want = (-1, -1, -1, -1) if m is None else (m.start(1), m.end(1), m.end(2), m.end())
    assert address._simple_path(text) == want


def test_fast_path_limits_match_the_full_parser() -> None:
    from mailwright.protocol.address import _parse_path_full

    for text in (
        "<" + "a" * 64 + "@x.test>",
        "<" + "a" * 65 + "@x.test>",
        "<a@" + ".".join(["b" * 63] * 3) + "." + "c" * 60 + ">",
        "<a@" + "b" * 64 + ".test>",
        "<" + "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".cc>",
        "<a@b-.test>",
        "<a..b@x.test>",
        "<a@x.test>SIZE=1",
        "<a@1.2.3.4>",
        "<a@x.123>",
        "<a@x.12a>",
    ):
        try:
            full = _parse_path_full(text, utf8=False, allow_null=False)
        except AddressError:
            with pytest.raises(AddressError):
                parse_path(text, utf8=False, allow_null=False)
        else:
            assert parse_path(text, utf8=False, allow_null=False) == full


def dot_string_by_definition(local: str) -> bool:
    """RFC 5321 4.1.2 Dot-string = Atom *("." Atom), Atom = 1*atext (RFC 5322 3.2.3, ASCII)."""
    atext = set(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
    return all(atom and set(atom) <= atext for atom in local.split("."))


@given(st.text(alphabet=string.ascii_letters[:3] + "!#~-._" + '." \\(@' + "\x7f", max_size=8))
def test_ascii_dot_string_check_matches_the_definition(local: str) -> None:
    assert address._is_dot_string(local) == dot_string_by_definition(local)
    quoted = str(Address(local, "example.org")) if local else None
    if quoted is not None:
        assert quoted.startswith('"') != dot_string_by_definition(local)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[127.0.0.1]", True),
        ("[IPv6:::1]", True),
        ("[ipv6:2001:db8::1]", True),
        ("127.0.0.1]", False),  # the opening bracket is required here, unlike inside a path
        ("[127.0.0.1", False),
        ("[300.0.0.1]", False),
        ("[1.2.3.4;(]", False),
        ("[tag:x]", False),
        ("[]", False),
        ("example.org", False),
    ],
)
def test_is_address_literal(text: str, expected: bool) -> None:
    assert is_address_literal(text) is expected
