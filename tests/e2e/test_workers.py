"""The multi-process server as an operator meets it: a master that owns the queue and N SMTP workers.

Real processes, real signals: a worker killed under load is replaced and nothing acknowledged is
lost; its connection places are given back; killing the master takes the workers with it (the port
is free for the next start); SIGTERM stops everything cleanly; an AUTH lockout holds on every worker.
"""

from __future__ import annotations

import os
import signal
import smtplib
import ssl
import threading
import time
import uuid
from pathlib import Path

import spawn

from .conftest import RawSMTP, ServerFactory, log_size, wait_for_log
from .test_durability import RCPT, Load, check_acked, message


def worker_pids(srv: spawn.SpawnedServer) -> list[int]:
    assert srv.proc is not None
    master = srv.proc.pid
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def wait_for_workers(
    srv: spawn.SpawnedServer, count: int, exclude: set[int], timeout: float = 15.0
) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(srv)
        if len(pids) == count and not set(pids) & exclude:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"workers now {worker_pids(srv)}, wanted {count} new ones besides {exclude}")


def gone(pid: int) -> bool:
    """Dead, or a zombie waiting for a reaper this test does not control."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def persistent_client(port: int, client: int, load: Load, stop: threading.Event) -> None:
    """Sends until told to stop; a connection cut by a dying worker is simply retried."""
    sent = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.ehlo("w.test")
                for _ in range(3):
                    marker = f"W-{client}-{sent}-{uuid.uuid4().hex}"
                    msg = message(marker, 800)
                    sent += 1
                    smtp.mail("w@client.test")
                    smtp.rcpt(RCPT)
                    code, text = smtp.data(msg)
                    if code == 250:
                        load.ack(text.decode(), marker, msg)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.01)  # the worker serving us died: connect again


def test_a_killed_worker_is_replaced_and_no_acknowledged_message_is_lost(make_server: ServerFactory) -> None:
    srv = make_server("crash", workers=2)
    first = worker_pids(srv)
    assert len(first) == 2
    load, stop = Load(), threading.Event()
    threads = [
        threading.Thread(target=persistent_client, args=(srv.ports["mx"], c, load, stop)) for c in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.8)
    mark = log_size(srv)
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    line = wait_for_log(srv, f"(pid {victim}) was killed by signal 9", since=mark)
    assert "starting a new one" in line
    now = wait_for_workers(srv, 2, exclude={victim})
    assert first[1] in now, "the other worker kept running"
    time.sleep(0.8)  # the replacement takes its share of the load
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert len(load.acked) > 50
    assert check_acked(srv, load.acked, cli_sample=2) == len(load.acked)
    assert srv.proc is not None and srv.proc.poll() is None, "the master survived"


def test_a_dead_workers_connection_places_are_given_back(make_server: ServerFactory) -> None:
    srv = make_server("places", workers=2, start=False)
    text = srv.config.read_text()
    srv.config.write_text(text.replace("max_connections = 15000", "max_connections = 6"))
    srv.start()
    time.sleep(0.3)  # start() probed the ports; let those connections go
    port = srv.ports["mx"]
    held = [RawSMTP(port) for _ in range(6)]
    assert [c.reply()[0] for c in held] == [220] * 6
    refused = RawSMTP(port)
    assert refused.reply()[0] == 421
    refused.close()
    pids = worker_pids(srv)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # they die holding all six places
    wait_for_workers(srv, 2, exclude=set(pids), timeout=20)
    for client in held:
        client.close()
    again = [RawSMTP(port) for _ in range(6)]
    assert [c.reply()[0] for c in again] == [220] * 6, "the dead workers' places were not given back"
    for client in again:
        client.close()


def test_killing_the_master_takes_the_workers_and_frees_the_port(make_server: ServerFactory) -> None:
    srv = make_server("orphans", workers=2)
    pids = worker_pids(srv)
    srv.kill9()
    deadline = time.monotonic() + 5
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(gone(p) for p in pids), "workers outlived their master"
    srv.start()  # same ports, same queue lock: both free again
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        smtp.sendmail("a@client.test", [RCPT], b"Subject: after\r\n\r\nhi\r\n")
    assert len(srv.queued()) == 1


def test_sigterm_stops_master_and_workers(make_server: ServerFactory) -> None:
    srv = make_server("stop", workers=3)
    pids = worker_pids(srv)
    assert len(pids) == 3
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        smtp.sendmail("a@client.test", [RCPT], b"Subject: one\r\n\r\nhi\r\n")
    idle = RawSMTP(srv.ports["mx"])
    assert idle.reply()[0] == 220
    assert srv.stop() == 0
    code, text = idle.reply()
    assert (code, text[:5]) == (421, "4.3.2"), "idle sessions are told the server is going down"
    assert all(gone(p) for p in pids)
    log = srv.log.read_text()
    assert "mailwright stopped: 1 message(s) committed in 1 transaction(s) since start" in log
    assert "Traceback" not in log


def test_an_auth_lockout_holds_on_every_worker(make_server: ServerFactory) -> None:
    srv = make_server("lockout", workers=2)
    port = srv.ports["submission"]

    def try_auth(password: str) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
            smtp.starttls(context=_context(srv))
            smtp.ehlo("client.test")
            try:
                return smtp.login(spawn.USER, password)[0]
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code

    mark = log_size(srv)
    for n in range(3):  # spawn's config: max_failures = 3
        assert try_auth(f"wrong {n}") in (535, 454)
    # Keep trying the right password until both workers have answered at least once: every one of
    # them must refuse, whichever worker counted the failures.
    refusals = 0
    for _ in range(60):
        assert try_auth(spawn.PASSWORD) == 454
        refusals += 1
        pids = {
            line.split("]")[0].rsplit("[", 1)[1] for line in _log_since(srv, mark) if "locked out" in line
        }
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"only worker(s) {pids} answered in {refusals} tries"


def _context(srv: spawn.SpawnedServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(srv.ca_file))


def _log_since(srv: spawn.SpawnedServer, mark: int) -> list[str]:
    with srv.log.open("rb") as f:
        f.seek(mark)
        return f.read().decode("utf-8", "replace").splitlines()


def test_a_worker_dying_mid_message_leaves_no_temp_file(make_server: ServerFactory) -> None:
    srv = make_server("midway", workers=2)
    spool = srv.queue_db.parent / "spool"
    client = RawSMTP(srv.ports["mx"])
    assert client.reply()[0] == 220
    assert client.cmd("EHLO c.test")[0] == 250
    assert client.cmd("MAIL FROM:<a@client.test>")[0] == 250
    assert client.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
    assert client.cmd("DATA")[0] == 354
    client.send(b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 200)
    deadline = time.monotonic() + 10
    while not list(spool.glob("*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.02)
    temps = list(spool.glob("*.tmp"))
    assert len(temps) == 1, "a body over 64 KiB is spooled to a temp file"
    owner = int(temps[0].name.split("-")[0])
    assert owner in worker_pids(srv)
    os.kill(owner, signal.SIGKILL)
    wait_for_workers(srv, 2, exclude={owner})
    assert not list(spool.glob("*.tmp")), "the dead worker's temp file was left behind"
    client.close()


def test_a_reload_during_start_up_kills_no_worker(make_server: ServerFactory) -> None:
    srv = make_server("early", workers=2, start=False)
    sent = threading.Event()

    def hup_as_soon_as_it_listens() -> None:
        # The master logs "listening" just before it forks: its workers are still starting.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if srv.proc is not None and srv.log.exists() and "listening on" in srv.log.read_text():
                srv.proc.send_signal(signal.SIGHUP)
                sent.set()
                return
            time.sleep(0.0005)

    helper = threading.Thread(target=hup_as_soon_as_it_listens)
    helper.start()
    srv.start()
    helper.join(10)
    assert sent.is_set()
    wait_for_log(srv, "TLS certificate reloaded", count=2)
    wait_for_log(srv, "mailwright ready")
    log = srv.log.read_text()
    assert "killed by signal" not in log, log
    assert len(worker_pids(srv)) == 2
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        smtp.sendmail("a@client.test", [RCPT], b"Subject: after the reload\r\n\r\nhi\r\n")
