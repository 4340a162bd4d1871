"""Client side of the SASL mechanisms: PLAIN, LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER.

A client mechanism produces DECODED responses; the engine base64-encodes them (sending
"=" for an empty initial response, RFC 4954 section 4).  Call `initial()` only when its result
will really be sent on the AUTH line; then call `respond(challenge)` for each 334 challenge.

Followed: RFC 4616 (PLAIN), draft-murchison-sasl-login (LOGIN), RFC 2195 (CRAM-MD5), Google
XOAUTH2, RFC 7628 (OAUTHBEARER; after a JSON error challenge the client sends ^A, section
3.2.3; for XOAUTH2 it sends an empty response).

Invariants:
- Arguments that cannot be encoded (NUL in a PLAIN field, ^A in a token, a missing password)
  raise ValueError at construction, before anything is sent.
- A challenge the mechanism cannot answer (one too many, or the wrong shape) raises
  `SMTPError(R.AUTH_CANCELLED...)`: the engine should send "*" and report it.
- After a token mechanism receives an error challenge, `error` holds its text.

Not responsible for: choosing a mechanism from the server's EHLO list, obtaining or refreshing
OAuth tokens (client library), and the network.
"""

from __future__ import annotations

import hashlib
import hmac

from mailwright.protocol.reply import R, SMTPError
from mailwright.protocol.sasl.model import ClientMechanism

CLIENT_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")


def _cancel(mechanism: str, why: str) -> SMTPError:
    return SMTPError(R.AUTH_CANCELLED.with_text(f"Authentication cancelled: {mechanism}: {why}"))


def _require(mechanism: str, what: str, value: str | None, forbidden: str) -> str:
    if not value:
        raise ValueError(f"{mechanism} needs a non-empty {what}")
    bad = [c for c in forbidden if c in value]
    if bad:
        raise ValueError(f"{mechanism} {what} must not contain {bad[0]!r}")
    return value


class PlainClient:
    name = "PLAIN"

    def __init__(self, username: str, password: str | None, authzid: str | None) -> None:
        user = _require(self.name, "username", username, "\x00")
        secret = _require(self.name, "password", password, "\x00")
        authz = _require(self.name, "authzid", authzid, "\x00") if authzid else ""
        self._message = f"{authz}\x00{user}\x00{secret}".encode()
        self._sent = False

    def initial(self) -> bytes | None:
        self._sent = True
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        # The only legitimate challenge is the empty one asking for the message.
        if self._sent or challenge:
            raise _cancel(self.name, "unexpected challenge")
        self._sent = True
        return self._message


class LoginClient:
    name = "LOGIN"

    def __init__(self, username: str, password: str | None) -> None:
        self._user = _require(self.name, "username", username, "\x00\r\n").encode()
        self._password = _require(self.name, "password", password, "\x00\r\n").encode()
        self._user_sent = False
        self._password_sent = False

    def initial(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        # Servers word the prompts differently ("Username:", "User Name"), so order decides,
        # except that an explicit password prompt is honoured.
        asks_password = challenge.strip().lower().startswith(b"password")
        if not self._user_sent and not asks_password:
            self._user_sent = True
            return self._user
        if not self._password_sent:
            self._password_sent = True
            return self._password
        raise _cancel(self.name, "unexpected third challenge")


class CramMD5Client:
    name = "CRAM-MD5"

    def __init__(self, username: str, password: str | None) -> None:
        self._user = _require(self.name, "username", username, "\x00\r\n")
        self._secret = _require(self.name, "password", password, "").encode()
        self._answered = False

    def initial(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        if self._answered or not challenge:
            raise _cancel(self.name, "unexpected challenge")
        self._answered = True
        digest = hmac.new(self._secret, challenge, hashlib.md5).hexdigest()
        return f"{self._user} {digest}".encode()


class _TokenClient:
    """Shared behaviour of XOAUTH2 and OAUTHBEARER: one message, then the error dance."""

    name = ""
    _after_error = b""

    def __init__(self, message: bytes) -> None:
        self._message = message
        self._sent = False
        self.error: str | None = None

    def initial(self) -> bytes | None:
        self._sent = True
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        if not challenge and not self._sent:
            self._sent = True
            return self._message
        if challenge and self._sent and self.error is None:
            # A non-empty challenge after the message is the server's JSON error report.
            self.error = challenge.decode("utf-8", "replace")
            return self._after_error
        raise _cancel(self.name, "unexpected challenge")


class XOAuth2Client(_TokenClient):
    name = "XOAUTH2"
    _after_error = b""

    def __init__(self, username: str, token: str | None) -> None:
        user = _require(self.name, "username", username, "\x00\x01\r\n")
        tok = _require(self.name, "token", token, "\x00\x01\r\n ")
        super().__init__(f"user={user}\x01auth=Bearer {tok}\x01\x01".encode())


class OAuthBearerClient(_TokenClient):
    name = "OAUTHBEARER"
    _after_error = b"\x01"

    def __init__(self, username: str, token: str | None) -> None:
        user = _require(self.name, "username", username, "\x00\x01\r\n")
        tok = _require(self.name, "token", token, "\x00\x01\r\n ")
        # GS2 saslname escaping (RFC 5801 section 4): "=" first so the escapes stay intact.
        escaped = user.replace("=", "=3D").replace(",", "=2C")
        super().__init__(f"n,a={escaped},\x01auth=Bearer {tok}\x01\x01".encode())


def client_mechanism(
    name: str,
    *,
    username: str,
    password: str | None = None,
    token: str | None = None,
    authzid: str | None = None,
) -> ClientMechanism:
    """A fresh client mechanism for `name` (case-insensitive).

    KeyError for an unknown name; ValueError when a required secret is missing, a value
    cannot be encoded, or `authzid` is given to a mechanism that cannot carry it.
    """
    key = name.upper()
    if key not in CLIENT_MECHANISMS:
        raise KeyError(name)
    if authzid and key != "PLAIN":
        raise ValueError(f"{key} cannot carry an authorization identity")
    if key == "PLAIN":
        return PlainClient(username, password, authzid)
    if key == "LOGIN":
        return LoginClient(username, password)
    if key == "CRAM-MD5":
        return CramMD5Client(username, password)
    if key == "XOAUTH2":
        return XOAuth2Client(username, token)
    return OAuthBearerClient(username, token)
