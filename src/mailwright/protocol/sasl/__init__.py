"""SASL for SMTP AUTH (RFC 4954), sans-IO, in both roles.

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195),
XOAUTH2 (Google) and OAUTHBEARER (RFC 7628).  Server mechanisms turn decoded client responses
into challenges and, finally, the claimed `Credentials`; client mechanisms produce the
decoded responses.  Base64 framing of AUTH lines is `decode_response` on the way in; the
engine encodes challenges and responses on the way out.

Invariants: no IO, clock or randomness (the CRAM-MD5 nonce is an argument); hostile bytes
only ever raise `SMTPError`.

Not responsible for: verifying credentials (users), offering mechanisms only under TLS
(policy), replies and failure counting (the SMTP engine).
"""

from mailwright.protocol.sasl.client import CLIENT_MECHANISMS, client_mechanism
from mailwright.protocol.sasl.model import (
    MAX_FIELD,
    MAX_TOKEN,
    Challenge,
    ClientMechanism,
    Credentials,
    ServerMechanism,
    decode_response,
)
from mailwright.protocol.sasl.server import SERVER_MECHANISMS, error_challenge, server_mechanism

__all__ = [
    "CLIENT_MECHANISMS",
    "MAX_FIELD",
    "MAX_TOKEN",
    "SERVER_MECHANISMS",
    "Challenge",
    "ClientMechanism",
    "Credentials",
    "ServerMechanism",
    "client_mechanism",
    "decode_response",
    "error_challenge",
    "server_mechanism",
]
