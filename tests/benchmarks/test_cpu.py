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
    machine = MachineCPU()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    shares = machine.split()
    assert set(shares) == {"user", "system", "interrupts", "idle", "steal"}
    assert abs(sum(shares.values()) - 1) < 1e-9
    assert shares["user"] > 0.1, shares
