"""The `mailwright` entry point (mailwright.cli.main) as a shell meets it: closed pipes, config path.

A reader that goes away early (`| head`) must not turn into a traceback, an "Exception ignored"
message, or exit status 120, whether or not Python buffers standard output.

Not covered here: each subcommand's own messages (tests/config, tests/queue, tests/users).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailwright.cli import main
from mailwright.queue.sqlite import SQLiteQueueStore
from mailwright.users.store import UserStore


def run_into_closed_pipe(argv: list[str], *, unbuffered: bool) -> subprocess.CompletedProcess[str]:
    """Run the command with standard output a pipe whose reader has already gone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, *argv], stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=60
        )
    finally:
        os.close(write_end)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "mailwright.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[[listeners]]\nrole = "mx"\nport = 2525\n')
    with UserStore(tmp_path / "users.db") as users:
        users.add("amy@example.org", "pw")
    queue = tmp_path / "queue"

    async def make_queue() -> None:
        await SQLiteQueueStore(queue).close()

    asyncio.run(make_queue())
    return {"config": config, "users": tmp_path / "users.db", "queue": queue}


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize(
    "command",
    [
        ["-m", "mailwright.cli.main", "--config", "{config}", "config", "show"],
        ["-m", "mailwright.cli.main", "--config", "{config}", "config", "check"],
        ["-m", "mailwright.cli.main", "user", "list", "--users-db", "{users}"],
        ["-m", "mailwright.cli.main", "queue", "list", "--queue-dir", "{queue}"],
        ["-m", "mailwright.cli.queue_cmd", "list", "--queue-dir", "{queue}"],
    ],
    ids=["config-show", "config-check", "user-list", "queue-list", "queue-standalone"],
)
def test_output_into_a_closed_pipe_is_quiet(
    setup: dict[str, Path], command: list[str], unbuffered: bool
) -> None:
    # Before: a BrokenPipeError traceback (config), "user database ...: Broken pipe" (user), or
    # "Exception ignored ... BrokenPipeError" and status 120 (everything, when buffered).
    argv = [arg.format(**{k: str(v) for k, v in setup.items()}) for arg in command]
    done = run_into_closed_pipe(argv, unbuffered=unbuffered)
    assert done.stderr == "" and done.returncode == 0, (done.returncode, done.stderr)


def test_missing_config_from_the_environment_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the fix said "check the path given with --config" when no --config was given.
    missing = tmp_path / "absent.toml"
    monkeypatch.setenv("MAILWRIGHT_CONFIG", str(missing))
    assert main.main(["config", "check"]) == 2
    assert capsys.readouterr().err == (
        f"{missing}: cannot read the configuration file: No such file or directory "
        "(fix: check the path given with --config or MAILWRIGHT_CONFIG, and its permissions)\n"
    )


def test_state_dir_that_is_a_file_stops_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: `config check` said OK, `user list` said "File exists", `serve` "[Errno 17] File exists".
    (tmp_path / "state").write_text("x")
    config = tmp_path / "mailwright.toml"
    config.write_text('state_dir = "state"\n[[listeners]]\nrole = "mx"\nport = 2525\n')
    expected = (
        f'{config}:1: state_dir = "state": is a file, not a directory '
        "(fix: name a directory, which mailwright creates when missing, or move that file out of the way)\n"
    )
    for argv in (["config", "check"], ["user", "list"], ["queue", "list"], ["serve"]):
        assert main.main(["--config", str(config), *argv]) == 2, argv
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", expected), argv
