"""The concurrency benchmark: hold many idle SMTP connections open, measure memory and greeting latency.

Against a fresh server: read its VmRSS (summed over its processes: mailwright's master and workers);
open `count` connections from the source addresses
127.0.0.2 .. 127.0.0.11 (so no single address runs short of ephemeral ports) and read each one's
220 greeting, so the server has really accepted and greeted all of them; with all of them open,
read VmRSS again and time `samples` new connections from 127.0.0.1 one after another (connect to
complete greeting); then close everything.

The suite must have raised RLIMIT_NOFILE first (see `raise_nofile`): this process holds one file
descriptor per connection.

Not responsible for: Postfix, whose smtpd is one process per connection capped by
default_process_limit (100), so 10,000 idle connections say nothing about it (the suite notes this).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from typing import Any

from bench.acceptance import percentile
from bench.smtp_client import greeting
from bench.targets import Target, tree_status_kib

SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]


def raise_nofile(need: int) -> int:
    """Raise this process's (and so its children's) open-file limit to at least `need` if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    want = max(need, soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))  # root may raise hard
        return want
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _open_all(port: int, count: int, timeout: float) -> tuple[list[asyncio.StreamWriter], list[str]]:
    writers: list[asyncio.StreamWriter] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(200)  # bounded connect burst: the listen backlog is 1024 for both peers

    async def one(i: int) -> None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(SOURCES[i % len(SOURCES)], 0)),
                    timeout,
                )
                writers.append(writer)
                line = await asyncio.wait_for(reader.readline(), timeout)
                if not line.startswith(b"220"):
                    errors.append(f"greeting {line[:80]!r}")
            except (OSError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(count)))
    return writers, errors


async def _run(target: Target, count: int, samples: int, timeout: float) -> dict[str, Any]:
    assert target.pid is not None
    result: dict[str, Any] = {"target": target.name, "connections": count}
    await asyncio.sleep(0.5)  # let the fresh server settle before the baseline
    result["rss_before_kib"] = tree_status_kib(target.pid, "VmRSS")
    start = time.perf_counter()
    writers, errors = await _open_all(target.port, count, timeout)
    result["open_seconds"] = time.perf_counter() - start
    try:
        result["open_errors"] = len(errors)
        result["open_error_examples"] = errors[:5]
        await asyncio.sleep(0.5)
        result["rss_kib"] = tree_status_kib(target.pid, "VmRSS")
        durations: list[float] = []
        greet_errors: list[str] = []
        for _ in range(samples):
            try:
                durations.append(await asyncio.to_thread(greeting, "127.0.0.1", target.port, timeout))
            except (OSError, RuntimeError) as exc:
                greet_errors.append(f"{type(exc).__name__}: {exc}")
        result["greeting_p50_ms"] = _ms(percentile(durations, 50))
        result["greeting_p99_ms"] = _ms(percentile(durations, 99))
        result["greeting_samples"] = len(durations)
        result["greeting_errors"] = greet_errors[:5]
        result["rss_per_connection_kib"] = (result["rss_kib"] - result["rss_before_kib"]) / max(
            1, count - len(errors)
        )
        if errors or greet_errors:
            result["error"] = f"{len(errors)} connections and {len(greet_errors)} greetings failed"
    finally:
        for w in writers:
            w.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(w.wait_closed() for w in writers)), 30)
    return result


def run(target: Target, count: int, samples: int, timeout: float) -> dict[str, Any]:
    return asyncio.run(asyncio.wait_for(_run(target, count, samples, timeout), timeout * 4))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
