"""The server log's line format: every line of a record gets the prefix, as in a syslog file.

The server logs to standard error through the standard `logging` package with one format,
`<time> <level> <logger>[<pid>]: <message>`. `LineFormatter` applies that format to each line
of a multi-line message, so a record that carries several lines still reads, and greps, one
line at a time: the queue writer logs all the messages of one committed batch as one record
(one `logging` call per batch instead of one per message: that call is interpreted Python and
cost more per message than the rest of the commit's own Python), and each of its lines names
its queue id with the full prefix, exactly as if it had been logged alone.

Invariants: a message without a newline is formatted exactly as by `logging.Formatter`; the
exception and stack text that `logging` appends to a record are left as the stdlib writes them.

Not responsible for: what is logged (the callers), where it goes (`app.run` configures the
handler), log levels.
"""

from __future__ import annotations

import logging

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LineFormatter(logging.Formatter):
    """`logging.Formatter` for `prefix + message` that gives each line of the message the prefix."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix + "%(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if "\n" not in message:
            return super().formatMessage(record)
        # The prefix once (the format ends with the message), then one line per line.
        record.message = ""
        try:
            prefix = super().formatMessage(record)
        finally:
            record.message = message
        return prefix + message.replace("\n", "\n" + prefix)


def configure(level: str, with_pid: bool) -> None:
    """The server's logging: standard error, `level`, one prefixed line per logged line.

    With several processes each line names its process, as Postfix's "smtpd[1234]" does.
    """
    # The logging HOWTO's "Optimization" switches for what the format never shows (caller,
    # thread, multiprocessing name): lines are written for every message, so their cost is
    # throughput.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    name = "%(name)s[%(process)d]" if with_pid else "%(name)s"
    handler = logging.StreamHandler()
    handler.setFormatter(LineFormatter(f"%(asctime)s %(levelname)s {name}: "))
    known = level.upper() in LEVELS
    logging.basicConfig(level=level.upper() if known else "INFO", handlers=[handler])
    if not known:
        logging.getLogger("mailwright").warning(
            "log level %r is not one of %s: logging at INFO (fix: MAILWRIGHT_LOG=%s)",
            level, ", ".join(LEVELS), "|".join(LEVELS),
        )  # fmt: skip
