"""Server side of the SASL mechanisms used with SMTP AUTH: PLAIN, LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER.

Each mechanism is a small state machine fed with DECODED client responses (the engine runs
`decode_response` on each line): `start(initial)` takes the optional initial response of the
AUTH command, `step(response)` each later response.  Both return the next `Challenge`, or the
claimed `Credentials` when the exchange is complete.

Followed: RFC 4954 section 4 (an initial response of "=" is empty, answered by an empty 334),
RFC 4616 (PLAIN), draft-murchison-sasl-login (LOGIN, "Username:"/"Password:" prompts; an
initial response carries the user name, as Outlook sends it), RFC 2195 (CRAM-MD5, challenge
"<nonce@hostname>", response "user SP 32 hex digits"), Google's XOAUTH2
("user=" user ^A "auth=Bearer " token ^A ^A) and RFC 7628 (OAUTHBEARER, GS2 header
"n,a=user," then key=value pairs separated by ^A).

Invariants:
- No IO, no clock, no randomness: the CRAM-MD5 nonce comes from the caller.
- For any bytes, the only exception raised is `SMTPError` (501 5.5.2 for malformed content);
  after it, or after `Credentials`, the exchange is over and further calls are a caller bug
  (RuntimeError).
- A mechanism never decides whether credentials are valid.

Not responsible for: verifying passwords, digests or tokens (users module), base64 framing
and the 334/235/535 replies (the SMTP engine), and deciding which mechanisms to offer (for
example PLAIN/LOGIN only under TLS: policy).  For the XOAUTH2/OAUTHBEARER failure dance the
engine sends `error_challenge(...)`, reads one more client line whatever it holds, and then
replies 535 (RFC 7628 section 3.2.3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from mailwright.protocol.reply import SMTPError
from mailwright.protocol.sasl.model import (
    Challenge,
    Credentials,
    ServerMechanism,
    bearer,
    check_size,
    identity,
    malformed,
    password,
)

SERVER_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")

_HEX32 = re.compile(rb"[0-9a-fA-F]{32}")
# Printable ASCII without the characters that delimit the msg-id form <nonce@host>.
_CRAM_PART = re.compile(r"[!-;=?A-~]+")
_SASLNAME = re.compile(rb"(?:[^=]|=2C|=3D)*")
_KEY = re.compile(rb"[A-Za-z]+")


class _Exchange:
    """Shared sequencing: start once, step until finished; errors end the exchange."""

    name: str = ""

    def __init__(self) -> None:
        self._started = False
        self._finished = False

    def start(self, initial: bytes | None) -> Challenge | Credentials:
        if self._started:
            raise RuntimeError(f"{self.name}: start() called twice")
        self._started = True
        return self._guard(lambda: self._on_start(None if initial is None else self._sized(initial)))

    def step(self, response: bytes) -> Challenge | Credentials:
        if not self._started or self._finished:
            raise RuntimeError(f"{self.name}: step() outside an exchange")
        return self._guard(lambda: self._on_step(self._sized(response)))

    def _sized(self, data: bytes) -> bytes:
        check_size(self.name, data)
        return data

    def _guard(self, action: Callable[[], Challenge | Credentials]) -> Challenge | Credentials:
        try:
            result = action()
        except SMTPError:
            self._finished = True
            raise
        if isinstance(result, Credentials):
            self._finished = True
        return result

    def _on_start(self, initial: bytes | None) -> Challenge | Credentials:
        raise NotImplementedError

    def _on_step(self, response: bytes) -> Challenge | Credentials:
        raise NotImplementedError


class _SingleMessage(_Exchange):
    """Client-first mechanisms that carry everything in one message."""

    def _on_start(self, initial: bytes | None) -> Challenge | Credentials:
        # An absent or empty ("=") initial response asks for the message (RFC 4954 section 4).
        if not initial:
            return Challenge(b"")
        return self._parse(initial)

    def _on_step(self, response: bytes) -> Challenge | Credentials:
        return self._parse(response)

    def _parse(self, message: bytes) -> Credentials:
        raise NotImplementedError


class PlainServer(_SingleMessage):
    """RFC 4616: one message `[authzid] NUL authcid NUL passwd`."""

    name = "PLAIN"

    def _parse(self, message: bytes) -> Credentials:
        parts = message.split(b"\x00")
        if len(parts) != 3:
            raise malformed(self.name, "expected authzid NUL authcid NUL password (exactly two NULs)")
        authzid = identity(self.name, "authorization identity", parts[0], optional=True)
        authcid = identity(self.name, "user name", parts[1])
        secret = password(self.name, parts[2])
        return Credentials(self.name, authcid, authzid or None, password=secret)


class LoginServer(_Exchange):
    """draft-murchison-sasl-login: prompt for the user name, then the password."""

    name = "LOGIN"

    def __init__(self) -> None:
        super().__init__()
        self._user: str | None = None

    def _on_start(self, initial: bytes | None) -> Challenge | Credentials:
        if initial is None:
            return Challenge(b"Username:")
        self._user = identity(self.name, "user name", initial)
        return Challenge(b"Password:")

    def _on_step(self, response: bytes) -> Challenge | Credentials:
        if self._user is None:
            self._user = identity(self.name, "user name", response)
            return Challenge(b"Password:")
        return Credentials(self.name, self._user, password=password(self.name, response))


class CramMD5Server(_Exchange):
    """RFC 2195: send `<nonce@hostname>`, receive `user SP hex(HMAC-MD5(secret, challenge))`."""

    name = "CRAM-MD5"

    def __init__(self, *, hostname: str, nonce: str) -> None:
        super().__init__()
        for what, value in (("hostname", hostname), ("nonce", nonce)):
            if not _CRAM_PART.fullmatch(value):
                raise ValueError(f"CRAM-MD5 {what} {value!r} must be printable ASCII without <, > or @")
        self.challenge = f"<{nonce}@{hostname}>".encode("ascii")

    def _on_start(self, initial: bytes | None) -> Challenge | Credentials:
        # The server speaks first in CRAM-MD5, so an initial response cannot be meaningful.
        if initial is not None:
            raise malformed(self.name, "mechanism takes no initial response")
        return Challenge(self.challenge)

    def _on_step(self, response: bytes) -> Challenge | Credentials:
        user, sep, digest = response.rpartition(b" ")
        if not sep or not _HEX32.fullmatch(digest):
            raise malformed(self.name, "expected 'user SP 32 hex digits'")
        authcid = identity(self.name, "user name", user)
        return Credentials(
            self.name,
            authcid,
            cram_challenge=self.challenge,
            cram_digest=digest.decode("ascii").lower(),
        )


def _pairs(mechanism: str, block: bytes, allowed: frozenset[bytes] | None) -> dict[bytes, bytes]:
    """Split `key=value ^A key=value ^A ^A` (the trailing ^A^A already checked) into a dict."""
    out: dict[bytes, bytes] = {}
    for field in block.split(b"\x01"):
        key, sep, value = field.partition(b"=")
        if not sep or not _KEY.fullmatch(key):
            raise malformed(mechanism, "expected key=value fields separated by ^A")
        if allowed is not None and key not in allowed:
            raise malformed(mechanism, f"unknown field {key.decode('ascii')!r}")
        if key in out:
            raise malformed(mechanism, f"duplicate field {key.decode('ascii')!r}")
        out[key] = value
    return out


class XOAuth2Server(_SingleMessage):
    """Google XOAUTH2: `user=U ^A auth=Bearer T ^A ^A`, client-first."""

    name = "XOAUTH2"

    def _parse(self, message: bytes) -> Credentials:
        if not message.endswith(b"\x01\x01"):
            raise malformed(self.name, "message must end with ^A^A")
        fields = _pairs(self.name, message[:-2], frozenset({b"user", b"auth"}))
        if b"user" not in fields or b"auth" not in fields:
            raise malformed(self.name, "both user= and auth= are required")
        user = identity(self.name, "user name", fields[b"user"])
        return Credentials(self.name, user, token=bearer(self.name, fields[b"auth"]))


class OAuthBearerServer(_SingleMessage):
    """RFC 7628 OAUTHBEARER: GS2 header `n,a=user,` then `^A key=value ^A ... ^A ^A`."""

    name = "OAUTHBEARER"

    def _parse(self, message: bytes) -> Credentials:
        header, sep, rest = message.partition(b"\x01")
        if not sep or not rest.endswith(b"\x01\x01"):
            raise malformed(self.name, "expected GS2 header ^A key=value ^A ... ^A ^A")
        user = self._gs2_user(header)
        # host= and port= (RFC 7628 section 3.1) and future keys are allowed and ignored.
        fields = _pairs(self.name, rest[:-2], None)
        if b"auth" not in fields:
            raise malformed(self.name, "auth= is required")
        return Credentials(self.name, user, token=bearer(self.name, fields[b"auth"]))

    def _gs2_user(self, header: bytes) -> str:
        if header.startswith(b"F,"):
            header = header[2:]
        parts = header.split(b",")
        if len(parts) != 3 or parts[2] != b"":
            raise malformed(self.name, "malformed GS2 header")
        if parts[0] not in (b"n", b"y"):
            raise malformed(self.name, "channel binding is not supported")
        authz = parts[1]
        # The user is named by a= here; without it we could only trust the token's own claims,
        # which the users module cannot see from an opaque token.
        if not authz.startswith(b"a="):
            raise malformed(self.name, "GS2 header must name the user with a=")
        raw = authz[2:]
        if not _SASLNAME.fullmatch(raw):
            raise malformed(self.name, "bad escape in a= (only =2C and =3D allowed)")
        return identity(self.name, "user name", raw.replace(b"=2C", b",").replace(b"=3D", b"="))


def server_mechanism(name: str, *, hostname: str, nonce: str) -> ServerMechanism:
    """A fresh server mechanism for `name` (case-insensitive); KeyError when unknown.

    `hostname` and `nonce` build the CRAM-MD5 challenge; pass a fresh random nonce per
    exchange (for example os.urandom hex plus a timestamp), which this module cannot make.
    """
    key = name.upper()
    if key == "PLAIN":
        return PlainServer()
    if key == "LOGIN":
        return LoginServer()
    if key == "CRAM-MD5":
        return CramMD5Server(hostname=hostname, nonce=nonce)
    if key == "XOAUTH2":
        return XOAuth2Server()
    if key == "OAUTHBEARER":
        return OAuthBearerServer()
    raise KeyError(name)


def error_challenge(mechanism: str | ServerMechanism, *, scope: str | None = None) -> Challenge | None:
    """The JSON error challenge sent before a 535 for token mechanisms, else None.

    XOAUTH2 follows Google's form ({"status":"401","schemes":"bearer",...}); OAUTHBEARER
    follows RFC 7628 section 3.2.2 ({"status":"invalid_token",...}).  The client answers with
    an empty response (XOAUTH2) or a single ^A (OAUTHBEARER); the engine then sends 535.
    """
    name = (mechanism if isinstance(mechanism, str) else mechanism.name).upper()
    body: dict[str, str]
    if name == "XOAUTH2":
        body = {"status": "401", "schemes": "bearer"}
    elif name == "OAUTHBEARER":
        body = {"status": "invalid_token"}
    else:
        return None
    if scope is not None:
        body["scope"] = scope
    return Challenge(json.dumps(body, separators=(",", ":")).encode("utf-8"))
