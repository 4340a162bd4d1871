"""IPv6 listeners served to real clients over ::1, in both process models.

What an operator who adds IPv6 listeners should get, as Postfix gives it:
- "::1", and "::" beside a separate "0.0.0.0" listener on the same port (every IPv6 listener is
  IPv6-only, so the two share the port), serve swaks -6 and -4, smtplib and aiosmtplib: STARTTLS
  and AUTH on submission, implicit TLS on the 465 role, plain mail on mx.
- The Received header's TCP-info is an address literal, "[IPv6:::1]" (RFC 5321 4.4, 4.1.3); the
  log writes the client as Postfix does, "client.test[::1]", and says where it listens as
  "[::1]:port".
- EHLO with an IPv6 address literal is answered; an address literal is never one of our domains,
  so RCPT to one is refused like any other relay attempt, postmaster included.
- The per-IP cap and the AUTH lock-out hold over IPv6 and count IPv4 clients apart.

Only loopback is used (::1 and 127.0.0.1; the wildcard listeners are reached through them). ::1
is a single address, so the folding of an IPv6 network into one key is tested as a unit
(tests/limits/test_connection_limits.py, tests/net/test_session.py).
Skipped, with the reason, on a host without ::1.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import smtplib
import socket
import ssl
import subprocess
from email.message import EmailMessage

import aiosmtplib
import pytest

import spawn

from .conftest import RawSMTP, ServerFactory, log_size, wait_for_log


def _ipv6_loopback() -> str | None:
    """Why ::1 cannot be used here, or None when it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback on this host (binding ::1: {exc.strerror or exc})"
    return None


pytestmark = pytest.mark.skipif(_ipv6_loopback() is not None, reason=str(_ipv6_loopback()))

WORKERS = [pytest.param(1, id="one-process"), pytest.param(2, id="prefork")]


def _context(srv: spawn.SpawnedServer) -> ssl.SSLContext:
    # The test certificate names ::1 and 127.0.0.1 too: verification is on, by address.
    return ssl.create_default_context(cafile=str(srv.ca_file))


def _message(subject: str) -> bytes:
    return f"From: {spawn.USER}\r\nTo: bob@mx.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


def _received(srv: spawn.SpawnedServer, qid: str) -> str:
    head = srv.body(qid).split(b"\r\n\r\n", 1)[0].decode()
    return head.split("\r\n\t")[0]  # the Received header's first line


@pytest.mark.parametrize("workers", WORKERS)
def test_an_ipv6_loopback_listener_serves_every_role(make_server: ServerFactory, workers: int) -> None:
    srv = make_server("v6", workers=workers, addresses=("::1",))
    for port in srv.ports.values():
        line = wait_for_log(srv, f"listening on [::1]:{port} (")  # not "::1:port", half a port
        assert "listening on" in line
    before = set(srv.queued())
    ctx = _context(srv)
    with smtplib.SMTP("::1", srv.ports["submission"], local_hostname="client.test", timeout=20) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(spawn.USER, spawn.PASSWORD)
        assert smtp.sendmail(spawn.USER, ["bob@mx.test"], _message("starttls")) == {}
    with smtplib.SMTP_SSL(
        "::1", srv.ports["submissions"], local_hostname="client.test", timeout=20, context=ctx
    ) as s:
        s.login(spawn.USER, spawn.PASSWORD)
        assert s.sendmail(spawn.USER, ["bob@mx.test"], _message("implicit")) == {}
    with smtplib.SMTP("::1", srv.ports["mx"], local_hostname="client.test", timeout=20) as smtp:
        assert smtp.sendmail("someone@example.org", ["bob@mx.test"], b"Subject: mx\r\n\r\nbody\r\n") == {}
    new = [qid for qid in srv.queued() if qid not in before]
    assert len(new) == 3
    for qid in new:
        # RFC 5321 4.4: an address literal; it was "([::1])".
        assert _received(srv, qid) == "Received: from client.test ([IPv6:::1])"
    line = wait_for_log(srv, f"{new[0]}: from=<")
    assert "client=client.test[::1]" in line  # Postfix's form for the log
    # Only IPv6 is served: nobody listens on 127.0.0.1 at these ports.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.ports["mx"]), timeout=5).close()


def _swaks(srv: spawn.SpawnedServer, family: str, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.fail("swaks is not installed (the e2e suite needs it)")
    return subprocess.run(
        [swaks, family, "--server", host, "--helo", "client.test", "--timeout", "30", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_ipv6_and_ipv4_wildcards_share_each_port(make_server: ServerFactory, workers: int) -> None:
    srv = make_server("wild", workers=workers, addresses=("::", "0.0.0.0"))
    before = set(srv.queued())
    tls = ["--tls-verify", "--tls-ca-path", str(srv.ca_file)]
    auth = ["--auth", "PLAIN", "--auth-user", spawn.USER, "--auth-password", spawn.PASSWORD]
    mail = ["--from", spawn.USER, "--to", "bob@mx.test"]
    for family, host in (("-6", "::1"), ("-4", "127.0.0.1")):
        sub = _swaks(srv, family, host, "--port", str(srv.ports["submission"]), "--tls", *tls, *auth, *mail)
        assert sub.returncode == 0, sub.stdout + sub.stderr
        smtps = _swaks(
            srv, family, host, "--port", str(srv.ports["submissions"]), "--tlsc", *tls, *auth, *mail
        )
        assert smtps.returncode == 0, smtps.stdout + smtps.stderr
    received = sorted(_received(srv, qid) for qid in srv.queued() if qid not in before)
    assert received == [
        "Received: from client.test ([127.0.0.1])",
        "Received: from client.test ([127.0.0.1])",
        "Received: from client.test ([IPv6:::1])",
        "Received: from client.test ([IPv6:::1])",
    ]

    async def aio(host: str) -> str:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = spawn.USER, "bob@mx.test", f"aiosmtplib {host}"
        msg.set_content("body\n")
        _, reply = await aiosmtplib.send(
            msg,
            hostname=host,
            port=srv.ports["submissions"],
            username=spawn.USER,
            password=spawn.PASSWORD,
            use_tls=True,
            tls_context=_context(srv),
            local_hostname="client.test",
            timeout=30,
        )
        return reply

    for host in ("::1", "127.0.0.1"):
        assert asyncio.run(aio(host)).startswith("2.0.0 OK queued as ")


@pytest.mark.parametrize("workers", WORKERS)
def test_address_literals_over_ipv6_are_never_our_domain(make_server: ServerFactory, workers: int) -> None:
    srv = make_server("literal", workers=workers, addresses=("::1",))
    since = log_size(srv)
    client = RawSMTP(srv.ports["mx"], host="::1")
    try:
        assert client.reply()[0] == 220
        code, text = client.cmd("EHLO [IPv6:::1]")
        assert code == 250 and text.startswith("mx.test Hello [IPv6:::1]"), text
        assert client.cmd("MAIL FROM:<someone@[IPv6:::1]>")[0] == 250
        # The server's own address, postmaster included: Postfix too refuses a literal unless told
        # its addresses are a destination; here none is, so none can be relayed through.
        for rcpt in ("bob@[IPv6:::1]", "postmaster@[IPv6:::1]", "bob@[IPv6:0:0::1]", "bob@[127.0.0.1]"):
            assert client.cmd(f"RCPT TO:<{rcpt}>") == (554, "5.7.1 Relay access denied")
        assert client.cmd("RCPT TO:<bob@[IPv6:::1:2:3:4:5:6:7]>")[0] == 501  # eight groups and "::"
        assert client.cmd("QUIT")[0] == 221
    finally:
        client.close()
    line = wait_for_log(srv, "NOQUEUE: reject: RCPT from", since=since)
    assert line.endswith(
        "NOQUEUE: reject: RCPT from [IPv6:::1][::1]: 554 5.7.1 Relay access denied;"
        f" from=<someone@[IPv6:::1]> to=<bob@[IPv6:::1]> listener=mx:{srv.ports['mx']}"
    ), line


@pytest.mark.parametrize("workers", WORKERS)
def test_the_per_ip_cap_holds_over_ipv6_and_counts_ipv4_apart(
    make_server: ServerFactory, workers: int
) -> None:
    srv = make_server("cap", workers=workers, addresses=("::1", "127.0.0.1"), start=False)
    text = srv.config.read_text()
    srv.config.write_text(text.replace("max_connections_per_ip = 15000", "max_connections_per_ip = 2"))
    srv.start()
    held: list[RawSMTP] = []
    try:
        for _ in range(2):
            held.append(RawSMTP(srv.ports["mx"], host="::1"))
            assert held[-1].reply()[0] == 220
        third = RawSMTP(srv.ports["mx"], host="::1")
        held.append(third)
        assert third.reply() == (421, "4.7.0 Too many connections, try again later")
        assert third.at_eof()
        v4 = RawSMTP(srv.ports["mx"], host="127.0.0.1")
        held.append(v4)
        assert v4.reply()[0] == 220, "an IPv4 client has places of its own"
    finally:
        for client in held:
            client.close()


def test_an_auth_lock_out_over_ipv6_leaves_ipv4_clients_alone(make_server: ServerFactory) -> None:
    # max_failures = 3 in tests/spawn.py; the prefork server relays the failures to every worker.
    srv = make_server("lockout", addresses=("::1", "127.0.0.1"))
    ctx = _context(srv)

    def login(host: str, password: str) -> tuple[int, bytes]:
        with smtplib.SMTP(host, srv.ports["submission"], local_hostname="client.test", timeout=30) as smtp:
            smtp.starttls(context=ctx)
            smtp.ehlo("client.test")
            return smtp.docmd("AUTH", "PLAIN " + _plain(spawn.USER, password))

    assert [login("::1", "wrong")[0] for _ in range(3)] == [535, 535, 454]  # the third locks out
    code, text = login("::1", spawn.PASSWORD)
    assert (code, text[:5]) == (454, b"4.7.0"), text
    assert login("127.0.0.1", spawn.PASSWORD)[0] == 235


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()
