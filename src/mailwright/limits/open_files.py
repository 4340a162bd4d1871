"""The open-file budget: make RLIMIT_NOFILE hold `limits.max_connections`, or fit the cap to it.

Every connection is a descriptor. A process that runs out of them cannot `accept` the next
connection at all: the client waits in the kernel's listen queue with no greeting, and no SMTP
reply can say why (seen before this module: soft limit 200, cap 2,000, 110 of 400 connections
never greeted and nothing in the log). Login shells and systemd start services with a soft limit
of 1,024, which the default cap of 1,000 does not fit once the server's own files are counted.
So, as HAProxy derives its `ulimit-n` from `maxconn`, the server raises its soft limit at start-up
to what the cap needs, up to the hard limit; when even the hard limit is too low, it serves fewer
connections (each one past the cap gets the cap's 421 4.7.0, which needs a descriptor for the
reply) and says so, with the fix.

Invariants: `need` counts, per process, the cap plus `workers - 1` (the cap's overshoot across
workers, see `limits.connections`) plus `RESERVE` (listeners, the queue's database, WAL and
lock, the log, the channel to the master, the event loop's own, and room for spool files of
bodies over the inline limit; a spool file that still finds no descriptor is a 451 4.3.0, not
a hang). The soft limit is only ever raised, never lowered; the hard limit is never changed.
Children forked or spawned afterwards inherit the limit, so one call before the workers start
covers them all.

Not responsible for: enforcing the cap (`limits.connections`), what a refused client is told
(`net.server`), or the operating system's own ceilings (fs.nr_open, fs.file-max), beyond not
suggesting a limit above fs.nr_open.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Final

RESERVE: Final = 128


@dataclass(frozen=True)
class FileBudget:
    """What `fit_open_files` found and did; None stands for no limit."""

    need: int  # descriptors the configured cap needs in one process
    soft_before: int | None
    soft: int | None  # the soft limit now
    hard: int | None
    max_connections: int  # the cap this limit holds: the configured one, or less

    @property
    def raised(self) -> bool:
        return self.soft != self.soft_before

    @property
    def fits(self) -> bool:
        return self.soft is None or self.soft >= self.need

    def shortfall(self, configured: int, who: str = "this process") -> str:
        """What an operator is told when the limit does not fit `configured` connections, with the fix."""
        need = self.need
        hard = "unlimited" if self.hard is None else self.hard
        ceiling = system_ceiling()
        if ceiling is not None and need > ceiling:
            # No ulimit can go past fs.nr_open: raising the limit is no fix.
            fix = (
                f"lower limits.max_connections: this system lets no process open more than {ceiling} "
                "files (fs.nr_open)"
            )
        else:
            fix = (
                f"raise the limit to {need}, e.g. `ulimit -n {need}` in the shell or LimitNOFILE={need} "
                "in the systemd unit, or lower limits.max_connections"
            )
        return (
            f"limits.max_connections = {configured} needs {need} open files per process, but {who} "
            f"may open only {self.soft} (its hard limit is {hard}): serving at most "
            f"{self.max_connections} connections, the rest get 421 4.7.0 (fix: {fix})"
        )


def system_ceiling() -> int | None:
    """The most open files the kernel lets any process have (Linux's fs.nr_open), or None."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _finite(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else value


def fit_open_files(max_connections: int, workers: int) -> FileBudget:
    """Raise this process's soft RLIMIT_NOFILE towards what `max_connections` needs; return the
    cap the resulting limit holds."""
    overshoot = max(workers, 1) - 1
    need = max_connections + overshoot + RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before, ceiling = _finite(soft), _finite(hard)
    now = before
    if before is not None and before < need:
        want = need if ceiling is None else min(need, ceiling)
        if want > before:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                now = want
            except (ValueError, OSError):
                pass  # a container may refuse even within the hard limit (fs.nr_open is lower)
    cap = max_connections if now is None or now >= need else max(1, now - RESERVE - overshoot)
    return FileBudget(need, before, now, ceiling, cap)
