"""The end-to-end benchmark: the acceptance load submitted to a relaying server, until its queue is empty.

Postfix's smtp-source sends N messages of 1 KB from S parallel sessions, a new connection per
message, to the server under test, which accepts each into its durable queue and relays it to an
smtp-sink (C, stores nothing) on another loopback port.  Throughput is N divided by the time from
the start of smtp-source to the moment the server's queue is empty, and every message must have
been delivered by the server's own record (for Postfix: one `status=sent` log line each, none
deferred or bounced), or the run is an error.

mailwright joins when it delivers (it has no delivery yet); the issue's target is at least 4x
Postfix here.  Until then Postfix's figure is the one that target will be measured against.

Not responsible for: starting the servers (`targets.start_postfix_relay`), acceptance-only figures
(`acceptance`), formatting.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

from bench.acceptance import smtp_source_argv
from bench.targets import RelayTarget

_POLL = 0.02  # seconds between looks at the queue once smtp-source is done


def run(target: RelayTarget, total: int, sessions: int, timeout: float) -> dict[str, Any]:
    argv = smtp_source_argv(target.port, sessions, total, keep=False)
    result: dict[str, Any] = {"target": target.name, "messages": total, "sessions": sessions, "argv": argv}
    start = time.perf_counter()
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**result, "error": f"smtp-source timed out after {timeout:.0f}s"}
    result["accept_seconds"] = time.perf_counter() - start
    if res.returncode != 0:
        return {**result, "error": f"smtp-source exit {res.returncode}: {res.stderr.strip()[-500:]}"}
    deadline = time.monotonic() + timeout
    while (left := target.queued()) > 0:
        if time.monotonic() > deadline:
            return {**result, "error": f"{left} messages still queued {timeout:.0f}s after submission"}
        time.sleep(_POLL)
    seconds = time.perf_counter() - start
    # The log is written by another process (Postfix's postlogd): give its last lines a moment.
    settle = time.monotonic() + 10
    while sum((outcomes := target.delivered()).values()) < total and time.monotonic() < settle:
        time.sleep(0.1)
    result.update(seconds=seconds, outcomes=outcomes)
    if outcomes.get("sent", 0) != total or len(outcomes) != 1:
        said = f"expected {total} messages sent and nothing else, the log says {outcomes}"
        return {**result, "error": said}
    result["msg_per_s"] = total / seconds
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry from repeated runs: the median msg/s, every run kept."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "runs": runs}
    return {
        **runs[0],
        "msg_per_s": statistics.median(r["msg_per_s"] for r in runs),
        "msg_per_s_runs": [r["msg_per_s"] for r in runs],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "runs": runs,
    }
