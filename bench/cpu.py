"""CPU time during a benchmark run: the server's processes and the machine as a whole.

`tree_cpu_seconds(pid)` is the user + system time of a server's process tree: every live process
under `pid` (mailwright's master and workers, Postfix's master and its daemons) plus the time of
the children they have reaped, so a Postfix smtpd that exits during a run still counts.  A
difference of two readings is the server's CPU for what happened between them, whichever of
its processes did the work.

`MachineCPU` reads the first line of /proc/stat before and after a run and splits the elapsed
ticks of all cores into user (with nice), system, interrupts (hard and soft: most of loopback
TCP's receive path runs there), idle (with I/O wait) and steal.  It answers "was the machine
saturated while this target ran?": a target that leaves CPU time idle is limited by something
else (its fsyncs and hand-offs, or one process doing all the work), and speeds up less than the
host does.

Why: on two cores shared with the load generator the throughput ratio against Postfix moves with
the host (docs/performance.md, "Runs 12 to 14"); CPU per message and idle share say why.

Not responsible for: the load generator's own CPU (it is not in the server's tree, and is in the
machine's figures), per-thread detail, or anything outside Linux's /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.targets import process_tree

_TICKS = os.sysconf("SC_CLK_TCK")
SHARES = ("user", "system", "interrupts", "idle", "steal")  # the keys of `MachineCPU.split`, in order
# /proc/PID/stat after the ")" that ends the command name: utime, stime, cutime, cstime.
_UTIME, _STIME, _CUTIME, _CSTIME = 11, 12, 13, 14


def tree_cpu_seconds(pid: int) -> float:
    """User + system seconds of `pid`'s process tree, children it reaped included."""
    ticks = 0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited between listing and reading; its parent's cutime has it now
        ticks += sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))
    return ticks / _TICKS


def _machine_ticks() -> list[int]:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


class MachineCPU:
    """Shares of all cores' time between construction and `split()`."""

    def __init__(self) -> None:
        self._before = _machine_ticks()

    def split(self) -> dict[str, float]:
        user, nice, system, idle, iowait, irq, softirq, steal = (
            b - a for a, b in zip(self._before, _machine_ticks(), strict=True)
        )
        parts = (user + nice, system, irq + softirq, idle + iowait, steal)
        total = max(1, sum(parts))
        return {name: part / total for name, part in zip(SHARES, parts, strict=True)}
