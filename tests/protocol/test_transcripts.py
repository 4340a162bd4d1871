"""Golden transcripts (C:/S: files) replayed against the server engine, without sockets.

Format: `S: line` is an expected reply line (a trailing `*` matches any rest of the line);
`C: line` is sent with CRLF appended; `C+ text` is sent exactly, with \\r, \\n, \\xNN
escapes; `{long:N}` expands to N 'x' characters.  Before each client line, the server's
output so far must have been consumed exactly by the S: lines before it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailwright.protocol import events as ev
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ServerConnection, ServerSettings

HERE = Path(__file__).parent / "transcripts"
SETTINGS = ServerSettings(hostname="mx.test", max_message_size=1_000_000, tls_available=True)


def _expand(text: str) -> str:
    return re.sub(r"\{long:(\d+)\}", lambda m: "x" * int(m.group(1)), text)


def _pump(conn: ServerConnection) -> list[ev.Event]:
    seen = []
    while (event := conn.next_event()) is not None:
        seen.append(event)
        if isinstance(event, ev.EndOfData):
            conn.accept(Reply(250, "2.0.0", "OK queued as TESTID"))
        elif event.needs_reply:
            conn.accept()
    return seen


def replay(path: Path) -> int:
    conn = ServerConnection(SETTINGS)
    pending: list[str] = []
    checked = 0

    def take_output() -> None:
        pending.extend(conn.data_to_send().decode("utf-8").splitlines())

    take_output()
    for lineno, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not raw or raw.startswith("#"):
            continue
        kind, _, text = raw.partition(" ")
        if kind == "S:":
            assert pending, f"{path.name}:{lineno}: expected {text!r}, server said nothing more"
            got = pending.pop(0)
            if text.endswith("*"):
                assert got.startswith(text[:-1]), f"{path.name}:{lineno}: {got!r} !~ {text!r}"
            else:
                assert got == text, f"{path.name}:{lineno}: {got!r} != {text!r}"
            checked += 1
        elif kind in ("C:", "C+"):
            assert not pending, f"{path.name}:{lineno}: unexpected server output {pending!r}"
            if kind == "C:":
                data = _expand(text).encode("utf-8") + b"\r\n"
            else:
                data = _expand(text).encode("utf-8").decode("unicode_escape").encode("latin-1")
            conn.receive_data(data)
            _pump(conn)
            take_output()
        else:
            raise AssertionError(f"{path.name}:{lineno}: bad transcript line {raw!r}")
    assert not pending, f"{path.name}: unexpected trailing output {pending!r}"
    return checked


TRANSCRIPTS = sorted(HERE.glob("*.txt"))


def test_transcripts_present() -> None:
    assert len(TRANSCRIPTS) >= 6


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(path: Path) -> None:
    assert replay(path) > 3
