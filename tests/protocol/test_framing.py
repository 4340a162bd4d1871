"""Framing helpers against their plain definitions: the line checks of DATA, command-line splitting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailwright.protocol.framing import MAX_TEXT_LINE, DataReceiver, has_long_line, line_fault, take_line
from mailwright.protocol.reply import R, Reply


def reference(lines: str) -> bool:
    """The plain definition: some LF-separated part (a line and its CR) is MAX_TEXT_LINE octets or more."""
    return max(map(len, lines.split("\n"))) > MAX_TEXT_LINE - 1


def fault_by_definition(text: str) -> Reply | None:
    """A CR not before an LF, or an LF not after a CR, is bare; bare line breaks come first."""
    for i, ch in enumerate(text):
        if ch == "\r" and text[i + 1 : i + 2] != "\n":
            return R.BARE_LF_DATA
        if ch == "\n" and (i == 0 or text[i - 1] != "\r"):
            return R.BARE_LF_DATA
    return R.TEXT_LINE_TOO_LONG if reference(text) else None


# Line lengths around the limit, so that both answers come up often.
_line = st.integers(min_value=0, max_value=MAX_TEXT_LINE + 3).map(lambda n: "x" * n + "\r\n")


@given(st.lists(_line, max_size=6))
def test_long_line_check_matches_the_definition(lines: list[str]) -> None:
    text = "".join(lines)
    assert has_long_line(text) == reference(text)


def test_limit_is_998_octets_of_text() -> None:
    for check in (has_long_line, lambda text: line_fault(text) is not None):
        assert not check("x" * (MAX_TEXT_LINE - 2) + "\r\n")  # 998 + CRLF: allowed
        assert check("x" * (MAX_TEXT_LINE - 1) + "\r\n")  # 999 + CRLF: too long
        assert check("a\r\n" * 500 + "x" * MAX_TEXT_LINE + "\r\n" + "b\r\n" * 500)
        assert not check("")


# Line breaks, bare and not, between runs of text from empty to over-long, so that both walks,
# both answers and the dense-text fallback all come up.
_lengths = [0, 1, 5, 40, MAX_TEXT_LINE - 2, MAX_TEXT_LINE - 1, MAX_TEXT_LINE]
_run = st.sampled_from(_lengths).map(lambda n: "x" * n)
_piece = st.one_of(st.sampled_from(["\r\n", "\r\n", "\r\n", "\r", "\n", "\n\r"]), _run)


@given(st.lists(_piece, max_size=40), st.integers(min_value=0, max_value=300))
def test_line_fault_matches_the_definition(pieces: list[str], dense: int) -> None:
    for text in ("".join(pieces), "".join(pieces) + "\r\n" * dense, "\r\n" * dense + "".join(pieces)):
        assert line_fault(text) == fault_by_definition(text), text[:200]


def test_line_fault_counts_text_dense_in_line_breaks() -> None:
    """Thousands of empty lines go to the counting path, with the same answers."""
    assert line_fault("\r\n" * 5000) is None
    assert line_fault("\r\n" * 5000 + "\n") is R.BARE_LF_DATA
    assert line_fault("\r" + "\r\n" * 5000) is R.BARE_LF_DATA
    assert line_fault("\r\n" * 5000 + "x" * MAX_TEXT_LINE + "\r\n") is R.TEXT_LINE_TOO_LONG


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


def _fed_in_two(message: bytes, cut: int) -> tuple[DataReceiver, bytes]:
    rx = DataReceiver(100_000)
    body, after = rx.feed(message[:cut])
    assert after is None
    more, after = rx.feed(message[cut:])
    assert after == b""
    return rx, body + more


def test_the_stuffing_dot_is_not_counted_in_the_line_limit_however_the_line_arrives() -> None:
    """RFC 5321 4.5.3.1.6: 1000 octets with CRLF, "not counting the leading dot duplicated for
    transparency". A stuffed line of 998 octets (999 on the wire) was refused with 550 5.6.0."""
    for first in (b"", b"Subject: t\r\n\r\n"):
        ok = first + b".." + b"y" * 997 + b"\r\n.\r\n"
        too_long = first + b".." + b"y" * 998 + b"\r\n.\r\n"
        for cut in range(1, len(ok)):
            rx, body = _fed_in_two(ok, cut)
            assert rx.failure is None, cut
            assert body == first + b"." + b"y" * 997 + b"\r\n", cut
            rx, _ = _fed_in_two(too_long, cut)
            assert rx.failure == R.TEXT_LINE_TOO_LONG, cut
        # A dot that is no stuffing counts as any octet would.
        assert _fed_in_two(first + b"x." + b"y" * 997 + b"\r\n.\r\n", len(first) + 500)[0].failure is not None
