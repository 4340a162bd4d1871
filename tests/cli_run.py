"""Run the `mailwright` command as an operator does, a real process, and check how it refuses.

`mailwright(...)` runs `python -m mailwright.cli.main` with the interpreter that runs the tests
(so the code under test, and PYTHONPATH for the old sources), arguments as str or bytes (bytes
for arguments that are not UTF-8), a given standard input (None: closed, as `<&-` leaves it),
and an environment without the caller's MAILWRIGHT_CONFIG. `refused(...)` is the standard every
error path must meet: the given exit status, nothing on standard output, no traceback anywhere,
a message that names what is wrong and says what to do.

Not responsible for: starting servers that must keep running (tests/spawn.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Arg = str | bytes | Path


@dataclass(frozen=True)
class Done:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.err.splitlines()


def environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAILWRIGHT_CONFIG", "MAILWRIGHT_STATE_DIR")}
    env.update(HOME=str(home), MAILWRIGHT_STATE_DIR=str(home / "state"), MAILWRIGHT_LOG="INFO")
    env.update(extra or {})
    return env


def mailwright(
    *argv: Arg,
    home: Path,
    stdin: bytes | None = b"",
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
    prefix: Sequence[str] = (),
) -> Done:
    """Run `mailwright ARGV...`; `prefix` is a command that runs it (setpriv ... --)."""
    args = [os.fsencode(a) if isinstance(a, Path) else a for a in argv]
    command = [*prefix, sys.executable, "-m", "mailwright.cli.main", *args]
    done = subprocess.run(
        command,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        env=environment(home, env),
        timeout=timeout,
        preexec_fn=_close_stdin if stdin is None else None,
    )
    return Done(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def _close_stdin() -> None:
    os.close(0)  # as `<&-` leaves it: sys.stdin is None in the child


def refused(done: Done, code: int, *says: str) -> str:
    """Check the standard for a refusal and return standard error: exit `code`, no output, no
    traceback, every piece of `says` in the message, and a fix (argparse's usage line for 2)."""
    assert "Traceback" not in done.err + done.out, done.err
    assert done.code == code, (done.code, done.err, done.out)
    assert done.out == "", done.out
    for piece in says:
        assert piece in done.err, f"{piece!r} not in: {done.err}"
    assert "fix:" in done.err or "usage:" in done.err, f"no fix: {done.err}"
    return done.err
