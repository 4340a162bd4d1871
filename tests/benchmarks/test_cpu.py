"""`bench.cpu`: a server's CPU time counts the children it reaped, and the machine's shares add up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.cpu import MachineCPU, tree_cpu_seconds

# Waits for its go file, so the first reading comes before the work, then burns 0.6 s of CPU.
BURN = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
end = time.process_time() + 0.6
while time.process_time() < end:
    pass
"""


def test_a_reaped_child_still_counts(tmp_path: Path) -> None:
    """Postfix's smtpd processes exit during a run, and their parent reaps them: what they used
    must still be in the parent's tree, which then holds only the parent."""
    go, reaped = tmp_path / "go", tmp_path / "reaped"
    script = '"$0" -c "$1" "$2"; touch "$3"; sleep 30; true'  # bash has waited for the burner at the touch
    argv = ["bash", "-c", script, sys.executable, BURN, str(go), str(reaped)]
    parent = subprocess.Popen(argv, start_new_session=True)
    try:
        before = tree_cpu_seconds(parent.pid)
        go.touch()
        deadline = time.monotonic() + 30
        while not reaped.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reaped.exists()
        assert tree_cpu_seconds(parent.pid) - before >= 0.5
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # bash and its sleep
        parent.wait()


def test_machine_shares_add_up_and_see_work() -> None:
    """The machine's user share holds at least this process's own user time.

    The work is pure arithmetic, with the clock read only every 100,000 steps: a loop around
    `time.process_time()` spends most of its time in the kernel (that clock is a system call),
    which showed up as a 10 % user share on a loaded CI machine."""
    machine = MachineCPU()
    start, own = time.monotonic(), os.times().user
    x = 0
    while os.times().user - own < 0.3:
        for i in range(100_000):
            x ^= i
    wall, own = time.monotonic() - start, os.times().user - own
    shares = machine.split()
    assert set(shares) == {"user", "system", "interrupts", "idle", "steal"}
    assert abs(sum(shares.values()) - 1) < 1e-9
    cores = os.cpu_count() or 1
    mine = own / (wall * cores)  # this process's share of all cores' time
    slack = 3 / (os.sysconf("SC_CLK_TCK") * wall * cores)  # both are counted in clock ticks
    assert shares["user"] >= mine - slack, (shares, mine)
