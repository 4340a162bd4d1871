"""Tests for the streaming DATA encoder (protocol.dotstuff)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.protocol.dotstuff import DotStuffer


def reference_encode(data: bytes) -> bytes:
    """Line by line, the obvious way: normalise breaks, double leading dots, terminate."""
    lines = re.split(rb"\r\n|\r|\n", data)
    ends_with_break = lines[-1] == b""
    if ends_with_break:
        lines.pop()
    # Every line gets CRLF, including a last line that had none: the terminator's CRLF.
    out = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return out + b".\r\n"


def reference_decode(wire: bytes) -> bytes:
    """What a strict server does: read CRLF lines up to ".", undoubling leading dots."""
    body = []
    pos = 0
    while True:
        end = wire.index(b"\r\n", pos)
        line = wire[pos:end]
        pos = end + 2
        if line == b".":
            assert pos == len(wire), "terminator before the end of the data"
            return b"".join(body)
        body.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


def encode(chunks: list[bytes]) -> bytes:
    s = DotStuffer()
    return b"".join(s.feed(c) for c in chunks) + s.finish()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, prev = [], 0
    for p in points:
        pieces.append(data[prev:p])
        prev = p
    pieces.append(data[prev:])
    return pieces


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"", b".\r\n"),
        (b"hello\r\n", b"hello\r\n.\r\n"),
        (b"hello", b"hello\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"..x\r\n", b"...x\r\n.\r\n"),
        (b"a\r\n.\r\n.\r\n", b"a\r\n..\r\n..\r\n.\r\n"),
        (b"a.b\r\n", b"a.b\r\n.\r\n"),
        # Bare LF and bare CR become CRLF (smuggling defence), CRLF stays one break.
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r.\rb\r", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"a\n\r\nb\n", b"a\r\n\r\nb\r\n.\r\n"),
        (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
        (b"\n.\n", b"\r\n..\r\n.\r\n"),
    ],
)
def test_golden(data: bytes, wire: bytes) -> None:
    assert encode([data]) == wire
    # Every way of cutting it in two gives the same bytes: state survives chunk edges.
    for i in range(len(data) + 1):
        assert encode([data[:i], data[i:]]) == wire, i
    # One byte at a time too.
    assert encode([data[i : i + 1] for i in range(len(data))]) == wire


def test_dot_at_chunk_start_after_line_break() -> None:
    s = DotStuffer()
    assert s.feed(b"line\r\n") == b"line\r\n"
    assert s.feed(b".dot") == b"..dot"
    assert s.feed(b".not-at-start") == b".not-at-start"
    assert s.finish() == b"\r\n.\r\n"


def test_cr_at_end_of_chunk_is_held_back() -> None:
    s = DotStuffer()
    assert s.feed(b"abc\r") == b"abc"
    assert s.feed(b"\r") == b"\r\n"  # the first CR was bare
    assert s.feed(b"\n.") == b"\r\n.."
    assert s.finish() == b"\r\n.\r\n"


def test_held_back_bare_cr_is_flushed_by_finish() -> None:
    s = DotStuffer()
    assert s.feed(b"abc\r") == b"abc"
    assert s.finish() == b"\r\n.\r\n"


def test_empty_feed_changes_nothing() -> None:
    s = DotStuffer()
    assert s.feed(b"") == b""
    assert s.feed(b".") == b".."


def test_use_after_finish_is_refused() -> None:
    s = DotStuffer()
    s.finish()
    with pytest.raises(ValueError):
        s.feed(b"x")
    with pytest.raises(ValueError):
        s.finish()


_body = st.lists(
    st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b"..", b"\r\n.\r\n", b"\x00", b"\xff"]), max_size=40
).map(b"".join)


@settings(max_examples=400)
@given(_body, st.lists(st.integers(0, 200), max_size=6))
def test_matches_reference_for_any_chunking(data: bytes, cuts: list[int]) -> None:
    assert encode(split_at(data, cuts)) == reference_encode(data)


@settings(max_examples=400)
@given(st.one_of(_body, st.binary(max_size=200)), st.lists(st.integers(0, 200), max_size=6))
def test_round_trip_through_strict_decoder(data: bytes, cuts: list[int]) -> None:
    wire = encode(split_at(data, cuts))
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    # reference_decode also checks that the only <CRLF>.<CRLF> is the final one.
    assert reference_decode(wire) == normalised
    assert b"\r" not in wire.replace(b"\r\n", b"") and b"\n" not in wire.replace(b"\r\n", b"")


def test_fifty_megabytes_is_fast() -> None:
    line = b"." + b"x" * 70 + b"\n" + b"y" * 75 + b"\r\n" + b".z\r"
    data = line * (50 * 1024 * 1024 // len(line))
    chunks = [data[i : i + 1024 * 1024 + 7] for i in range(0, len(data), 1024 * 1024 + 7)]
    s = DotStuffer()
    start = time.perf_counter()
    out = [s.feed(c) for c in chunks]
    out.append(s.finish())
    elapsed = time.perf_counter() - start
    wire = b"".join(out)
    assert elapsed < 3.0, f"50 MB took {elapsed:.2f}s"
    expected_per_line = b".." + b"x" * 70 + b"\r\n" + b"y" * 75 + b"\r\n" + b"..z\r\n"
    assert wire == expected_per_line * (len(data) // len(line)) + b".\r\n"
