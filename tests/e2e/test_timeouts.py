"""Idle time-outs (RFC 5321 4.5.3.2.7) and connection caps, seen from a client socket.

A silent client gets "421 4.4.2" and the connection closes; a client that stalls inside DATA
gets the same and nothing is queued; a client that keeps trickling data, or keeps sending NOOP,
is not cut off, because the time-outs measure idleness, not total time.  With
max_connections_per_ip = 3 the fourth concurrent connection from one address gets "421 4.7.0",
while another address still gets in.

Not covered here: the exact default values (tests/config).
"""

from __future__ import annotations

import time

import pytest

import spawn

from .conftest import QUEUED, RawSMTP, ServerFactory

TIMEOUTS = "command_timeout = 1.0\ndata_timeout = 1.0"


@pytest.fixture
def timeout_server(make_server: ServerFactory) -> spawn.SpawnedServer:
    return make_server("timeouts", limits=TIMEOUTS)


def into_data(client: RawSMTP) -> None:
    assert client.reply()[0] == 220
    assert client.cmd("EHLO slow.test")[0] == 250
    assert client.cmd("MAIL FROM:<slow@client.test>")[0] == 250
    assert client.cmd("RCPT TO:<bob@mx.test>")[0] == 250
    assert client.cmd("DATA")[0] == 354


def test_silent_client_gets_421_and_is_closed(timeout_server: spawn.SpawnedServer) -> None:
    client = RawSMTP(timeout_server.ports["mx"])
    assert client.reply()[0] == 220
    start = time.monotonic()
    code, text = client.reply()
    waited = time.monotonic() - start
    assert (code, text[:5]) == (421, "4.4.2"), (code, text)
    assert 0.8 <= waited < 3.0, waited
    assert client.at_eof()
    client.close()


def test_stall_inside_data_gets_421_and_queues_nothing(timeout_server: spawn.SpawnedServer) -> None:
    client = RawSMTP(timeout_server.ports["mx"])
    into_data(client)
    client.send(b"Subject: half\r\n\r\nthe first half of a message and then nothing")
    start = time.monotonic()
    code, text = client.reply()
    waited = time.monotonic() - start
    assert (code, text[:5]) == (421, "4.4.2"), (code, text)
    assert 0.8 <= waited < 3.0, waited
    assert client.at_eof()
    client.close()
    assert timeout_server.queued() == {}


def test_slow_but_steady_data_is_not_cut_off(timeout_server: spawn.SpawnedServer) -> None:
    client = RawSMTP(timeout_server.ports["mx"])
    into_data(client)
    client.send(b"Subject: trickle\r\n\r\n")
    for n in range(6):  # 6 x 0.4 s = 2.4 s in DATA, longer than data_timeout, never idle 1 s
        time.sleep(0.4)
        client.send(f"line {n}\r\n".encode())
    client.send(b".\r\n")
    code, text = client.reply()
    assert code == 250 and QUEUED.search(text), (code, text)
    assert client.cmd("QUIT")[0] == 221
    client.close()


def test_a_client_that_keeps_sending_noop_is_not_cut_off(timeout_server: spawn.SpawnedServer) -> None:
    # The time-out runs from our last reply, as in Postfix: any command answered restarts it.
    client = RawSMTP(timeout_server.ports["mx"])
    assert client.reply()[0] == 220
    assert client.cmd("EHLO keepalive.test")[0] == 250
    for _ in range(6):  # 6 x 0.4 s = 2.4 s, longer than command_timeout, never idle 1 s
        time.sleep(0.4)
        assert client.cmd("NOOP")[0] == 250
    assert client.cmd("MAIL FROM:<keepalive@client.test>")[0] == 250
    assert client.cmd("QUIT")[0] == 221
    client.close()


def test_fourth_connection_from_one_ip_is_refused(make_server: ServerFactory) -> None:
    srv = make_server("capped", start=False)
    # spawn.make_server already sets the cap in [limits]; TOML forbids a second key, so edit it.
    text = srv.config.read_text()
    assert "max_connections_per_ip = 15000" in text
    srv.config.write_text(text.replace("max_connections_per_ip = 15000", "max_connections_per_ip = 3"))
    srv.start()
    # start() probed every port with a connection; wait until those have been released.
    time.sleep(0.3)
    port = srv.ports["mx"]
    held = [RawSMTP(port) for _ in range(3)]
    for client in held:
        assert client.reply()[0] == 220
    fourth = RawSMTP(port)
    code, text = fourth.reply()
    assert (code, text[:5]) == (421, "4.7.0"), (code, text)
    assert fourth.at_eof()
    fourth.close()

    other = RawSMTP(port, source="127.0.0.2")
    assert other.reply()[0] == 220
    assert other.cmd("NOOP")[0] == 250

    # Closing one frees its slot again.
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:
        again = RawSMTP(port)
        code, text = again.reply()
        again.close()
        if code == 220 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert code == 220, (code, text)
    for client in [*held, other]:
        client.close()
