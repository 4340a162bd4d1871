"""Hostile clients against a running server: it must stay healthy, bounded and correct.

Each test attacks a real `mailwright serve` process over loopback (over-long lines, reply-less
pipelining floods, absurd BDAT sizes, slowloris, TLS abuse, connection resets, smuggling, the
size limit, STARTTLS pipelined behind a message) and then checks that the process is alive,
logged no traceback, and that a fresh client still gets its 220 and can queue a message.  Memory
is read from /proc/PID/status (VmHWM, the peak RSS, against VmRSS before the attack, so a short
spike is not missed) and file descriptors from /proc/PID/fd.

The bounds checked are the ones promised by mailwright.protocol.server and mailwright.net.server:
command lines are discarded past their limit and answered 500 5.5.2; at most MAX_PENDING unparsed
octets are held and reading pauses while the peer does not read replies; past 100 junk commands
(NOOP, RSET, VRFY, HELP) each counts as an error and 20 errors end the session with 421 4.7.0;
idle time-outs answer 421 4.4.2; DATA ends only at a real <CRLF>.<CRLF> (bare LF refuses the
message with 550 5.6.0); the size limit is inclusive and the next octet gets 552 5.3.4.

Not covered here: plain time-outs and connection caps (test_timeouts.py), crash safety
(test_durability.py), protocol rules in isolation (tests/protocol).
"""

from __future__ import annotations

import contextlib
import os
import select
import smtplib
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest

import spawn

from .conftest import QUEUED, RawSMTP, ServerFactory, stored_body

MiB = 1024 * 1024
RCPT = "bob@mx.test"


# -- observing the server process -----------------------------------------------------------


def _status_kb(srv: spawn.SpawnedServer, key: str) -> int:
    assert srv.proc is not None
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{srv.proc.pid}/status")


def rss(srv: spawn.SpawnedServer) -> int:
    """Current resident set size in bytes."""
    return _status_kb(srv, "VmRSS") * 1024


def peak_rss(srv: spawn.SpawnedServer) -> int:
    """Peak resident set size in bytes since the process started."""
    return _status_kb(srv, "VmHWM") * 1024


def fd_count(srv: spawn.SpawnedServer) -> int:
    assert srv.proc is not None
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def assert_healthy(srv: spawn.SpawnedServer) -> str:
    """The process lives, logged no traceback, greets a new client and queues its message."""
    assert srv.proc is not None and srv.proc.poll() is None, "server process died"
    client = RawSMTP(srv.ports["mx"])
    try:
        code, text = client.reply()
        assert code == 220, (code, text)
        assert client.cmd("EHLO healthy.test")[0] == 250
        assert client.cmd("MAIL FROM:<check@client.test>")[0] == 250
        assert client.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
        assert client.cmd("DATA")[0] == 354
        client.send(b"Subject: still alive\r\n\r\nhello\r\n.\r\n")
        code, text = client.reply()
        match = QUEUED.search(text)
        assert code == 250 and match, (code, text)
        assert client.cmd("QUIT")[0] == 221
    finally:
        client.close()
    assert match.group(1) in srv.queued()
    log = srv.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    return match.group(1)


def drain_until_closed(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the peer closes (True) or `timeout` passes (False); returns what was read."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, got
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        except TimeoutError:
            return False, got
        if not chunk:
            return True, got
        got += chunk


def into_data(client: RawSMTP, verb: str = "DATA") -> None:
    assert client.cmd("MAIL FROM:<hostile@client.test>")[0] == 250
    assert client.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
    if verb == "DATA":
        assert client.cmd("DATA")[0] == 354


def greeted(srv: spawn.SpawnedServer, port: str = "mx") -> RawSMTP:
    client = RawSMTP(srv.ports[port])
    assert client.reply()[0] == 220
    assert client.cmd("EHLO hostile.test")[0] == 250
    return client


# -- 1. a 10 MB command line ----------------------------------------------------------------


def test_ten_megabyte_command_line_is_refused_in_bounded_memory(make_server: ServerFactory) -> None:
    srv = make_server("longline")
    assert_healthy(srv)
    before = rss(srv)
    client = greeted(srv)
    chunk = b"A" * MiB
    for _ in range(10):
        client.send(chunk)
    client.send(b"\r\n")
    try:
        code, text = client.reply()
    except ConnectionError:
        code, text = 0, "closed"  # closing is an allowed answer too
    if code:
        assert (code, text[:5]) == (500, "5.5.2"), (code, text)
        # Exactly one error for the whole line, and the session goes on.
        assert client.cmd("NOOP")[0] == 250
        assert client.cmd("QUIT")[0] == 221
    client.close()
    growth = peak_rss(srv) - before
    assert growth < 20 * MiB, f"RSS grew by {growth / MiB:.1f} MiB for one 10 MB line"
    assert_healthy(srv)


# -- 2. pipelined flood, replies never read -------------------------------------------------


def test_command_flood_without_reading_replies_is_backpressured(make_server: ServerFactory) -> None:
    # Recipients of one transaction, not NOOPs or EHLOs: past the junk-command limit those are cut
    # off (the test below), and this one is about the replies nobody reads. A transaction may hold
    # as many recipients as max_recipients allows, so this flood is one a client may send.
    srv = make_server("flood", limits="max_recipients = 10000000")
    assert_healthy(srv)
    before = rss(srv)
    sock = socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # we never read: keep this small
    rcpt = b"RCPT TO:<u@mx.test>\r\n"
    flood = b"EHLO flood.test\r\nMAIL FROM:<f@flood.test>\r\n" + rcpt * 100_000
    sock.settimeout(5.0)
    try:
        sock.sendall(flood)
        flood_sent = True
    except TimeoutError:
        flood_sent = False  # the server stopped reading before all of it: backpressure already
    time.sleep(0.5)  # let the server chew on what it has
    growth = peak_rss(srv) - before
    assert growth < 50 * MiB, f"RSS grew by {growth / MiB:.1f} MiB for 100,000 unread RCPTs"

    # Keep pushing: if the server honours backpressure, our send blocks long before 64 MB,
    # however large the kernel's socket buffers are.
    sent = len(flood) if flood_sent else 0
    blocked = not flood_sent
    burst = rcpt * 20_000
    sock.setblocking(False)
    deadline = time.monotonic() + 15
    while not blocked and sent < 64 * MiB and time.monotonic() < deadline:
        try:
            sent += sock.send(burst)
        except BlockingIOError:
            # Full: wait a little in case the server is merely slow, then call it blocked.
            _, writable, _ = select.select([], [sock], [], 1.0)
            blocked = not writable
    assert blocked, f"sent {sent / MiB:.1f} MiB of RCPTs without the server ever pushing back"
    growth = peak_rss(srv) - before
    assert growth < 50 * MiB, f"RSS grew by {growth / MiB:.1f} MiB under a reply-less flood"
    sock.close()
    assert_healthy(srv)


def test_a_noop_flood_ends_at_the_junk_command_limit(make_server: ServerFactory) -> None:
    # Postfix's smtpd_junk_command_limit (100) and hard error limit (20): every reply restarts
    # the idle time-out, so keepalives alone must not hold a connection for ever.
    srv = make_server("junk")
    sock = socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=10)
    sock.sendall(b"EHLO junk.test\r\n" + b"NOOP\r\n" * 200)
    closed, data = drain_until_closed(sock, 10.0)
    sock.close()
    assert closed, data[-200:]
    finals = [line[:9] for line in data.decode().split("\r\n") if line[3:4] == " "]
    assert finals == ["220 mx.te", "250 CHUNK"] + ["250 2.0.0"] * 120 + ["421 4.7.0"], finals[-3:]
    assert_healthy(srv)


def test_a_recipient_flood_past_the_limit_ends_at_the_overshoot_limit(make_server: ServerFactory) -> None:
    # Postfix's smtpd_recipient_overshoot_limit (1000): each RCPT past max_recipients gets 452
    # (the client sends them again in a new transaction), and past 1000 of them each also counts
    # as an error. Before, such RCPTs were answered for ever and held the connection.
    srv = make_server("overshoot", limits="max_recipients = 5")
    sock = socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=10)
    rcpts = b"".join(b"RCPT TO:<r%d@mx.test>\r\n" % i for i in range(1100))
    sock.sendall(b"EHLO flood.test\r\nMAIL FROM:<s@client.test>\r\n" + rcpts)
    closed, data = drain_until_closed(sock, 10.0)
    sock.close()
    assert closed, data[-200:]
    finals = [line[:9] for line in data.decode().split("\r\n") if line[3:4] == " "]
    expected = ["220 mx.te", "250 CHUNK", "250 2.1.0"] + ["250 2.1.5"] * 5 + ["452 4.5.3"] * 1020
    assert finals == [*expected, "421 4.7.0"], (len(finals), finals[-3:])
    assert_healthy(srv)


# -- 3. BDAT with an absurd size ------------------------------------------------------------


def test_bdat_with_huge_declared_size_then_close_queues_nothing(make_server: ServerFactory) -> None:
    srv = make_server("bdat")
    first = assert_healthy(srv)
    before = rss(srv)
    for size in ("10000000000", "9" * 400):
        client = greeted(srv)
        into_data(client, verb="BDAT")
        client.send(f"BDAT {size} LAST\r\n".encode())
        if len(size) > 15:
            # No chunk is that large: no size at all, so the server cannot tell the chunk from
            # commands and ends the session (521); the body then meets a closed socket.
            assert client.reply()[0] == 521
        with contextlib.suppress(OSError):
            client.send(b"Subject: never ends\r\n\r\n" + b"x" * (2 * MiB))  # enough to spill to disk
        time.sleep(0.2)
        client.close()
    spool = srv.queue_db.parent / "spool"
    deadline = time.monotonic() + 5
    while any(spool.glob("*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(spool.glob("*.tmp")), f"abandoned BDAT left spool files: {list(spool.iterdir())}"
    assert set(srv.queued()) == {first}, "an unfinished BDAT message was queued"
    assert peak_rss(srv) - before < 20 * MiB
    assert_healthy(srv)


# -- 4. slowloris ---------------------------------------------------------------------------


def test_slowloris_connections_time_out_while_others_are_served(make_server: ServerFactory) -> None:
    srv = make_server("slowloris", limits="command_timeout = 2.0\ndata_timeout = 2.0")
    time.sleep(0.3)
    clients = [RawSMTP(srv.ports["mx"]) for _ in range(50)]
    for client in clients:
        assert client.reply()[0] == 220
    start = time.monotonic()
    outcome: dict[int, tuple[float, bytes]] = {}  # index -> (seconds, what the server sent)
    served_meanwhile = False
    tick = 0
    while len(outcome) < len(clients) and time.monotonic() - start < 6.0:
        for i, client in enumerate(clients):
            if i in outcome:
                continue
            with contextlib.suppress(OSError):
                client.sock.sendall(b"X")  # never a CRLF: the command never completes
        tick += 1
        if tick == 2:
            assert_healthy(srv)
            served_meanwhile = True
        pause_until = time.monotonic() + 0.5
        while (left := pause_until - time.monotonic()) > 0:
            live = [c.sock for i, c in enumerate(clients) if i not in outcome]
            readable, _, _ = select.select(live, [], [], left)
            for sock in readable:
                i = next(j for j, c in enumerate(clients) if c.sock is sock)
                closed, data = drain_until_closed(sock, 1.0)
                outcome[i] = (time.monotonic() - start, data if closed else data + b"<open>")
    for client in clients:
        client.close()
    assert served_meanwhile
    still_open = [i for i in range(len(clients)) if i not in outcome]
    assert not still_open, (
        f"{len(still_open)} of 50 slowloris connections, sending a byte every 0.5 s and never a "
        "full command, were still open 6 s after the start with command_timeout = 2 s"
    )
    for i, (seconds, data) in outcome.items():
        assert data.startswith(b"421 4.4.2") and not data.endswith(b"<open>"), (i, data)
        assert seconds < 4.5, (i, seconds)
    assert_healthy(srv)


# -- 5. TLS abuse ---------------------------------------------------------------------------


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello, produced without a socket."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="mx.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100
    return hello


def submit_over_tls(srv: spawn.SpawnedServer, *, implicit: bool) -> None:
    ctx = ssl.create_default_context(cafile=str(srv.ca_file))
    smtp: smtplib.SMTP
    if implicit:
        smtp = smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], context=ctx, timeout=10)
    else:
        smtp = smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=10)
    with smtp:
        if not implicit:
            smtp.starttls(context=ctx)
        smtp.login(spawn.USER, spawn.PASSWORD)
        refused = smtp.sendmail(spawn.USER, [RCPT], b"Subject: tls\r\n\r\nfine\r\n")
        assert refused == {}


def test_tls_abuse_leaves_the_server_healthy(make_server: ServerFactory) -> None:
    srv = make_server("tls")
    hello = client_hello()

    # Plaintext SMTP on the implicit-TLS port: the handshake fails and the connection closes
    # without an SMTP greeting ever being sent in clear.
    garbage = socket.create_connection(("127.0.0.1", srv.ports["submissions"]), timeout=5)
    garbage.sendall(b"EHLO plaintext.test\r\nMAIL FROM:<x@y.test>\r\n" * 20)
    closed, data = drain_until_closed(garbage, 5.0)
    garbage.close()
    assert closed, "plaintext garbage on the TLS port did not get the connection closed"
    assert b"220" not in data, data

    # A silent client and a half ClientHello on the TLS port hold their handshakes open;
    # a real client is served meanwhile.
    silent = socket.create_connection(("127.0.0.1", srv.ports["submissions"]), timeout=5)
    half = socket.create_connection(("127.0.0.1", srv.ports["submissions"]), timeout=5)
    half.sendall(hello[: len(hello) // 2])
    submit_over_tls(srv, implicit=True)
    submit_over_tls(srv, implicit=False)
    assert_healthy(srv)
    silent.close()
    half.close()

    # STARTTLS, then the peer vanishes mid-handshake (politely, then with a reset), or answers
    # the 220 with plaintext instead of a ClientHello.
    for ending in ("close", "reset", "plaintext"):
        client = greeted(srv, "submission")
        assert client.cmd("STARTTLS")[0] == 220
        if ending == "plaintext":
            client.send(b"MAIL FROM:<smuggled@evil.test>\r\n" * 10)
            closed, _ = drain_until_closed(client.sock, 5.0)
            assert closed, "STARTTLS answered with plaintext did not end the connection"
        else:
            client.send(hello[: len(hello) // 2])
            if ending == "reset":
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
    time.sleep(0.2)
    submit_over_tls(srv, implicit=False)
    submit_over_tls(srv, implicit=True)
    assert_healthy(srv)


def test_failed_starttls_handshakes_give_their_connection_places_back(make_server: ServerFactory) -> None:
    """Each way a STARTTLS handshake can fail ends the session for the connection caps too. A peer
    that closed or reset mid-handshake used to keep its place for good (uvloop does not call the
    protocol's connection_lost while the handshake runs): with a cap of 4 per IP, four such
    clients locked their address out until a restart, and 1,000 the whole server."""
    srv = make_server("tls-places", start=False)
    text = srv.config.read_text()
    srv.config.write_text(text.replace("max_connections_per_ip = 15000", "max_connections_per_ip = 4"))
    srv.start()
    hello = client_hello()
    endings = ("close", "reset", "garbage", "plaintext") * 2
    for ending in endings:
        client = greeted(srv, "submission")
        assert client.cmd("STARTTLS")[0] == 220
        if ending == "garbage":  # a record that is no ClientHello: the server's handshake fails
            client.send(b"\x16\x03\x01\x00\x05hello")
            assert drain_until_closed(client.sock, 5.0)[0]
        elif ending == "plaintext":
            client.send(b"MAIL FROM:<smuggled@evil.test>\r\n" * 10)
            assert drain_until_closed(client.sock, 5.0)[0]
        else:
            client.send(hello[: len(hello) // 2])
            if ending == "reset":
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
    # Every place is free again: as many clients as the cap, at once, are all greeted. (The
    # server sees the last closes a moment later, so a refusal is retried for a while.)
    deadline = time.monotonic() + 3
    while True:
        clients = [RawSMTP(srv.ports["mx"]) for _ in range(4)]
        codes = [client.reply()[0] for client in clients]
        for client in clients:
            client.close()
        if codes == [220] * 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert codes == [220] * 4, f"after {len(endings)} failed handshakes, 4 clients at once got {codes}"
    # Those four hold the cap until the server has seen them close: a fifth client right away
    # could be refused for that alone (it was once, with other test runs sharing the cores).
    wait_for_server_closes(srv.ports["mx"])
    assert_healthy(srv)


def wait_for_server_closes(port: int, timeout: float = 5.0) -> None:
    """Until no server-side connection on `port` is open or waiting for the server to close it
    (ESTABLISHED or CLOSE_WAIT in /proc/net/tcp): the server has ended every session there."""
    local = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while True:
        rows = [row.split() for row in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        open_here = [r for r in rows if r[1].endswith(local) and r[3] in ("01", "08")]
        if not open_here or time.monotonic() > deadline:
            assert not open_here, f"{len(open_here)} connection(s) on port {port} open after {timeout} s"
            return
        time.sleep(0.02)


# -- 6. connect-and-reset storm ---------------------------------------------------------------


def test_connection_reset_storm_leaks_no_descriptors(make_server: ServerFactory) -> None:
    srv = make_server("resets")
    assert_healthy(srv)
    time.sleep(0.3)  # the start-up probes and the check above have been released
    fds_before = fd_count(srv)
    linger0 = struct.pack("ii", 1, 0)
    for n in range(1000):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", srv.ports["mx"]))
        if n % 2:
            sock.send(b"EHLO half")  # an unfinished command, then the reset
        sock.close()
    deadline = time.monotonic() + 5
    while fd_count(srv) > fds_before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    fds_after = fd_count(srv)
    assert fds_after <= fds_before + 3, f"file descriptors: {fds_before} before, {fds_after} after"
    assert_healthy(srv)


# -- 7. smuggling inside a huge DATA ----------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<smuggler@evil.test>\r\nRCPT TO:<victim@mx.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nnot a real message\r\n"
)


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
def test_smuggled_terminator_in_long_data_gets_one_550(make_server: ServerFactory, fake_end: bytes) -> None:
    srv = make_server("smuggle")
    lines = [f"line {n}\r\n".encode() for n in range(200_000)]
    body = (
        b"Subject: long\r\n\r\n"
        + b"".join(lines[:100_000])
        + b"before the fake end"
        + fake_end
        + SMUGGLED
        + b"".join(lines[100_000:])
        + b".\r\n"
    )
    client = greeted(srv)
    into_data(client)
    client.send(body)
    code, text = client.reply()
    assert (code, text[:5]) == (550, "5.6.0"), (code, text)
    # Exactly one reply: nothing else (no answer to the smuggled MAIL/RCPT/DATA) follows it.
    client.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        extra = client.sock.recv(1)
        raise AssertionError(f"a second reply followed the 550: {extra!r}")
    client.sock.settimeout(10)
    code, text = client.cmd("NOOP")
    assert (code, text[:5]) == (250, "2.0.0"), (code, text)
    # The session is still in a sane state: a smuggled MAIL did not open a transaction.
    assert client.cmd("RCPT TO:<victim@mx.test>")[0] == 503
    assert client.cmd("QUIT")[0] == 221
    client.close()
    assert srv.queued() == {}
    assert_healthy(srv)


# -- 8. the size limit -------------------------------------------------------------------------

LIMIT = 100_000


def message_of(size: int) -> bytes:
    """A well-formed message of exactly `size` octets (CRLF lines, none starting with a dot)."""
    head = b"Subject: size\r\n\r\n"
    lines, room = [head], size - len(head)
    while room > 2:
        n = min(room, 100)
        lines.append(b"x" * (n - 2) + b"\r\n")
        room -= n
    assert room in (0, 1, 2)
    if room:
        lines[-1] = lines[-1][:-2] + b"y" * room + b"\r\n"
    msg = b"".join(lines)
    assert len(msg) == size
    return msg


def test_message_at_the_size_limit_passes_one_octet_more_gets_552(make_server: ServerFactory) -> None:
    srv = make_server("size", limits=f"max_message_size = {LIMIT}")
    client = greeted(srv)
    code, text = client.cmd("EHLO hostile.test")
    assert code == 250 and f"SIZE {LIMIT}" in text, text

    exact = message_of(LIMIT)
    into_data(client)
    client.send(exact + b".\r\n")
    code, text = client.reply()
    match = QUEUED.search(text)
    assert code == 250 and match, (code, text)
    assert stored_body(srv.queue_db.parent, match.group(1)).endswith(exact)

    into_data(client)
    client.send(message_of(LIMIT + 1) + b".\r\n")
    code, text = client.reply()
    assert (code, text[:5]) == (552, "5.3.4"), (code, text)

    # The same with BDAT: the limit counts the octets of all chunks.
    into_data(client, verb="BDAT")
    client.send(f"BDAT {LIMIT} LAST\r\n".encode() + exact)
    code, text = client.reply()
    assert code == 250 and QUEUED.search(text), (code, text)
    into_data(client, verb="BDAT")
    client.send(f"BDAT {LIMIT} \r\n".encode() + exact)
    assert client.reply()[0] == 250
    client.send(b"BDAT 1 LAST\r\nz")
    code, text = client.reply()
    assert (code, text[:5]) == (552, "5.3.4"), (code, text)

    # The session continues after the refusals.
    assert client.cmd("RSET")[0] == 250
    into_data(client)
    client.send(b"Subject: after\r\n\r\nsmall\r\n.\r\n")
    code, text = client.reply()
    assert code == 250 and QUEUED.search(text), (code, text)
    assert client.cmd("QUIT")[0] == 221
    client.close()
    assert len(srv.queued()) == 3
    assert_healthy(srv)


# -- 9. STARTTLS answered after a commit ---------------------------------------------------------


def test_starttls_pipelined_behind_a_message_gets_its_handshake(make_server: ServerFactory) -> None:
    # Found by test_wire_fuzz.py: STARTTLS pipelined behind a message is answered from the
    # commit's callback, and TLS starts a loop turn later. A ClientHello sent at once after the
    # 220 was read in between and dropped by the engine (TLS_WAIT), and the handshake hung: 15 to
    # 19 sessions in 20 like these against the prefork server. The client here answers at once.
    srv = make_server("starttls")
    ctx = ssl.create_default_context(cafile=str(srv.ca_file))
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            b"EHLO c.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n"
            b"Subject: before TLS\r\n\r\nhello\r\n.\r\nSTARTTLS\r\n"
        )
        got = b""
        while not got.endswith(b"220 2.0.0 Ready to start TLS\r\n"):
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        assert QUEUED.search(got.decode()), got
        with ctx.wrap_socket(sock, server_hostname=spawn.LOCAL_DOMAIN) as tls:  # hung here
            tls.sendall(b"EHLO c.test\r\n")
            assert tls.recv(65536).startswith(b"250-mx.test Hello c.test\r\n")
            tls.sendall(b"QUIT\r\n")
            assert tls.recv(65536).startswith(b"221 ")
    assert len(srv.queued()) == 20
    assert_healthy(srv)
