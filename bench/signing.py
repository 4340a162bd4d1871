"""The DKIM benchmark's peer: dkimpy signing a 1 KB message, RSA-2048 and Ed25519 (RFC 6376, RFC 8463).

dkimpy (the library most Python mail software signs with) signs the same message N times per
algorithm, relaxed/simple canonicalization, five signed header fields, keys made fresh with
`cryptography`.  One signature of each kind is then verified by dkimpy against its public key
(served by a lookup function, not DNS), so the figure is for signatures that verify.

mailwright joins when it signs (it does not yet); the issue's target is at least 10x dkimpy.

Not responsible for: DKIM verification speed, or anything with sockets.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SELECTOR, DOMAIN = b"bench", b"bench.test"
HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]
MESSAGE = (
    b"From: load@client.bench.test\r\nTo: rcpt@bench.test\r\nSubject: DKIM benchmark\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dkim.1@client.bench.test>\r\n\r\n"
    + (b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n")
    * 14
)
ALGORITHMS = {"rsa-sha256": "RSA-2048 (rsa-sha256)", "ed25519-sha256": "Ed25519 (ed25519-sha256)"}


def _keys() -> dict[str, tuple[bytes, bytes]]:
    """(private key as dkimpy takes it, the p= value of the DNS record) per algorithm."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem, traditional = serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL
    rsa_private = rsa_key.private_bytes(pem, traditional, serialization.NoEncryption())
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_private = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "rsa-sha256": (rsa_private, base64.b64encode(rsa_public)),
        "ed25519-sha256": (base64.b64encode(ed_private), base64.b64encode(ed_public)),
    }


def run(count: int) -> dict[str, Any]:
    """Signatures per second per algorithm; an "error" key when a signature does not verify."""
    result: dict[str, Any] = {"library": "dkimpy", "messages": count, "bytes": len(MESSAGE), "algorithms": {}}
    for algorithm, (private, public) in _keys().items():
        start = time.perf_counter()
        options: dict[str, Any] = {"include_headers": HEADERS, "signature_algorithm": algorithm.encode()}
        for _ in range(count):
            signature = dkim.sign(MESSAGE, SELECTOR, DOMAIN, private, **options)
        seconds = time.perf_counter() - start
        kind = b"rsa" if algorithm.startswith("rsa") else b"ed25519"
        record = b"v=DKIM1; k=" + kind + b"; p=" + public

        def lookup(name: bytes, timeout: int = 5, record: bytes = record) -> bytes:
            return record if name == SELECTOR + b"._domainkey." + DOMAIN + b"." else b""

        if not dkim.verify(signature + MESSAGE, dnsfunc=lookup):
            result["error"] = f"dkimpy's own {algorithm} signature does not verify"
        result["algorithms"][algorithm] = {"sig_per_s": count / seconds, "seconds": seconds}
    return result
