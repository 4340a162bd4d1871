"""The server log's format: one prefixed line per logged line (mailwright.log_format)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

from mailwright.log_format import LineFormatter

PREFIX_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: "
FORMAT = PREFIX_FORMAT + "%(message)s"
PREFIX = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO mailwright\.queue\[\d+\]: ")


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("mailwright.queue", logging.INFO, __file__, 1, msg, args or None, exc_info)


def test_a_one_line_message_is_formatted_as_the_stdlib_formats_it() -> None:
    for rec in (record("1ABC: from=<a@b>, size=%d", 12), record("plain"), record("fails", exc=True)):
        assert LineFormatter(PREFIX_FORMAT).format(rec) == logging.Formatter(FORMAT).format(rec)


def test_every_line_of_a_multi_line_message_gets_the_prefix() -> None:
    rec = record("1AAA: from=<a@b>\n1BBB: from=<>\n1CCC: from=<c@d>")
    lines = LineFormatter(PREFIX_FORMAT).format(rec).split("\n")
    expected = ["1AAA: from=<a@b>", "1BBB: from=<>", "1CCC: from=<c@d>"]
    assert [PREFIX.sub("", line) for line in lines] == expected
    assert all(PREFIX.match(line) for line in lines), lines
    assert len({PREFIX.match(line).group(0) for line in lines}) == 1  # type: ignore[union-attr]
    assert rec.message == "1AAA: from=<a@b>\n1BBB: from=<>\n1CCC: from=<c@d>", "the record is left as it was"


def test_exception_text_follows_the_prefixed_lines_as_in_the_stdlib() -> None:
    rec = record("one\ntwo", exc=True)
    text = LineFormatter(PREFIX_FORMAT).format(rec)
    head, _, trace = text.partition("\nTraceback")
    assert [PREFIX.sub("", line) for line in head.split("\n")] == ["one", "two"]
    assert trace.endswith("RuntimeError: boom")


def configured_stderr(level: str, with_pid: bool, code: str) -> str:
    """Standard error of a fresh interpreter that configures logging as the server does, then
    runs `code` (a fresh process: the root logger is global, and pytest's own handlers sit on it)."""
    setup = f"from mailwright import log_format\nimport logging\nlog_format.configure({level!r}, {with_pid})"
    argv = [sys.executable, "-c", f"{setup}\n{code}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stderr


def test_configure_installs_the_line_formatter_on_stderr() -> None:
    err = configured_stderr(
        "info",
        True,
        "q = logging.getLogger('mailwright.queue')\nq.info('1AAA: x\\n1BBB: y')\nq.debug('not at INFO')",
    )
    lines = err.splitlines()
    assert [PREFIX.sub("", line) for line in lines] == ["1AAA: x", "1BBB: y"], lines


def test_an_unknown_level_says_so_and_logs_at_info() -> None:
    err = configured_stderr("verbose", False, "logging.getLogger('mailwright.queue').info('shown')")
    levels = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
    assert f"WARNING mailwright: log level 'verbose' is not one of {levels}" in err
    assert "(fix: MAILWRIGHT_LOG=DEBUG|INFO|WARNING|ERROR|CRITICAL)" in err
    assert err.splitlines()[-1].endswith(" INFO mailwright.queue: shown"), err
