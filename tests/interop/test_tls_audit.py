"""The server's TLS as an operator's scanners see it (testssl.sh, sslscan, `openssl s_client`).

testssl.sh takes minutes, so the suite keeps what its audit found as fast checks over real
sockets against a live `mailwright serve`: Python's ssl module, and the `openssl` command for
what Python cannot ask for (a renegotiation, a session's early-data allowance).

Defects the audit found, each with its test:
- Implicit TLS (465): the listener ran the handshake before the session saw the connection, so
  a connection in its handshake (up to 30 s) counted against no cap: one address could hold any
  number of them, past `max_connections_per_ip`, and past the open-file limit, so that the
  connections of every other client were closed unanswered.
- TLS 1.2 session tickets were sealed with a key that lives as long as the process (OpenSSL's
  default, which Python cannot rotate), so anyone who recorded sessions and later read that key
  could decrypt every one of them that was given a ticket (RFC 9325 3.4: change ticket keys
  regularly, or they negate forward secrecy).

Guards for what holds and matters: the protocol floor on every listener (TLS 1.0/1.1 refused,
1.2 and 1.3 offered), client-initiated renegotiation refused, no 0-RTT, a burst of garbage
ClientHellos harmless, the generated self-signed certificate and its warning. Not repeated
here: STARTTLS command injection and STARTTLS-once (test_raw_tls.py), the context's settings
and the TLS 1.1 refusal of `server_context` alone (tests/net/test_tls.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import HOST, OTHER_HOST, spawn, tls_context, tool_path

IMPLICIT = "submissions"
TLS_PORTS = ("mx", "submission", "submissions", "alt")


def _capped_config(srv: spawn.SpawnedServer, per_ip: int) -> None:
    # spawn.make_server already sets the cap in [limits]; TOML forbids a second key, so edit it.
    text = srv.config.read_text()
    assert "max_connections_per_ip = 15000" in text
    srv.config.write_text(
        text.replace("max_connections_per_ip = 15000", f"max_connections_per_ip = {per_ip}")
    )


@contextlib.contextmanager
def _server(root: Path, *, per_ip: int | None = None, **start: object) -> Iterator[spawn.SpawnedServer]:
    """One process (caps are exact there), optionally with a per-IP cap."""
    srv = spawn.make_server(root, workers=1)
    if per_ip is not None:
        _capped_config(srv, per_ip)
    srv.start(**start)  # type: ignore[arg-type]
    time.sleep(0.3)  # start() probed every port: let those connections be released
    try:
        yield srv
    finally:
        srv.stop()


def _greeting(port: int, source: str = HOST) -> bytes:
    """What a plain connection to `port` is told first ("220 ..." or "421 4.7.0 ...")."""
    with socket.create_connection((HOST, port), timeout=5, source_address=(source, 0)) as sock:
        return sock.recv(200)


def _client_hello() -> bytes:
    """The bytes of a real ClientHello, made without a socket."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="mx.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _closed_without_reply(sock: socket.socket) -> bool:
    """True once the server closes `sock` having sent nothing (a refusal before any TLS)."""
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):
        return sock.recv(100) == b""
    return True


def _tls(srv: spawn.SpawnedServer, port_name: str, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A TLS connection to a listener: on connect for 465, else after EHLO and STARTTLS."""
    raw = socket.create_connection((HOST, srv.ports[port_name]), timeout=10)
    try:
        if port_name != IMPLICIT:
            reader = raw.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            raw.sendall(b"EHLO client.test\r\n")
            while reader.readline()[3:4] == b"-":  # the EHLO reply's lines
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert reader.readline().startswith(b"220 "), "STARTTLS accepted"
        tls = context.wrap_socket(raw, server_hostname="mx.test")
    except BaseException:
        raw.close()
        raise
    if port_name == IMPLICIT:
        assert tls.recv(100).startswith(b"220 mx.test")
    return tls


def _s_client(srv: spawn.SpawnedServer, port_name: str, *options: str, stdin: bytes = b"") -> str:
    """`openssl s_client` against a listener (STARTTLS for the plain ones); its whole output."""
    starttls = [] if port_name == IMPLICIT else ["-starttls", "smtp", "-name", "client.test"]
    run = subprocess.run(
        [tool_path("openssl"), "s_client", "-connect", f"{HOST}:{srv.ports[port_name]}", *starttls, *options],
        input=stdin,
        capture_output=True,
        timeout=20,
    )
    return (run.stdout + run.stderr).decode("utf-8", "replace")


# -- defect: handshakes on the implicit-TLS listener were outside the connection caps ----------


def test_implicit_tls_handshakes_count_against_the_caps(tmp_path: Path) -> None:
    with _server(tmp_path / "capped", per_ip=3) as srv:
        hello = _client_hello()
        held = [socket.create_connection((HOST, srv.ports[IMPLICIT]), timeout=5) for _ in range(3)]
        try:
            held[0].sendall(hello[: len(hello) // 2])  # and the other two send nothing
            time.sleep(0.3)
            # Three handshakes in progress are three connections: a fourth from the address is
            # refused, on any listener, and before any TLS on the implicit one.
            assert _greeting(srv.ports["mx"]).startswith(b"421 4.7.0"), "handshakes held no place"
            with socket.create_connection((HOST, srv.ports[IMPLICIT]), timeout=5) as fourth:
                assert _closed_without_reply(fourth)
            assert _greeting(srv.ports["mx"], OTHER_HOST).startswith(b"220 "), "the cap is per address"
        finally:
            held[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
            for sock in held:
                sock.close()
        # Handshakes that end (abandoned, reset) give their places back: two new ones and a plain
        # connection fit under the cap of three again.
        deadline = time.monotonic() + 5
        while not _greeting(srv.ports["mx"]).startswith(b"220 ") and time.monotonic() < deadline:
            time.sleep(0.05)
        held = [socket.create_connection((HOST, srv.ports[IMPLICIT]), timeout=5) for _ in range(2)]
        try:
            time.sleep(0.3)
            assert _greeting(srv.ports["mx"]).startswith(b"220 "), "a place was not given back"
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        with smtplib.SMTP_SSL(HOST, srv.ports[IMPLICIT], context=tls_context(srv), timeout=10) as smtp:
            assert smtp.noop()[0] == 250
        assert "Traceback" not in srv.log.read_text()


def test_unfinished_handshakes_cannot_take_every_descriptor(tmp_path: Path) -> None:
    # 256 descriptors hold a cap of 256 - 128 (limits.open_files' reserve) = 128 connections; one
    # address may have 16. 300 silent connections to 465 from it used to take every descriptor,
    # and the kernel's queue was then emptied by closing whatever was in it (libuv on EMFILE).
    with _server(tmp_path / "nofile", per_ip=16, nofile=(256, 256)) as srv:
        flood: list[socket.socket] = []
        try:
            for _ in range(300):
                flood.append(socket.create_connection((HOST, srv.ports[IMPLICIT]), timeout=5))
            time.sleep(0.5)
            assert _greeting(srv.ports["mx"], OTHER_HOST).startswith(b"220 ")
            with smtplib.SMTP_SSL(
                HOST,
                srv.ports[IMPLICIT],
                context=tls_context(srv),
                timeout=10,
                source_address=(OTHER_HOST, 0),
            ) as smtp:
                assert smtp.noop()[0] == 250
        finally:
            for sock in flood:
                sock.close()


def test_a_client_hello_sent_at_once_or_in_pieces_is_served(server: spawn.SpawnedServer) -> None:
    # The session now reads the connection before TLS takes it over (uvloop starts reading after
    # connection_made), and bytes read then must reach the handshake, in order. A ClientHello
    # sent with the connect arrives that early in some of these tries, never in all of them.
    for attempt in range(20):
        pieces = 1 if attempt % 2 else 3
        raw = socket.create_connection((HOST, server.ports[IMPLICIT]), timeout=5)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = tls_context(server).wrap_bio(incoming, outgoing, server_hostname="mx.test")
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        step = -(-len(hello) // pieces)
        for start in range(0, len(hello), step):
            raw.sendall(hello[start : start + step])
            if pieces > 1:
                time.sleep(0.02)
        text = b""
        while not text.endswith(b"\r\n"):
            data = raw.recv(65536)
            assert data, f"closed during the handshake (ClientHello in {pieces} piece(s))"
            incoming.write(data)
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            else:
                with contextlib.suppress(ssl.SSLWantReadError):
                    text += tls.read(4096)
            if pending := outgoing.read():
                raw.sendall(pending)
        assert text.startswith(b"220 mx.test"), (pieces, text)
        raw.close()


# -- defect: TLS 1.2 session tickets under a key that is never changed --------------------------


@pytest.mark.parametrize("port_name", ["submission", IMPLICIT])
def test_no_tls12_session_tickets(server: spawn.SpawnedServer, port_name: str) -> None:
    context = tls_context(server)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with _tls(server, port_name, context) as tls:
        assert tls.version() == "TLSv1.2"
        session = tls.session
        assert session is not None
        assert not session.has_ticket, (
            f"a TLS 1.2 ticket (lifetime hint {session.ticket_lifetime_hint} s) sealed with a key "
            "that lives as long as the process"
        )


# -- guards --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("port_name", TLS_PORTS)
def test_protocol_floor(server: spawn.SpawnedServer, port_name: str) -> None:
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers nothing below TLS 1.2 otherwise
        old.minimum_version = old.maximum_version = version
        with pytest.raises(ssl.SSLError) as refused:
            _tls(server, port_name, old).close()
        # The protocol_version alert, or only the close: uvloop's TLS layer drops the alert
        # OpenSSL wrote when a handshake fails (CPython's asyncio did too, gh-98078).
        # Debian's Python 3.11.2 reports that close as SSLZeroReturnError, which has no reason.
        reasons = ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "UNEXPECTED_EOF_WHILE_READING")
        closed = isinstance(refused.value, ssl.SSLZeroReturnError)
        assert closed or refused.value.reason in reasons, refused.value
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        context = tls_context(server)
        context.minimum_version = context.maximum_version = version
        with _tls(server, port_name, context) as tls:
            assert tls.version() == name
            cipher, _, bits = tls.cipher()  # type: ignore[misc]
            # AEAD with an ephemeral key exchange (the TLS 1.3 suites have both by definition).
            assert re.match(r"^(TLS_|ECDHE-|DHE-).*(GCM|CHACHA20)", cipher) and bits >= 128, cipher


@pytest.mark.parametrize("port_name", ["mx", IMPLICIT])
def test_client_initiated_renegotiation_is_refused(server: spawn.SpawnedServer, port_name: str) -> None:
    # s_client renegotiates on a line "R"; the server answers with a no_renegotiation alert.
    out = _s_client(server, port_name, "-tls1_2", stdin=b"R\n")
    assert "RENEGOTIATING" in out, out[-2000:]
    assert "no renegotiation" in out, out[-2000:]
    assert "Compression: NONE" in out  # CRIME: no TLS compression either


def early_data_accepted(port: int, tmp_path: Path, starttls: bool = False) -> list[str]:
    """Resume a TLS 1.3 session with 0-RTT data; what says the server took any (none: good).

    0-RTT data can be replayed by anyone who recorded it. Without tickets there is nothing to
    resume, and a ticket must allow no early data ("Max Early Data: 0").
    """
    session, early = tmp_path / "session.pem", tmp_path / "early.txt"
    early.write_bytes(b"NOOP\r\n")
    base = [tool_path("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-tls1_3"]
    if starttls:
        base += ["-starttls", "smtp"]
    found: list[str] = []
    for extra in (["-sess_out", str(session)], ["-sess_in", str(session), "-early_data", str(early)]):
        if "-sess_in" in extra and not session.exists():
            break
        run = subprocess.run([*base, *extra], input=b"QUIT\r\n", capture_output=True, timeout=20)
        out = (run.stdout + run.stderr).decode("utf-8", "replace")
        assert "CONNECTED" in out, out[-2000:]
        found += [line for line in re.findall(r"Max Early Data: \d+", out) if not line.endswith(": 0")]
        found += re.findall(r"Early data was accepted", out)
    return found


@pytest.mark.parametrize("port_name", ["submission", IMPLICIT])
def test_no_early_data(server: spawn.SpawnedServer, port_name: str, tmp_path: Path) -> None:
    assert early_data_accepted(server.ports[port_name], tmp_path, starttls=port_name != IMPLICIT) == []


def test_garbage_client_hellos_leave_the_server_responsive(server: spawn.SpawnedServer) -> None:
    mark = server.log.stat().st_size
    hello = _client_hello()
    junk = [hello[:5] + os.urandom(len(hello) - 5), hello[:40], b"\x16\x03\x01\xff\xff" + os.urandom(300)]
    burst: list[socket.socket] = []
    try:
        for i in range(200):
            sock = socket.create_connection((HOST, server.ports[IMPLICIT]), timeout=10)
            sock.sendall(junk[i % len(junk)])
            burst.append(sock)
        started = time.monotonic()
        with smtplib.SMTP_SSL(HOST, server.ports[IMPLICIT], context=tls_context(server), timeout=10) as smtp:
            assert smtp.noop()[0] == 250
        assert time.monotonic() - started < 2.0
    finally:
        for sock in burst:
            sock.close()
    time.sleep(0.3)
    with server.log.open("rb") as f:
        f.seek(mark)
        new = f.read().decode("utf-8", "replace")
    assert not re.search(r"Traceback| WARNING | ERROR | CRITICAL ", new), new[-3000:]


def test_generated_certificate_when_none_is_configured(tmp_path: Path) -> None:
    srv = spawn.make_server(tmp_path / "selfsigned", workers=1)
    config = srv.config.read_text()
    config, dropped = re.subn(r'\[tls\]\ncert = "[^"]*"\nkey = "[^"]*"\n', "", config)
    assert dropped == 1
    srv.config.write_text(config)
    srv.start()
    try:
        loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
        with _tls(srv, IMPLICIT, loose) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "mx.test" in sans.get_values_for_type(x509.DNSName)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 300 < lifetime.days < 400
        assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
        log = srv.log.read_text()
        assert re.search(
            r"WARNING .*no TLS certificate configured: using a self-signed one for mx\.test", log
        )
    finally:
        srv.stop()
