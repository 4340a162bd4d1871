"""The queue writer's log: one line per committed message, gathered over batches into few records.

Each line is what an operator greps for to answer "did it arrive?" (Postfix's smtpd and qmgr lines
in one), keyed by the queue id: `<id>: from=<sender>, size=N, nrcpt=N, client=helo[ip][, tls]
[, auth=user]`. The writer (the prefork master, or the writer thread of one process) adds each
batch's outcomes after it has handed them back, so no 250 waits for its log line.

Lines are held and written as ONE `logging` record (`log_format.LineFormatter` gives each line the
full prefix, so the file reads as if each had been logged alone) once the oldest has waited
`DELAY` seconds, once `MOST` lines are held, or when the writer stops. Why: `logging` is
interpreted Python plus a write to the log; one record per batch of ~3 messages still cost the
master 8 to 10 µs a message under load, about 4 % of the server's CPU (docs/architecture.md).

The sender, HELO name and SASL identity are the client's: when one of them is not printable or
longer than `log_format.MAX_SHOWN`, all three go through `log_format.printable` (escaped,
bounded), so no client character makes a line of its own, rewrites a terminal or reorders what it
shows. The common case costs a `str.isprintable` of each (about 0.2 µs a message), no copy.

Invariants: every line added is logged exactly once, in the order added, by `flush` at the
latest; a line waits at most `DELAY` seconds provided the owner calls `flush_due` at least that
often (`due` tells its next deadline). Below INFO nothing is formatted or held. Not thread-safe:
one owner.

Not responsible for: the log format and handler (`log_format`), when the owner wakes up, the
log lines of sessions (refusals, AUTH, TLS: `net.server`).
"""

from __future__ import annotations

import logging
from typing import Final

from mailwright.log_format import MAX_SHOWN, printable
from mailwright.queue.committer import Outcome

log = logging.getLogger("mailwright.queue")

DELAY: Final = 0.1  # seconds the oldest held line may wait for company
MOST: Final = 1000  # lines per record at most


def _plain(text: str) -> bool:
    """Shown as it is: printable and short (`log_format.printable` would return it unchanged)."""
    return len(text) <= MAX_SHOWN and text.isprintable()


class CommitLog:
    __slots__ = ("_due", "_lines")

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._due = 0.0  # monotonic time by which the held lines must be written

    def add(self, outcomes: list[Outcome], now: float) -> None:
        """Hold a line for each committed message of a batch (`now`: time.monotonic())."""
        if not outcomes or not log.isEnabledFor(logging.INFO):
            return
        lines = self._lines
        if not lines:
            self._due = now + DELAY
        for job, queue_id, _ in outcomes:
            if queue_id is None:
                continue
            env = job.envelope
            sender, helo, user = env.sender, env.helo or "unknown", env.auth_user
            if not (_plain(sender) and _plain(helo) and (user is None or _plain(user))):
                sender, helo = printable(sender), printable(helo)
                user = None if user is None else printable(user)
            tls = ", tls" if env.tls else ""
            auth = f", auth={user}" if user else ""
            lines.append(
                f"{queue_id}: from=<{sender}>, size={job.body.size}, nrcpt={len(env.recipients)},"
                f" client={helo}[{env.client_ip}]{tls}{auth}"
            )
        if len(lines) >= MOST:
            self.flush()

    def due(self) -> float | None:
        """When the held lines must be written (monotonic time), or None if none are held."""
        return self._due if self._lines else None

    def flush_due(self, now: float) -> None:
        if self._lines and now >= self._due:
            self.flush()

    def flush(self) -> None:
        """Write every held line now (the owner calls this when it stops)."""
        if self._lines:
            log.info("\n".join(self._lines))
            self._lines = []
