"""TLS contexts for the server and the client, certificate reload, self-signed certificates, facts.

What it does:
- `server_context`: a hardened server context (TLS 1.2 minimum, no compression, no
  renegotiation, server cipher preference, no session tickets) with the certificate chain
  loaded, and every loading problem turned into a `TLSConfigError` that names the file and
  the fix.
- `client_context`: verifying by default (hostname and chain), TLS 1.2 minimum.
- `ReloadableServerContext`: one context object handed to asyncio once; `reload()` makes new
  handshakes use a new certificate without restarting listeners.
- `ensure_self_signed`: a self-signed EC P-256 certificate for first start or tests.
- `describe_certificate` / `session_facts`: text for start-up logs and Received headers.

Invariants:
- A failed load or reload never leaves a half-configured context in use: the new certificate
  and key are loaded into a fresh context first, and only a complete one is switched to.
- Key files are written with mode 0600, atomically (temporary file, fsync, rename).

Reload design: `ssl.SSLContext` has no way to drop a loaded certificate, and OpenSSL keeps one
certificate per key type, so calling `load_cert_chain` again on the live context would keep
serving an old RSA certificate next to a new EC one, and a failure half-way would leave it
inconsistent.  Instead the live context's `sni_callback` (which OpenSSL runs for every
ClientHello, with or without SNI) moves each new handshake onto the newest complete context.
Established connections keep their session.

RFCs: RFC 8996 (no TLS 1.0/1.1), RFC 7525 / RFC 9325 (TLS recommendations), RFC 3207
(STARTTLS, which uses these contexts), RFC 5280 (certificate fields).

Not responsible for: deciding when to reload (signals/timers in the server), logging
(callers log what these functions return), MTA-STS or DANE policy, and the sockets themselves.
"""

from __future__ import annotations

import datetime as dt
import grp
import ipaddress
import os
import pwd
import ssl
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import idna
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SELF_SIGNED_CERT = "selfsigned-cert.pem"
SELF_SIGNED_KEY = "selfsigned-key.pem"
SELF_SIGNED_VALIDITY = dt.timedelta(days=365)
# A reused self-signed certificate must stay valid at least this long, so a server started
# just before expiry does not begin failing handshakes days later.
SELF_SIGNED_RENEW_BEFORE = dt.timedelta(days=7)
# A full chain is a few KiB; this bounds what a wrong path (a log, a disk image) makes us read.
MAX_PEM_BYTES = 1024 * 1024


class TLSConfigError(Exception):
    """A certificate, key or CA file cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    subject: str
    issuer: str
    sans: tuple[str, ...]  # "DNS:mx.example.com", "IP:127.0.0.1"
    not_before: dt.datetime
    not_after: dt.datetime
    self_signed: bool
    sha256: str  # hex fingerprint of the DER certificate

    def __str__(self) -> str:
        kind = "self-signed" if self.self_signed else f"issued by {self.issuer}"
        names = ", ".join(self.sans) or "no SANs"
        return f"{self.subject} ({names}), {kind}, valid until {self.not_after:%Y-%m-%d %H:%M UTC}"


def _who() -> tuple[str, str]:
    """This process's user and group names, for a message (ids where the names are unknown)."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    return user, group


def _read(path: Path, what: str) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer, so it can be refused below; a
        # device would be read without end. Neither is a certificate or a key.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                raise TLSConfigError(
                    f"{what} file {path} is a device, FIFO or socket, not a PEM file (fix: point the "
                    "setting under [tls] at the file itself)"
                )
            data = f.read(MAX_PEM_BYTES + 1)
        if len(data) > MAX_PEM_BYTES:
            raise TLSConfigError(
                f"{what} file {path} is larger than 1 MiB, which no PEM {what} is (fix: check the "
                "setting under [tls])"
            )
        return data
    except FileNotFoundError:
        raise TLSConfigError(
            f"{what} file {path} does not exist (fix: correct the path under [tls])"
        ) from None
    except IsADirectoryError:
        raise TLSConfigError(
            f"{what} file {path} is a directory (fix: point the setting under [tls] at the file)"
        ) from None
    except PermissionError:
        user, group = _who()
        raise TLSConfigError(
            f"{what} file {path} is not readable by user {user}, as whom the server runs (permission "
            f"denied) (fix: let that user read it and enter the directories above it, e.g. chgrp {group} "
            f"{path} && chmod g+r {path}, or add {user} to a group that may, ssl-cert on Debian)"
        ) from None
    except OSError as exc:
        raise TLSConfigError(
            f"{what} file {path} cannot be read: {exc.strerror} (fix: check the path under [tls])"
        ) from None


def _certificates(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        pass
    fix = "cert names the certificate chain in PEM, e.g. Let's Encrypt's fullchain.pem, and key its key"
    if not data.strip():
        problem = "is empty"
    elif b"PRIVATE KEY-----" in data:
        problem = "holds a private key, not a certificate: are cert and key the other way round?"
    elif _is_der(data, x509.load_der_x509_certificate):
        problem = "holds a DER certificate, not PEM"
        fix = f"convert it, openssl x509 -inform der -in {path} -out {path}.pem, and point cert there"
    else:
        problem = "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    raise TLSConfigError(f"certificate file {path} {problem} (fix: {fix})")


def _is_der(data: bytes, load: Callable[[bytes], object]) -> bool:
    try:
        load(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _private_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(
            f"key file {path} is encrypted, and the server cannot ask for its passphrase (fix: decrypt "
            f"it, openssl pkey -in {path} -out {path}.plain, keep that mode 0600 and point key there)"
        ) from None
    except ValueError:
        pass
    except UnsupportedAlgorithm as exc:
        raise TLSConfigError(
            f"key file {path} uses an unsupported key type: {exc} (fix: an RSA or EC key)"
        ) from None
    fix = "key names the certificate's private key in PEM, e.g. Let's Encrypt's privkey.pem"
    if not data.strip():
        problem = "is empty"
    elif b"-----BEGIN CERTIFICATE-----" in data:
        problem = "holds a certificate, not a private key: are cert and key the other way round?"
    elif _is_der(data, lambda der: serialization.load_der_private_key(der, password=None)):
        problem = "holds a DER key, not PEM"
        fix = f"convert it, openssl pkey -inform der -in {path} -out {path}.pem, and point key there"
    else:
        problem = "holds no usable PEM private key (-----BEGIN PRIVATE KEY-----)"
    raise TLSConfigError(f"key file {path} {problem} (fix: {fix})")


def _matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    chain = _certificates(cert)
    private = _private_key(key)
    if not _matches(chain[0], private):
        raise TLSConfigError(
            f"key file {key} does not match certificate file {cert} (fix: the first certificate in "
            f"{cert.name} must be the server's own, issued for this key: put it first, or name its key)"
        )
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None)
        fix = _OPENSSL_FIXES.get(
            str(reason),
            f"check both files: openssl x509 -in {cert} -noout -subject; openssl pkey -in {key} -noout",
        )
        raise TLSConfigError(
            f"OpenSSL refused certificate {cert} with key {key}: {exc} (fix: {fix})"
        ) from None


# OpenSSL's reasons (security level 2, Debian's default) that the operator can act on.
_OPENSSL_FIXES = {
    "EE_KEY_TOO_SMALL": "the key is too small for OpenSSL's security level: make a new key, RSA of "
    "2048 bits or more, or EC P-256, and get a certificate for it",
    "CA_MD_TOO_WEAK": "the certificate is signed with SHA-1 or MD5, which OpenSSL refuses: get a new one",
    "CA_KEY_TOO_SMALL": "a certificate in the chain has a key too small for OpenSSL: get a current chain",
}


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with `cert` (PEM chain, own certificate first) and `key` loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    # No session tickets. OpenSSL seals them with a key made with the context, which Python
    # cannot rotate, so it would live as long as the process; and a TLS 1.2 ticket crosses the
    # wire in clear with the session's master secret inside, so that one key would open every
    # recorded session that got a ticket (RFC 9325 3.4: change ticket keys regularly or lose
    # forward secrecy). OP_NO_TICKET alone would keep TLS 1.3's tickets as entries of each
    # process's session cache instead (up to 20,480), so none are sent at all. SMTP loses
    # little: a full handshake costs a fraction of a millisecond, and with several workers a
    # ticket came back to the worker that made it only now and then.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    _load_chain(context, Path(cert), Path(key))
    return context


def client_context(*, verify: bool = True, cafile: Path | None = None) -> ssl.SSLContext:
    """A client context; verifies chain and hostname unless `verify` is False.

    With `cafile`, only that file's CAs are trusted; otherwise the system store is used.
    `verify=False` is for opportunistic STARTTLS to MX hosts (RFC 3207 section 4.1), where an
    unverified session still beats plaintext.
    """
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if cafile is None else str(cafile)
        )
    except FileNotFoundError:
        raise TLSConfigError(f"CA file {cafile} does not exist: fix the path or omit it") from None
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"CA file {cafile} holds no usable PEM certificates: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ReloadableServerContext:
    """A server context whose certificate can be replaced while listeners keep running.

    Hand `context` to asyncio once; `reload()` re-reads `cert` and `key` and new handshakes
    use them.  On failure the previous certificate stays in use and TLSConfigError is raised.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.context = server_context(self.cert, self.key)
        self._current = self.context
        self.context.sni_callback = self._select

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self._current
        if context is not current:
            ssl_object.context = current

    def reload(self) -> None:
        # Build completely first: a failure leaves `_current` untouched.
        self._current = server_context(self.cert, self.key)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san_for(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    if hostname.isascii():
        return x509.DNSName(hostname.lower())
    try:
        return x509.DNSName(idna.encode(hostname, uts46=True).decode("ascii"))
    except idna.IDNAError as exc:
        raise TLSConfigError(f"hostname {hostname!r} cannot go into a certificate: {exc}") from None


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def _reusable(cert_path: Path, key_path: Path, hostname: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        wanted = _san_for(hostname)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, TLSConfigError):
        return False
    now = _utcnow()
    return (
        _matches(cert, key)
        and cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc - now > SELF_SIGNED_RENEW_BEFORE
        and wanted in _sans(cert)
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _self_signed(hostname: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    # CN is limited to 64 characters (RFC 5280 upper bound); the SAN carries the real name.
    common_name = hostname if len(hostname) <= 64 else "mailwright self-signed"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    sans: list[x509.GeneralName] = [_san_for(hostname)]
    for extra in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        if extra not in sans:
            sans.append(extra)
    now = _utcnow()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew on peers
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Return (cert, key) paths of a self-signed certificate for `hostname` in `directory`.

    An existing pair is reused while it parses, matches, names `hostname` and stays valid for
    more than SELF_SIGNED_RENEW_BEFORE; otherwise a new EC P-256 pair valid for one year is
    written (SANs: hostname, localhost, 127.0.0.1).
    """
    directory = Path(directory)
    cert_path = directory / SELF_SIGNED_CERT
    key_path = directory / SELF_SIGNED_KEY
    if _reusable(cert_path, key_path, hostname):
        return cert_path, key_path
    cert_pem, key_pem = _self_signed(hostname)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Key first: a crash between the two renames leaves a mismatched pair, which the
        # next call detects and replaces, never a reused stale key.
        _write_atomic(key_path, key_pem, 0o600)
        _write_atomic(cert_path, cert_pem, 0o644)
    except OSError as exc:
        blocker = next(
            (p for p in (*reversed(directory.parents), directory) if p.exists() and not p.is_dir()), None
        )
        if blocker is not None:
            # mkdir says only "File exists": the file in the way is what to name.
            raise TLSConfigError(
                f"cannot write a self-signed certificate into {directory}: {blocker} is a file, not a "
                "directory (fix: move that file away, or set [tls] cert and key)"
            ) from None
        raise TLSConfigError(
            f"cannot write a self-signed certificate into {directory}: {exc.strerror} "
            "(fix: let the server's user write that directory, or set [tls] cert and key)"
        ) from None
    return cert_path, key_path


def _describe_name(general: x509.GeneralName) -> str:
    if isinstance(general, x509.DNSName):
        return f"DNS:{general.value}"
    if isinstance(general, x509.IPAddress):
        return f"IP:{general.value}"
    return f"{type(general).__name__}:{general.value}"


def describe_certificate(cert: Path) -> CertificateFacts:
    """Facts about the first (own) certificate in a PEM file, for start-up logs."""
    leaf = _certificates(Path(cert))[0]
    self_signed = leaf.issuer == leaf.subject
    if self_signed:
        try:
            leaf.verify_directly_issued_by(leaf)
        except Exception:  # InvalidSignature, ValueError, TypeError: not really self-signed
            self_signed = False
    return CertificateFacts(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        sans=tuple(_describe_name(n) for n in _sans(leaf)),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        self_signed=self_signed,
        sha256=leaf.fingerprint(hashes.SHA256()).hex(),
    )


def session_facts(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str:
    """Protocol, cipher and strength of an established session, e.g. for Received headers.

    Example: "TLS1.3 TLS_AES_256_GCM_SHA384 (256 bits)"; "TLS" alone before the handshake.
    """
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    if cipher is None or version is None:
        return "TLS"
    name, _protocol, bits = cipher
    return f"{version.replace('TLSv', 'TLS')} {name} ({bits} bits)"
