"""The master/worker channel format: frames survive any split, garbage is refused, envelopes round-trip."""

from __future__ import annotations

import marshal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.prefork import wire
from mailwright.protocol.reply import R
from mailwright.queue.model import Envelope, Recipient

ENVELOPE = ("a@b", (("c@d", None, None),), "", "127.0.0.1", "h", None, False, 1.5)
RECORDS: list[tuple[object, ...]] = [
    (wire.COMMIT, 1, "0123456789ABCDEF", ENVELOPE, 1024, b"body\r\n", None),
    (wire.AUTH_FAILED, "127.0.0.1"),
    (wire.RESULT, 7, None, "full"),
]  # fmt: skip


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_frames_survive_any_split(cuts: list[int]) -> None:
    data = wire.encode(RECORDS[:1]) + wire.encode(RECORDS[1:])
    reader = wire.FrameReader()
    got: list[tuple[object, ...]] = []
    pos = 0
    for cut in cuts:
        got += reader.feed(data[pos : pos + cut])
        pos += cut
    got += reader.feed(data[pos:])
    assert got == RECORDS


def test_byte_by_byte_yields_nothing_until_a_frame_is_whole() -> None:
    data = wire.encode(RECORDS)
    reader = wire.FrameReader()
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) == []
    assert reader.feed(data[-1:]) == RECORDS


def test_oversized_frame_is_refused_before_buffering() -> None:
    reader = wire.FrameReader()
    with pytest.raises(wire.FrameError, match="frame of"):
        reader.feed((wire.MAX_FRAME + 1).to_bytes(4, "big"))


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe garbage", marshal.dumps({"not": "a list"})],
    ids=["undecodable", "not-a-list"],
)
def test_garbage_frames_raise_frame_error(payload: bytes) -> None:
    with pytest.raises(wire.FrameError):
        wire.FrameReader().feed(len(payload).to_bytes(4, "big") + payload)


def test_envelope_round_trip() -> None:
    env = Envelope(
        sender="",
        recipients=(Recipient("a@example.net", "SUCCESS", "rfc822;a@example.net"), Recipient("b@例え.jp")),
        mail_params="BODY=8BITMIME SMTPUTF8",
        client_ip="::1",
        helo="[127.0.0.1]",
        auth_user="alice",
        tls=True,
        received_at=1234.5,
    )
    packed = wire.pack_envelope(env)
    assert wire.unpack_envelope(marshal.loads(marshal.dumps(packed))) == env


def test_error_names_map_back_to_their_replies() -> None:
    for name, reply in wire.ERRORS.items():
        assert wire.error_name(reply) == name
    assert wire.ERRORS[wire.error_name(R.OK)] == R.LOCAL_ERROR
