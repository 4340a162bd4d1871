"""The server log's format: one prefixed line per logged line, client text made printable
(mailwright.log_format)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.log_format import MAX_SHOWN, TRUNCATED, LineFormatter, printable

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


# -- printable: a client's text made safe for a log line or a terminal ------------------------


def test_printable_text_is_returned_as_it_is() -> None:
    for text in (
        "alice@example.org",
        "",
        '"a b"@x',
        "%s %d %(x)s",
        "jörg@bücher.example",
        "\\x1b",
        "x" * MAX_SHOWN,
    ):
        assert printable(text) is text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb", "a\\x0ab"),
        ("a\r\nb", "a\\x0d\\x0ab"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("\x00\x7f\t", "\\x00\\x7f\\x09"),
        ("\u009b31m \u0085", "\\x9b31m \\x85"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("\u202eevil\u202c \u2066x\u2069", "\\u202eevil\\u202c \\u2066x\\u2069"),
        ("zero\u200bwidth\u00adsoft\ufeff", "zero\\u200bwidth\\xadsoft\\ufeff"),
        ("wide\u3000\u00a0space", "wide\\u3000\\xa0space"),
        ("\U000e0041\ud800", "\\U000e0041\\ud800"),
    ],
)
def test_printable_escapes_what_is_not(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert shown.isprintable()


def test_printable_bounds_the_length_and_marks_the_cut() -> None:
    assert printable("x" * (MAX_SHOWN + 1)) == "x" * MAX_SHOWN + TRUNCATED
    assert printable("y" * 10_000_000, 20) == "y" * 20 + TRUNCATED
    # Counted in what is shown: an escape is never cut in half.
    cut = printable("\u202e" * 1000, 20)
    assert cut == "\\u202e" * 3 + TRUNCATED
    assert printable("abc", None) == "abc" and printable("a" * 5000, None) == "a" * 5000


def test_printable_keeps_what_it_is_told_to() -> None:
    assert printable("Received: x\tby y\r", None, keep="\t") == "Received: x\tby y\\x0d"


@given(st.text())
def test_printable_output_is_printable_bounded_and_reads_back(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert len(shown) <= MAX_SHOWN + len(TRUNCATED)
    whole = printable(text, None)
    if "\\" not in text:  # a backslash is not escaped: only then is the reading unambiguous
        assert whole.encode("ascii", "backslashreplace").decode("unicode_escape") == text


def test_a_log_record_of_client_text_is_one_prefixed_line() -> None:
    forged = "x\n2026-01-01 00:00:00,000 INFO mailwright.queue[1]: 1AAA: from=<root@example.org>\r\x1b[2K"
    rec = record("NOQUEUE: reject: RCPT from %s", printable(forged))
    (line,) = LineFormatter(PREFIX_FORMAT).format(rec).split("\n")
    assert PREFIX.match(line) and line.isprintable()


def test_an_unraisable_exception_is_one_prefixed_line_its_trace_at_debug() -> None:
    # What ssl reports when a client's TLS server name (SNI) is not ASCII (the e2e test does it
    # over a socket), handed to the hook `configure` installs. UnraisableHookArgs cannot be made
    # from Python; the hook reads only these attributes.
    code = (
        "import sys, types\n"
        "name = b'\\xff\\x1b[2J\\r\\n'\n"
        "try:\n"
        "    name.decode('ascii')\n"
        "except UnicodeDecodeError as exc:\n"
        "    tb = exc.__traceback__\n"
        "    args = types.SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=tb,\n"
        "                                 err_msg=None, object=name)\n"
        "    sys.unraisablehook(args)\n"
    )
    (line,) = configured_stderr("info", True, code).splitlines()
    head = r"\S+ \S+ WARNING mailwright\[\d+\]: Exception ignored in: b'\\xff\\x1b\[2J\\r\\n': "
    assert re.match(head + r"UnicodeDecodeError: 'ascii' codec can't decode byte 0xff", line), line
    lines = configured_stderr("debug", True, code).splitlines()
    assert re.match(head, lines[0]) and lines[1] == "Traceback (most recent call last):", lines
