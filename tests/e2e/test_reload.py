"""SIGHUP reloads the TLS certificate and key without a restart; a broken file keeps the old one.

After the certificate files in the server's directory are replaced by ones from another CA and the
process gets SIGHUP, new handshakes (STARTTLS on the MX port and implicit TLS on the submissions
port, RFC 3207 / RFC 8314) verify against the new CA only.  A broken certificate file followed by
SIGHUP leaves the last good certificate in service and the log says what was wrong.

What the server serves is announced once per server, not once per worker: an INFO line with the
certificate's facts at start-up and after each reload, and a WARNING for each problem clients will
have with it (expiring, a name that is not the server's hostname; `net.cert_checks`).

Not covered here: certificate loading rules themselves (tests/net/test_tls.py).
"""

from __future__ import annotations

import datetime as dt
import signal
import smtplib
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

import spawn

from .conftest import ServerFactory, log_size, wait_for_log


def context_for(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def starttls_issuer(srv: spawn.SpawnedServer, ca_file: Path) -> str:
    """STARTTLS on the MX port, verifying against `ca_file` only; returns the peer's issuer CN."""
    with smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10) as smtp:
        smtp.ehlo("tls.test")
        smtp.starttls(context=context_for(ca_file))
        assert smtp.ehlo("tls.test")[0] == 250
        assert isinstance(smtp.sock, ssl.SSLSocket)
        return issuer_of(smtp.sock)


def implicit_tls_issuer(srv: spawn.SpawnedServer, ca_file: Path) -> str:
    raw = socket.create_connection(("127.0.0.1", srv.ports["submissions"]), timeout=10)
    with context_for(ca_file).wrap_socket(raw, server_hostname="mx.test") as tls:
        assert tls.recv(512).startswith(b"220")
        return issuer_of(tls)


def issuer_of(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert()
    assert cert is not None
    issuer = cert["issuer"]
    assert isinstance(issuer, tuple)
    fields = {pair[0]: pair[1] for rdn in issuer for pair in rdn}
    return str(fields["organizationalUnitName"])  # trustme names each CA "Testing CA #<random>"


def install_new_cert(
    srv: spawn.SpawnedServer,
    tmp: Path,
    names: tuple[str, ...] = (spawn.LOCAL_DOMAIN, "localhost", "127.0.0.1"),
    not_after: dt.datetime | None = None,
) -> Path:
    """Replace cert.pem/key.pem with a certificate from a fresh CA; returns that CA's file."""
    ca = trustme.CA()
    cert = ca.issue_cert(*names, not_after=not_after)
    ca_file = tmp / "new-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(srv.root / "key.pem"))
    cert_file = srv.root / "cert.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    return ca_file


def hup(srv: spawn.SpawnedServer) -> None:
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGHUP)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_swaps_the_certificate(make_server: ServerFactory, tmp_path: Path, workers: int) -> None:
    srv = make_server("reload", workers=workers)
    old_ca = srv.ca_file
    old_issuer = starttls_issuer(srv, old_ca)
    # A session opened before the reload keeps working afterwards.
    before = smtplib.SMTP("127.0.0.1", srv.ports["mx"], timeout=10)
    before.ehlo("early.test")
    before.starttls(context=context_for(old_ca))

    new_ca = install_new_cert(srv, tmp_path)
    mark = log_size(srv)
    hup(srv)
    wait_for_log(srv, "TLS certificate reloaded", since=mark, count=srv.workers)

    new_issuer = starttls_issuer(srv, new_ca)
    assert new_issuer != old_issuer
    with pytest.raises(ssl.SSLCertVerificationError):
        starttls_issuer(srv, old_ca)
    assert implicit_tls_issuer(srv, new_ca) == new_issuer
    with pytest.raises(ssl.SSLCertVerificationError):
        implicit_tls_issuer(srv, old_ca)
    assert before.noop()[0] == 250
    before.quit()


@pytest.mark.parametrize("workers", [1, 2])
def test_broken_certificate_keeps_the_old_one(
    make_server: ServerFactory, tmp_path: Path, workers: int
) -> None:
    srv = make_server("broken", workers=workers)
    good_ca = install_new_cert(srv, tmp_path)
    mark = log_size(srv)
    hup(srv)
    wait_for_log(srv, "TLS certificate reloaded", since=mark, count=srv.workers)
    issuer = starttls_issuer(srv, good_ca)

    (srv.root / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    mark = log_size(srv)
    hup(srv)
    line = wait_for_log(srv, "TLS reload failed", since=mark, count=srv.workers)
    assert "keeping the old certificate" in line
    assert "cert.pem" in line, f"the log does not say which file is wrong: {line}"

    assert srv.proc is not None and srv.proc.poll() is None
    assert starttls_issuer(srv, good_ca) == issuer
    assert implicit_tls_issuer(srv, good_ca) == issuer


def announcements(srv: spawn.SpawnedServer, since: int) -> tuple[list[str], list[str]]:
    """The log's certificate lines since `since`: (INFO facts lines, WARNING lines). The start-up
    warning of a server started as root without `user` (the suite runs as root) is not about it."""
    with srv.log.open("rb") as f:
        f.seek(since)
        lines = f.read().decode("utf-8", "replace").splitlines()
    warnings = [ln for ln in lines if " WARNING " in ln and "running as root: " not in ln]
    return [ln for ln in lines if "TLS certificate: " in ln], warnings


@pytest.mark.parametrize("workers", [1, 2])
def test_the_served_certificate_and_its_problems_are_announced_once(
    make_server: ServerFactory, tmp_path: Path, workers: int
) -> None:
    srv = make_server("announce", start=False, workers=workers)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=5, hours=1)
    install_new_cert(srv, tmp_path, names=("www.other.test",), not_after=soon)
    srv.start()
    facts, warnings = announcements(srv, 0)
    assert len(facts) == 1 and "(DNS:www.other.test)" in facts[0], facts
    assert len(warnings) == 2, warnings
    assert f"the TLS certificate expires on {soon:%Y-%m-%d %H:%M} UTC, in 5 days" in warnings[0]
    assert "does not name this server's hostname mx.test (its names: DNS:www.other.test)" in warnings[1]

    # A good certificate: announced once, after every worker has it, with nothing to warn about.
    good_ca = install_new_cert(srv, tmp_path)
    mark = log_size(srv)
    hup(srv)
    wait_for_log(srv, "TLS certificate reloaded", since=mark, count=srv.workers)
    facts, warnings = announcements(srv, mark)
    assert len(facts) == 1 and "(DNS:mx.test, DNS:localhost, IP:127.0.0.1)" in facts[0], facts
    assert warnings == []

    # A file that does not load: each worker says so and keeps the old one; nothing is announced.
    (srv.root / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    mark = log_size(srv)
    hup(srv)
    wait_for_log(srv, "TLS reload failed", since=mark, count=srv.workers)
    assert announcements(srv, mark)[0] == []
    assert starttls_issuer(srv, good_ca)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_certificate_entering_its_last_14_days_is_warned_of_while_the_server_runs(
    make_server: ServerFactory, tmp_path: Path, workers: int
) -> None:
    """A renewal that failed shows on a server started long ago: the warning comes when the
    certificate enters its last 14 days, not only at the next start (here 6 s after the start;
    starting takes well under a second)."""
    srv = make_server("window", start=False, workers=workers)
    threshold = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)
    install_new_cert(srv, tmp_path, not_after=threshold + dt.timedelta(days=14))
    srv.start()
    facts, warnings = announcements(srv, 0)
    assert len(facts) == 1 and warnings == [], (facts, warnings)
    line = wait_for_log(srv, "the TLS certificate expires on ", timeout=15)
    assert ", in 13 days: its renewal has not happened" in line, line
    assert dt.datetime.now(dt.UTC) >= threshold, "warned before the certificate's last 14 days began"
    time.sleep(1)
    assert len(announcements(srv, 0)[1]) == 1, "one warning, from one process"


def test_a_certificate_that_expires_while_the_server_runs_is_said_to_have_expired(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    srv = make_server("expiry", start=False, workers=2)
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)
    install_new_cert(srv, tmp_path, not_after=ends)
    srv.start()
    assert ", in 0 days: its renewal has not happened" in announcements(srv, 0)[1][0]
    line = wait_for_log(srv, "the TLS certificate expired on ", timeout=15)
    assert f"expired on {ends:%Y-%m-%d %H:%M} UTC: every client that verifies certificates refuses" in line
    assert dt.datetime.now(dt.UTC) >= ends
