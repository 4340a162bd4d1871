"""The open-file limit against `limits.max_connections`, on a real `mailwright serve` (limits.open_files).

A server whose processes run out of descriptors cannot accept: the client sits in the listen
queue with no greeting and the log says nothing. So the server raises its soft RLIMIT_NOFILE at
start-up to what the cap needs (the master before it forks, so the workers inherit it), and when
the hard limit is too low it serves fewer connections, refuses the rest with 421 4.7.0, and logs
the fix. Each test starts the server with a chosen limit (set in the child only) and opens more
connections at once than that limit would hold, checking that every one is answered.
"""

from __future__ import annotations

import re
import resource
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import spawn

from .conftest import ServerFactory
from .test_workers import worker_pids

CAP = 1000
WORKERS = 2
NEED = CAP + (WORKERS - 1) + 128  # limits.open_files: the cap, the overshoot across workers, RESERVE
RCPT = f"bob@{spawn.LOCAL_DOMAIN}"


def soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files line for {pid}")


def configured(make_server: ServerFactory, name: str) -> spawn.SpawnedServer:
    srv = make_server(name, start=False, workers=WORKERS)
    text = srv.config.read_text()
    text = re.sub(r"(?m)^max_connections = \d+$", f"max_connections = {CAP}", text)
    text = re.sub(r"(?m)^max_connections_per_ip = \d+$", f"max_connections_per_ip = {CAP}", text)
    srv.config.write_text(text)
    return srv


def first_replies(port: int, count: int) -> list[bytes]:
    """Open `count` connections at once, then read each one's first reply (b"" if none in 5 s)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    replies = []
    try:
        for s in socks:
            try:
                replies.append(s.recv(512))
            except TimeoutError:
                replies.append(b"")
    finally:
        for s in socks:
            s.close()
    return replies


@pytest.fixture
def hard_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NEED + 700:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {NEED + 700}")
    if soft != resource.RLIM_INFINITY and soft < 700:
        resource.setrlimit(resource.RLIMIT_NOFILE, (700, hard))  # this process's own 600 clients
    return hard


def test_the_soft_limit_is_raised_to_what_the_cap_needs(make_server: ServerFactory, hard_limit: int) -> None:
    srv = configured(make_server, "raise")
    srv.start(nofile=(256, hard_limit))
    said = f"open-file limit raised from 256 to {NEED} for limits.max_connections = {CAP}"
    assert said in srv.log.read_text()
    assert srv.proc is not None
    pids = [srv.proc.pid, *worker_pids(srv)]
    assert len(pids) == 1 + WORKERS
    assert [soft_nofile(pid) for pid in pids] == [NEED] * len(pids)

    # More connections at once than the old limit held in one worker: every one is greeted.
    replies = first_replies(srv.ports["mx"], 600)
    assert [r[:4] for r in replies] == [b"220 "] * 600
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        assert smtp.sendmail("a@client.test", [RCPT], b"Subject: after\r\n\r\nhi\r\n") == {}
    assert "Traceback" not in srv.log.read_text()


def test_a_hard_limit_below_the_cap_serves_fewer_and_says_how_to_fix_it(
    make_server: ServerFactory, hard_limit: int
) -> None:
    srv = configured(make_server, "fit")
    srv.start(nofile=(200, 200))
    fitted = 200 - 128 - (WORKERS - 1)
    log = srv.log.read_text()
    assert (
        f"limits.max_connections = {CAP} needs {NEED} open files per process, but this process may "
        f"open only 200 (its hard limit is 200): serving at most {fitted} connections, the rest get "
        f"421 4.7.0 (fix: raise the limit to {NEED}, e.g. `ulimit -n {NEED}` in the shell or "
        f"LimitNOFILE={NEED} in the systemd unit, or lower limits.max_connections)"
    ) in log, log[-2000:]

    # Twice what the limit holds: no connection waits unanswered in the listen queue.
    replies = first_replies(srv.ports["mx"], 2 * fitted)
    greeted = sum(r.startswith(b"220 ") for r in replies)
    refused = sum(r.startswith(b"421 4.7.0 ") for r in replies)
    assert greeted + refused == len(replies), [r for r in replies if not r.startswith((b"220 ", b"421 "))][:3]
    assert fitted <= greeted <= fitted + WORKERS - 1  # the cap's overshoot across workers
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        assert smtp.sendmail("a@client.test", [RCPT], b"Subject: after\r\n\r\nhi\r\n") == {}
    assert "Traceback" not in srv.log.read_text()


def test_config_check_says_before_the_start_that_the_limit_is_too_low(
    make_server: ServerFactory, hard_limit: int
) -> None:
    """`config check` reports the same shortfall the server would log, from the shell's limits."""
    srv = configured(make_server, "check")

    def check(nofile: tuple[int, int]) -> list[str]:
        res = subprocess.run(
            [sys.executable, "-m", "mailwright.cli.main", "config", "check", "--config", str(srv.config)],
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile),
        )
        assert res.returncode == 0 and res.stderr == "", res
        return [line for line in res.stdout.splitlines() if "open files" in line]

    fitted = 200 - 128 - (WORKERS - 1)
    assert check((200, 200)) == [
        f"warning: limits.max_connections = {CAP} needs {NEED} open files per process, but a server "
        f"started from this shell may open only 200 (its hard limit is 200): serving at most {fitted} "
        f"connections, the rest get 421 4.7.0 (fix: raise the limit to {NEED}, e.g. `ulimit -n {NEED}` "
        f"in the shell or LimitNOFILE={NEED} in the systemd unit, or lower limits.max_connections)"
    ]
    assert check((256, hard_limit)) == []  # a soft limit the server raises itself is no problem
