"""`Reply`: its wire form (one line and several) and the validation of enhanced status codes."""

from __future__ import annotations

import pytest

from mailwright.protocol import reply as reply_mod
from mailwright.protocol.reply import Reply


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (
            Reply(250, "2.0.0", "OK queued as 01JABCDEFGHJKMNP"),
            b"250 2.0.0 OK queued as 01JABCDEFGHJKMNP\r\n",
        ),
        (Reply(250, None, "mx.test"), b"250 mx.test\r\n"),
        (Reply(250, None, ""), b"250 \r\n"),
        (Reply(250, "2.0.0", ""), b"250 2.0.0\r\n"),
        (Reply(221, "2.0.0", "bye  "), b"221 2.0.0 bye\r\n"),
        (Reply(553, "5.1.7", "bad address <jos\u00e9@x>"), b"553 5.1.7 bad address <jos\xc3\xa9@x>\r\n"),
        (
            Reply(250, None, ("mx.test", "PIPELINING", "8BITMIME")),
            b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        ),
        (Reply(550, "5.1.1", "no such user\nhere"), b"550-5.1.1 no such user\r\n550 5.1.1 here\r\n"),
        (Reply(550, "5.1.1", "no such user\r\nhere\n"), b"550-5.1.1 no such user\r\n550 5.1.1 here\r\n"),
        (Reply(250, None, ("a\nb", "", "c")), b"250-a\r\n250-b\r\n250-\r\n250 c\r\n"),
        # Only LF ends a line: the separators str.splitlines also knows stay inside it.
        (Reply(250, None, "x\u2028250 y\x85z\u2029"), "250 x\u2028250 y\x85z\u2029\r\n".encode()),
        (Reply(501, "5.5.4", ("a\x0bb\x0cc\x1cd",)), b"501 5.5.4 a\x0bb\x0cc\x1cd\r\n"),
        (Reply(354, None, "End data with <CR><LF>.<CR><LF>"), b"354 End data with <CR><LF>.<CR><LF>\r\n"),
    ],
)
def test_wire_form(reply: Reply, wire: bytes) -> None:
    assert reply.to_bytes() == wire


def test_enhanced_codes_are_checked_also_once_the_cache_is_full() -> None:
    """The class cache is bounded (replies parsed from other servers carry any code); past the
    bound, codes are still validated, just not remembered."""
    for n in range(reply_mod._CLASS_CACHE_SIZE + 50):
        Reply(450, f"4.{n % 1000}.{n // 1000}", "try later")
    assert len(reply_mod._class_of) <= reply_mod._CLASS_CACHE_SIZE
    with pytest.raises(ValueError, match="does not fit"):
        Reply(250, "5.7.999", "x")
    with pytest.raises(ValueError, match="does not fit"):
        Reply(250, "2.0", "x")
    assert Reply(250, "2.9.999", "x").enhanced == "2.9.999"
