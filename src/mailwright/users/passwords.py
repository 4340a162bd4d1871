"""Password hashing with scrypt, stored in the PHC string format.

``hash_password`` returns ``$scrypt$ln=14,r=8,p=1$<salt>$<hash>`` where salt (16 random bytes)
and hash (32 bytes) are base64 without padding (the PHC "B64" encoding).  `verify` recomputes
the hash with the parameters stored in the string and compares in constant time.

Invariants:
- Passwords are normalised to Unicode NFC before hashing (RFC 8265 section 4.2, the
  OpaqueString profile), so the same password typed on different systems matches.
- `verify` never raises for a malformed or hostile stored string: it returns False.  Stored
  parameters are bounded (ln <= 20, r <= 32, p <= 16) so a corrupted database cannot make one
  check take unbounded memory or time.
- Nothing here keeps a password after returning.

Cost: one hash or verify is about 50 ms of CPU and 16 MiB of memory; callers on an event loop
use `UserStore.averify_password`, which runs it in a thread.

Not responsible for: where hashes are stored (`mailwright.users.store`), SASL decoding, or
rate limiting guesses (`mailwright.limits.auth_failures`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata

LOG_N = 14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32

_ENCODED = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int, length: int) -> bytes:
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    # OpenSSL refuses work above maxmem; scrypt needs 128 * r * N bytes plus a little.
    maxmem = 128 * r * (2**log_n) * (p + 1) + 1024 * 1024
    return hashlib.scrypt(secret, salt=salt, n=2**log_n, r=r, p=p, maxmem=maxmem, dklen=length)


def hash_password(password: str) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, LOG_N, R, P, HASH_BYTES)
    return f"$scrypt$ln={LOG_N},r={R},p={P}${_b64encode(salt)}${_b64encode(digest)}"


def verify(password: str, encoded: str) -> bool:
    """True when `password` hashes to `encoded`; constant-time comparison."""
    m = _ENCODED.match(encoded)
    if m is None:
        return False
    log_n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= log_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    try:
        salt = _b64decode(m.group(4))
        expected = _b64decode(m.group(5))
    except (binascii.Error, ValueError):
        return False
    if not 8 <= len(salt) <= 64 or not 16 <= len(expected) <= 64:
        return False
    try:
        actual = _scrypt(password, salt, log_n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str) -> bool:
    """True when `encoded` was made with other parameters than the current ones."""
    m = _ENCODED.match(encoded)
    return m is None or (int(m.group(1)), int(m.group(2)), int(m.group(3))) != (LOG_N, R, P)


# A hash of a random, discarded password with the current parameters: verifying against it costs
# the same as verifying a real user, so a missing user cannot be told apart by timing.
DUMMY_HASH = "$scrypt$ln=14,r=8,p=1$nezf6KuejZr+Ww4B6FdxnA$e9xFaOdEoaZr2ThMyWinrX/Z3oAUV3mfMQ2mJOyOjYs"
