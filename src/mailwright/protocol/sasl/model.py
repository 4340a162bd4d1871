"""SASL data types shared by both roles, the AUTH response decoder, and field checks.

What lives here: the values a server mechanism yields (`Challenge`, `Credentials`), the two
mechanism protocols (`ServerMechanism`, `ClientMechanism`), `decode_response` for the base64
lines of an SMTP AUTH exchange (RFC 4954 section 4), and the checks every mechanism applies
to the identities, passwords and tokens it extracts.

Invariants:
- Every problem with peer-supplied bytes surfaces as `SMTPError`; nothing else escapes for
  any input.  Content errors use 501 5.5.2 with a reason naming the mechanism.
- Identities are non-empty UTF-8 without control characters and at most `MAX_FIELD` octets;
  passwords are non-empty UTF-8 without NUL; bearer tokens follow RFC 6750 `b64token`.
- `Credentials` carries what the client claimed, never a verdict: checking a password, a
  CRAM-MD5 digest or a token is the caller's job (the users module). Its repr leaves out the
  password, the CRAM-MD5 digest and the token.

Not responsible for: base64-encoding challenges into 334 replies or counting failures (the
SMTP engine does), and looking up users or secrets.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Protocol

from mailwright.protocol.reply import R, Reply, SMTPError

# RFC 4616 section 2 asks servers to take at least 255 octets per field; 1 KiB leaves room
# for long UTF-8 names while keeping hostile input small.
MAX_FIELD = 1024
# OAuth access tokens are often JWTs of several KiB (Microsoft's are 1.5-4 KiB), so a 1 KiB
# cap would lock out real clients; 16 KiB still bounds memory.
MAX_TOKEN = 16384
# Upper bound for one decoded response, checked before any parsing work is done.
MAX_RESPONSE = MAX_TOKEN + 4 * MAX_FIELD

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A server challenge; `data` is raw, the engine base64-encodes it into a 334 reply."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client claimed once a mechanism completes; not yet verified."""

    mechanism: str
    authcid: str
    authzid: str | None = None
    # Secrets out of repr: an event or a Credentials formatted into a log line or an exception
    # text must not carry them.
    password: str | None = field(default=None, repr=False)
    cram_challenge: bytes | None = None
    cram_digest: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def verify_cram(self, secret: str) -> bool:
        """True when `cram_digest` is HMAC-MD5(secret, challenge) (RFC 2195 section 2)."""
        if self.cram_challenge is None or self.cram_digest is None:
            return False
        expected = hmac.new(secret.encode("utf-8"), self.cram_challenge, hashlib.md5).hexdigest()
        # Constant-time comparison so the digest cannot be guessed byte by byte.
        return hmac.compare_digest(expected, self.cram_digest)


class ServerMechanism(Protocol):
    """Server side of one SASL exchange: feed decoded responses, get a challenge or the result."""

    name: str

    def start(self, initial: bytes | None) -> Challenge | Credentials: ...

    def step(self, response: bytes) -> Challenge | Credentials: ...


class ClientMechanism(Protocol):
    """Client side of one SASL exchange: produce the (decoded) responses to send."""

    name: str

    def initial(self) -> bytes | None: ...

    def respond(self, challenge: bytes) -> bytes: ...


def decode_response(line: bytes) -> bytes:
    """Decode one client response line of an AUTH exchange (RFC 4954 section 4).

    A trailing CRLF is tolerated.  `=` is the empty initial response and `*` cancels.
    Decoding is strict: characters outside the alphabet, missing or excess padding all fail.
    """
    if line.endswith(b"\r\n"):
        line = line[:-2]
    if line == b"*":
        raise SMTPError(R.AUTH_CANCELLED)
    if line == b"=":
        return b""
    try:
        return binascii.a2b_base64(line, strict_mode=True)
    except (binascii.Error, ValueError):
        raise SMTPError(R.AUTH_BAD_BASE64) from None


def malformed(mechanism: str, reason: str) -> SMTPError:
    """The error for a syntactically bad response; the caller raises it."""
    return SMTPError(Reply(501, "5.5.2", f"{mechanism}: {reason}"))


def check_size(mechanism: str, data: bytes) -> None:
    if len(data) > MAX_RESPONSE:
        raise malformed(mechanism, "response too long")


def utf8(mechanism: str, what: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(mechanism, f"{what} is not valid UTF-8") from None


def identity(mechanism: str, what: str, raw: bytes, *, optional: bool = False) -> str:
    """Check a user name or authorization identity; returns "" only when `optional`."""
    if len(raw) > MAX_FIELD:
        raise malformed(mechanism, f"{what} longer than {MAX_FIELD} octets")
    if not raw:
        if optional:
            return ""
        raise malformed(mechanism, f"empty {what}")
    text = utf8(mechanism, what, raw)
    # Control characters in names would end up in logs and Received headers.
    if _CONTROL.search(text):
        raise malformed(mechanism, f"control character in {what}")
    return text


def password(mechanism: str, raw: bytes) -> str:
    if len(raw) > MAX_FIELD:
        raise malformed(mechanism, f"password longer than {MAX_FIELD} octets")
    if not raw:
        raise malformed(mechanism, "empty password")
    if b"\x00" in raw:
        raise malformed(mechanism, "NUL in password")
    return utf8(mechanism, "password", raw)


def bearer(mechanism: str, raw: bytes) -> str:
    """Parse an RFC 6750 `Bearer <b64token>` value into the token."""
    scheme, sep, token = raw.partition(b" ")
    if not sep or scheme.lower() != b"bearer":
        raise malformed(mechanism, "auth value must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN:
        raise malformed(mechanism, f"token longer than {MAX_TOKEN} octets")
    text = token.decode("ascii", "replace")
    if not _B64TOKEN.fullmatch(text):
        raise malformed(mechanism, "token is not an RFC 6750 b64token")
    return text
