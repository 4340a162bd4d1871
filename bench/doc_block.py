"""Replace a generated block of a markdown file: the text between two HTML-comment markers.

The suite writes its table into README.md this way (`bench.report`) and the list of every suite
run into docs/performance.md (`bench.history`), so each file's own prose stays as it was written.

Invariant: only the text between the markers changes; when the markers are missing (or out of
order) the block is appended, under `heading`, with both markers, so the next run finds them.

Not responsible for: what the block says.
"""

from __future__ import annotations

from pathlib import Path


def replace_block(path: Path, body: str, start: str, end: str, heading: str) -> None:
    """Put `body` between `start` and `end` in the file at `path`."""
    text = path.read_text()
    block = f"{start}\n{body}{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"
    path.write_text(text)
