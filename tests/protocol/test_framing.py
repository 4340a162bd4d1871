"""Framing helpers against their plain definitions: the long-line check, command-line splitting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailwright.protocol.framing import MAX_TEXT_LINE, has_long_line, take_line


def reference(lines: bytes) -> bool:
    """The plain definition: some LF-separated part (a line and its CR) is MAX_TEXT_LINE octets or more."""
    return max(map(len, lines.split(b"\n"))) > MAX_TEXT_LINE - 1


# Line lengths around the limit, so that both answers come up often.
_line = st.integers(min_value=0, max_value=MAX_TEXT_LINE + 3).map(lambda n: b"x" * n + b"\r\n")


@given(st.lists(_line, max_size=6))
def test_long_line_check_matches_the_definition(lines: list[bytes]) -> None:
    text = b"".join(lines)
    assert has_long_line(text) == reference(text)


def test_limit_is_998_octets_of_text() -> None:
    assert not has_long_line(b"x" * (MAX_TEXT_LINE - 2) + b"\r\n")  # 998 + CRLF: allowed
    assert has_long_line(b"x" * (MAX_TEXT_LINE - 1) + b"\r\n")  # 999 + CRLF: too long
    assert has_long_line(b"a\r\n" * 500 + b"x" * MAX_TEXT_LINE + b"\r\n" + b"b\r\n" * 500)
    assert not has_long_line(b"")


def split_line_by_definition(buf: bytearray) -> tuple[bytes, bool] | None:
    """The line up to the first LF, without a CR right before it; bare unless it ended in CRLF
    and held no other CR."""
    if b"\n" not in buf:
        return None
    raw, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    if raw.endswith(b"\r"):
        return raw[:-1], b"\r" in raw[:-1]
    return raw, True


_PIECES = [b"\r", b"\n", b"\r\n", b"x", b"MAIL FROM:<a@b>", b" ", b"\x00", b"\xc3\xa9", b"\xff"]


@given(st.lists(st.sampled_from(_PIECES), max_size=12))
def test_take_line_matches_the_definition(pieces: list[bytes]) -> None:
    """Octets in as Latin-1 text, lines out: each line, encoded back, is the definition's."""
    data = b"".join(pieces)
    text, pos = data.decode("latin-1"), 0
    reference = bytearray(data)
    while True:
        line, nxt, bare = take_line(text, pos)
        want = split_line_by_definition(reference)
        if want is None:
            assert nxt == -1, data
            assert text[pos:].encode("latin-1") == bytes(reference), data
            break
        assert (line.encode("latin-1"), bare) == want, data
        assert text[nxt:].encode("latin-1") == bytes(reference), data
        pos = nxt
