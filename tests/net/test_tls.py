"""Tests for mailwright.net.tls: real handshakes on 127.0.0.1, reload, errors, self-signed certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailwright.net import tls
from mailwright.net.tls import (
    ReloadableServerContext,
    TLSConfigError,
    client_context,
    describe_certificate,
    ensure_self_signed,
    server_context,
    session_facts,
)

FACTS = re.compile(r"^TLS1\.[23] \S+ \(\d+ bits\)$")


async def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None
) -> tuple[bytes, str, str]:
    """Serve one TLS connection on 127.0.0.1; return (peer cert DER, client facts, server facts)."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(session_facts(writer.get_extra_info("ssl_object")))
        writer.write(b"hello\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=server_hostname), 5
        )
        assert await asyncio.wait_for(reader.readline(), 5) == b"hello\r\n"
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        facts = session_facts(ssl_object)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return der, facts, seen[0]


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None = ""
) -> tuple[bytes, str, str]:
    return asyncio.run(_handshake(server_ctx, client_ctx, server_hostname))


def der_of(cert: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_self_signed(tmp_path / "certs", "mail.example.test")


# --- contexts and real handshakes ------------------------------------------------------


def test_generated_certificate_serves_verified_handshake(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    client = client_context(cafile=cert)
    for name in ("mail.example.test", "localhost", "127.0.0.1"):
        der, client_facts, server_facts = handshake(server_context(cert, key), client, name)
        assert der == der_of(cert)
        assert FACTS.match(client_facts), client_facts
        assert client_facts == server_facts


def test_verifying_client_rejects_wrong_name_and_unknown_ca(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context(cert, key), client_context(cafile=cert), "other.example.test")
    other_cert, _ = ensure_self_signed(tmp_path / "other", "mail.example.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context(cert, key), client_context(cafile=other_cert), "mail.example.test")


def test_unverified_client_accepts_self_signed(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    der, facts, _ = handshake(server_context(cert, key), client_context(verify=False))
    assert der == der_of(cert)
    assert facts.startswith("TLS1.3 ")


def test_session_facts_for_tls12(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    client = client_context(verify=False)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    _, facts, _ = handshake(server_context(cert, key), client)
    assert FACTS.match(facts)
    assert facts.startswith("TLS1.2 ECDHE-ECDSA-")


def test_session_facts_before_handshake() -> None:
    obj = client_context(verify=False).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    assert session_facts(obj) == "TLS"


def test_context_settings(pair: tuple[Path, Path]) -> None:
    ctx = server_context(*pair)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_CIPHER_SERVER_PREFERENCE):
        assert ctx.options & option == option
    client = client_context()
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    loose = client_context(verify=False)
    assert loose.verify_mode == ssl.CERT_NONE
    assert not loose.check_hostname


def _server_error_for_old_client(server_ctx: ssl.SSLContext) -> str | None:
    """Handshake a TLS 1.1-only client against `server_ctx` with plain sockets; return the server's error."""
    errors: list[str | None] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.sendall(b"ok")
            errors.append(None)
        except (ssl.SSLError, OSError) as exc:
            errors.append(getattr(exc, "reason", None) or str(exc))
        finally:
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses to offer TLS 1.1 otherwise
    client.minimum_version = ssl.TLSVersion.TLSv1_1
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            try:
                with client.wrap_socket(raw) as tls_raw:
                    tls_raw.recv(2)
            except (ssl.SSLError, OSError):
                pass
    finally:
        thread.join(10)
        listener.close()
    return errors[0]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_is_refused(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    # Control: the same old client completes against a context that still allows TLS 1.1,
    # so the refusal below comes from our server's minimum, not from the client's setup.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    permissive.load_cert_chain(cert, key)
    assert _server_error_for_old_client(permissive) is None
    reason = _server_error_for_old_client(server_context(cert, key))
    assert reason in ("UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW"), reason


# --- reload -----------------------------------------------------------------------------


def _install(src: tuple[Path, Path], live: tuple[Path, Path]) -> None:
    shutil.copyfile(src[0], live[0])
    shutil.copyfile(src[1], live[1])


def test_reload_swaps_certificate_for_new_handshakes(tmp_path: Path) -> None:
    one = ensure_self_signed(tmp_path / "one", "one.example.test")
    two = ensure_self_signed(tmp_path / "two", "two.example.test")
    live = (tmp_path / "live-cert.pem", tmp_path / "live-key.pem")
    _install(one, live)
    reloadable = ReloadableServerContext(*live)
    ctx = reloadable.context
    client = client_context(verify=False)
    assert handshake(ctx, client)[0] == der_of(one[0])

    _install(two, live)
    assert handshake(ctx, client)[0] == der_of(one[0]), "files alone must not change the live certificate"
    reloadable.reload()
    assert reloadable.context is ctx
    assert handshake(ctx, client)[0] == der_of(two[0])
    # With SNI too, and verified against the new certificate.
    assert handshake(ctx, client_context(cafile=two[0]), "two.example.test")[0] == der_of(two[0])


def test_failed_reload_keeps_previous_certificate(tmp_path: Path) -> None:
    one = ensure_self_signed(tmp_path / "one", "one.example.test")
    two = ensure_self_signed(tmp_path / "two", "two.example.test")
    live = (tmp_path / "live-cert.pem", tmp_path / "live-key.pem")
    _install(one, live)
    reloadable = ReloadableServerContext(*live)
    shutil.copyfile(two[0], live[0])  # new certificate, old key: a mismatched pair
    with pytest.raises(TLSConfigError, match=r"live-key\.pem"):
        reloadable.reload()
    live[1].write_text("garbage")
    with pytest.raises(TLSConfigError, match=r"live-key\.pem"):
        reloadable.reload()
    assert handshake(reloadable.context, client_context(verify=False))[0] == der_of(one[0])


def test_reload_across_key_types(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    # OpenSSL keeps one certificate per key type; the reload must not keep serving the EC one.
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("rsa.example.test", key_type=trustme.KeyType.RSA)
    live = (tmp_path / "live-cert.pem", tmp_path / "live-key.pem")
    _install(pair, live)
    reloadable = ReloadableServerContext(*live)
    leaf.cert_chain_pems[0].write_to_path(str(live[0]))
    leaf.private_key_pem.write_to_path(str(live[1]))
    reloadable.reload()
    client = client_context(verify=False)
    der, _, _ = handshake(reloadable.context, client)
    assert isinstance(x509.load_der_x509_certificate(der).public_key(), rsa.RSAPublicKey)
    trusting = client_context()
    ca.configure_trust(trusting)
    handshake(reloadable.context, trusting, "rsa.example.test")


# --- configuration errors ---------------------------------------------------------------


def _encrypted_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    return path


def test_bad_paths_name_the_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    other_cert, other_key = ensure_self_signed(tmp_path / "other", "mail.example.test")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases: list[tuple[Path, Path, str]] = [
        (tmp_path / "missing-cert.pem", key, r"missing-cert\.pem does not exist"),
        (cert, tmp_path / "missing-key.pem", r"missing-key\.pem does not exist"),
        (junk, key, r"junk\.pem holds no PEM certificate"),
        (cert, junk, r"junk\.pem holds no usable PEM private key"),
        (cert, other_key, r"does not match certificate"),
        (cert, _encrypted_key(tmp_path / "locked.pem"), r"locked\.pem is encrypted"),
        (tmp_path, key, r"is a directory"),
    ]
    for c, k, message in cases:
        with pytest.raises(TLSConfigError, match=message):
            server_context(c, k)
        with pytest.raises(TLSConfigError, match=message):
            ReloadableServerContext(c, k)
    assert other_cert.exists()


def test_unreadable_key_names_the_file(pair: tuple[Path, Path]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of mode")
    cert, key = pair
    key.chmod(0)
    with pytest.raises(TLSConfigError, match="permission denied"):
        server_context(cert, key)


def test_client_context_bad_cafile(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match=r"nope\.pem"):
        client_context(cafile=tmp_path / "nope.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    with pytest.raises(TLSConfigError, match=r"junk\.pem"):
        client_context(cafile=junk)


# --- self-signed certificates and facts -------------------------------------------------


def test_self_signed_contents(pair: tuple[Path, Path]) -> None:
    cert_path, key_path = pair
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.parent.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=366)
    facts = describe_certificate(cert_path)
    assert facts.sans == ("DNS:mail.example.test", "DNS:localhost", "IP:127.0.0.1")
    assert facts.self_signed
    assert facts.subject == "CN=mail.example.test"
    assert facts.not_after == cert.not_valid_after_utc
    assert "self-signed" in str(facts)
    assert [p.name for p in cert_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_self_signed_is_reused_not_regenerated(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    before = (cert.read_bytes(), key.read_bytes(), cert.stat().st_ino, key.stat().st_ino)
    again = ensure_self_signed(cert.parent, "mail.example.test")
    assert again == pair
    assert (cert.read_bytes(), key.read_bytes(), cert.stat().st_ino, key.stat().st_ino) == before


def test_self_signed_regenerated_when_invalid(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = pair
    original = cert.read_bytes()
    # Another hostname: the old certificate does not name it.
    ensure_self_signed(cert.parent, "other.example.test")
    assert cert.read_bytes() != original
    assert "DNS:other.example.test" in describe_certificate(cert).sans
    # A damaged key.
    current = cert.read_bytes()
    key.write_text("damaged")
    ensure_self_signed(cert.parent, "other.example.test")
    assert cert.read_bytes() != current
    server_context(cert, key)
    # Close to expiry.
    current = cert.read_bytes()
    real_now = tls._utcnow()
    monkeypatch.setattr(tls, "_utcnow", lambda: real_now + dt.timedelta(days=360))
    ensure_self_signed(cert.parent, "other.example.test")
    assert cert.read_bytes() != current


def test_self_signed_ip_and_idn_hostnames(tmp_path: Path) -> None:
    cert, _ = ensure_self_signed(tmp_path / "ip", "127.0.0.2")
    assert describe_certificate(cert).sans == ("IP:127.0.0.2", "DNS:localhost", "IP:127.0.0.1")
    cert, _ = ensure_self_signed(tmp_path / "idn", "b\u00fccher.example")
    assert describe_certificate(cert).sans[0] == "DNS:xn--bcher-kva.example"


def test_self_signed_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TLSConfigError, match="cannot write a self-signed certificate"):
        ensure_self_signed(blocker / "certs", "mail.example.test")


def test_describe_ca_issued_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("mx.example.test", "127.0.0.1")
    path = tmp_path / "chain.pem"
    path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    facts = describe_certificate(path)
    assert not facts.self_signed
    assert facts.issuer != facts.subject
    assert facts.sans == ("DNS:mx.example.test", "IP:127.0.0.1")
    assert len(facts.sha256) == 64
