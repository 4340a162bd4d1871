"""Tests for EHLO extension parsing and formatting (protocol.extensions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.protocol.extensions import Extensions, format_ehlo, parse_ehlo
from mailwright.protocol.reply import Reply

POSTFIX_EHLO = Reply(
    250,
    None,
    (
        "mx.example.org",
        "PIPELINING",
        "SIZE 10240000",
        "VRFY",
        "ETRN",
        "STARTTLS",
        "AUTH PLAIN LOGIN",
        "AUTH=PLAIN LOGIN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
    ),
)


def test_parse_postfix_reply() -> None:
    domain, ext = parse_ehlo(POSTFIX_EHLO)
    assert domain == "mx.example.org"
    for kw in ("PIPELINING", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"):
        assert ext.has(kw)
        assert ext.keywords[kw] == ""
    assert not ext.has("REQUIRETLS")
    assert ext.size == 10240000
    assert ext.auth_mechanisms == frozenset({"PLAIN", "LOGIN"})
    assert ext.keywords["AUTH"] == "PLAIN LOGIN"


def test_greeting_text_after_domain_is_not_the_domain() -> None:
    domain, ext = parse_ehlo(
        Reply(250, None, ("smtp.gmail.com at your service, [192.0.2.1]", "SIZE 35882577"))
    )
    assert domain == "smtp.gmail.com"
    assert ext.size == 35882577


def test_single_line_reply_has_no_extensions() -> None:
    domain, ext = parse_ehlo(Reply(250, None, "mx.test"))
    assert domain == "mx.test"
    assert dict(ext.keywords) == {}
    assert ext.size is None
    assert ext.auth_mechanisms == frozenset()


def test_keywords_are_case_insensitive_and_params_are_kept() -> None:
    _, ext = parse_ehlo(Reply(250, None, ("mx", "pipelining", "Auth cram-md5 Plain", "x-custom a  b")))
    assert ext.has("PIPELINING") and ext.has("pipelining")
    assert ext.auth_mechanisms == frozenset({"CRAM-MD5", "PLAIN"})
    assert ext.keywords["X-CUSTOM"] == "a b"
    assert ext.param("x-custom") == "a b"
    assert ext.param("nope") is None


def test_old_auth_form_alone_counts_as_auth() -> None:
    _, ext = parse_ehlo(Reply(250, None, ("mx", "AUTH=LOGIN PLAIN")))
    assert ext.has("AUTH")
    assert ext.auth_mechanisms == frozenset({"LOGIN", "PLAIN"})


def test_old_and_new_auth_forms_merge() -> None:
    _, ext = parse_ehlo(Reply(250, None, ("mx", "AUTH=LOGIN", "AUTH PLAIN XOAUTH2", "AUTH=login CRAM-MD5")))
    assert ext.auth_mechanisms == frozenset({"LOGIN", "PLAIN", "XOAUTH2", "CRAM-MD5"})


def test_first_advertisement_wins_for_other_keywords() -> None:
    _, ext = parse_ehlo(Reply(250, None, ("mx", "SIZE 100", "SIZE 200")))
    assert ext.size == 100


@pytest.mark.parametrize(
    ("line", "size"),
    [("SIZE", 0), ("SIZE 0", 0), ("SIZE 52428800", 52428800), ("SIZE lots", 0), ("SIZE -5", 0)],
)
def test_size_values(line: str, size: int) -> None:
    assert parse_ehlo(Reply(250, None, ("mx", line)))[1].size == size


def test_lines_that_are_not_keywords_are_ignored() -> None:
    _, ext = parse_ehlo(Reply(250, None, ("mx", "-BROKEN", "", "==", "OK-KW")))
    assert dict(ext.keywords) == {"OK-KW": ""}


def test_non_250_is_refused() -> None:
    with pytest.raises(ValueError, match="250"):
        parse_ehlo(Reply(502, "5.5.1", "EHLO not implemented"))


def test_extensions_are_immutable_and_hashable() -> None:
    source = {"pipelining": ""}
    ext = Extensions(source)
    source["SIZE"] = "1"
    assert not ext.has("SIZE")
    with pytest.raises(TypeError):
        ext.keywords["X"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        ext.keywords = {}  # type: ignore[misc]
    assert hash(ext) == hash(Extensions({"PIPELINING": ""}))
    assert ext == Extensions({"PIPELINING": ""})


def test_format_golden_bytes() -> None:
    reply = format_ehlo(
        "mx.example.org",
        [("PIPELINING", ""), ("SIZE", "10240000"), ("AUTH", "PLAIN LOGIN"), ("8BITMIME", "")],
        greeting="Hello client.test",
    )
    assert reply.enhanced is None
    assert reply.to_bytes() == (
        b"250-mx.example.org Hello client.test\r\n"
        b"250-PIPELINING\r\n"
        b"250-SIZE 10240000\r\n"
        b"250-AUTH PLAIN LOGIN\r\n"
        b"250 8BITMIME\r\n"
    )


def test_format_without_keywords_is_single_line() -> None:
    assert format_ehlo("mx.test", []).to_bytes() == b"250 mx.test\r\n"


@pytest.mark.parametrize(
    ("hostname", "keywords", "greeting"),
    [
        ("mx.test", [("BAD KW", "")], ""),
        ("mx.test", [("-X", "")], ""),
        ("mx.test", [("SIZE", "1\r\n250 INJECTED")], ""),
        ("mx.test", [("AUTH", "PLAIN\x00")], ""),
        ("mx.test", [], "hi\r\n250 X"),
        ("mx test", [], ""),
        ("", [], ""),
        ("mx.test\n", [], ""),
    ],
)
def test_format_refuses_bad_input(hostname: str, keywords: list[tuple[str, str]], greeting: str) -> None:
    with pytest.raises(ValueError):
        format_ehlo(hostname, keywords, greeting)


_keyword = st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,15}", fullmatch=True).filter(lambda k: k != "AUTH")
_param = st.lists(st.from_regex(r"[\x21-\x7e]{1,10}", fullmatch=True), max_size=3).map(" ".join)


@given(st.dictionaries(_keyword, _param, max_size=8), st.from_regex(r"[a-z0-9.]{1,20}", fullmatch=True))
def test_format_then_parse_round_trips(keywords: dict[str, str], host: str) -> None:
    reply = format_ehlo(host, list(keywords.items()), greeting="welcome")
    domain, ext = parse_ehlo(reply)
    assert domain == host
    assert dict(ext.keywords) == keywords
