"""The server log's line format: every line of a record gets the prefix, as in a syslog file.

The server logs to standard error through the standard `logging` package with one format,
`<time> <level> <logger>[<pid>]: <message>`. `LineFormatter` applies that format to each line
of a multi-line message, so a record that carries several lines still reads, and greps, one
line at a time: the queue writer logs all the messages of one committed batch as one record
(one `logging` call per batch instead of one per message: that call is interpreted Python and
cost more per message than the rest of the commit's own Python), and each of its lines names
its queue id with the full prefix, exactly as if it had been logged alone.

`printable` makes a text a client chose (HELO name, envelope address, SASL identity, a stored
header) safe to put into a log line or onto an operator's terminal, as Postfix's printable()
does for its smtpd's log: every character that `str.isprintable` refuses, i.e. C0 and C1
controls (CR, LF, ESC, U+009B CSI), DEL, format characters (the bidi overrides and isolates
U+202A-U+202E and U+2066-U+2069, zero-width characters, the soft hyphen), line and paragraph
separators (U+2028, U+2029), white space other than the ASCII space, surrogates, private-use and
unassigned code points, is written as its escape, `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN` (where
Postfix writes "?", so the value stays recognisable and tells what was there), and the result is
cut at `MAX_SHOWN` characters, marked by "...". Why: a newline gets a forged line the full
prefix from `LineFormatter`; a CR or an escape sequence rewrites what a terminal shows; a bidi
override shows a value, and the rest of its line, reordered. The protocol engine refuses most of
these already (C0, C1, separators in addresses and HELO names; C0 in SASL identities), but an
SMTPUTF8 address may hold format characters and a SASL identity C1 characters or separators, and
the log should not depend on every parser getting that right. What is stored (queue database,
message) keeps the text as received: only what is shown changes. A backslash is not escaped,
so an escape in a shown value may also be the client's own text; that is ambiguous to read, not
unsafe.

Invariants: a message without a newline is formatted exactly as by `logging.Formatter`; the
exception and stack text that `logging` appends to a record are left as the stdlib writes them.
`printable(t)` is `t` itself when `t` is printable and not longer than the limit (one C-level
check: the common case costs no copy), and otherwise holds only printable characters and at
most `limit` of them plus the "..." mark.

`configure` also routes the exceptions Python reports as "ignored" (`sys.unraisablehook`) into
the log as one prefixed line each (`log_unraisable`): a client could otherwise write unprefixed
traceback lines into it with one TLS handshake.

Not responsible for: what is logged (the callers, which pass each client-controlled value through
`printable`), where it goes (`app.run` configures the handler), log levels.
"""

from __future__ import annotations

import logging
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Characters of one client-controlled value in a log line or CLI line at most: more than any
# value the engine accepts takes when printable (a HELO name of 505, a path of 256 octets).
MAX_SHOWN = 512
TRUNCATED = "..."


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int | None = MAX_SHOWN, *, keep: str = "") -> str:
    """`text` safe for one log line or terminal line: each character `str.isprintable` refuses
    (but those in `keep`) as its backslash escape, cut after `limit` characters (None: never)."""
    if text.isprintable() and (limit is None or len(text) <= limit):
        return text
    out: list[str] = []
    size = 0
    for ch in text:
        piece = ch if ch.isprintable() or ch in keep else _escape(ch)
        size += len(piece)
        if limit is not None and size > limit:
            out.append(TRUNCATED)
            break
        out.append(piece)
    return "".join(out)


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
    sys.unraisablehook = log_unraisable
    if not known:
        logging.getLogger("mailwright").warning(
            "log level %r is not one of %s: logging at INFO (fix: MAILWRIGHT_LOG=%s)",
            level, ", ".join(LEVELS), "|".join(LEVELS),
        )  # fmt: skip


def log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """An exception Python cannot raise, as one prefixed log line (`sys.unraisablehook` once
    `configure` ran), its traceback only at DEBUG.

    The stdlib's hook writes "Exception ignored in: ..." and a traceback to standard error, lines
    without the log's prefix. A client makes one on every TLS handshake whose server name (SNI)
    is not ASCII: `ssl` cannot decode it for the server-name callback (`net.tls`) and reports it
    so; the handshake fails, as it should. The object's repr and the exception's text are the
    client's bytes, so both go through `printable`.
    """
    log = logging.getLogger("mailwright")
    exc = unraisable.exc_value
    where = unraisable.err_msg or "Exception ignored in"
    detail = f"{unraisable.exc_type.__name__}: {exc}" if exc is not None else unraisable.exc_type.__name__
    trace = None
    if log.isEnabledFor(logging.DEBUG) and exc is not None:
        trace = (unraisable.exc_type, exc, unraisable.exc_traceback)
    log.warning(
        "%s: %s: %s", printable(where), printable(repr(unraisable.object)), printable(detail), exc_info=trace
    )
