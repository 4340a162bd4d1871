"""A client engine and a server engine wired together in memory: both roles, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.protocol import events as ev
from mailwright.protocol.client import ClientConnection, ReplyEvent
from mailwright.protocol.reply import Reply
from mailwright.protocol.sasl import client_mechanism
from mailwright.protocol.server import ServerConnection, ServerSettings


class Wire:
    """Moves bytes between the two engines; the server side accepts, stores bodies, checks PLAIN."""

    def __init__(self, settings: ServerSettings) -> None:
        self.server = ServerConnection(settings, nonce=lambda: "42.1")
        self.client = ClientConnection("client.test")
        self.messages: list[bytes] = []
        self.body = bytearray()
        self.writes = 0  # server writes, to show that pipelined replies are batched
        self.replies: list[ReplyEvent] = []

    def pump(self) -> list[ReplyEvent]:
        got: list[ReplyEvent] = []
        for _ in range(100):
            out = self.client.data_to_send()
            if out:
                self.server.receive_data(out)
            while (event := self.server.next_event()) is not None:
                if isinstance(event, ev.BodyChunk):
                    self.body += event.data
                elif isinstance(event, ev.EndOfData):
                    self.messages.append(bytes(self.body))
                    self.body.clear()
                    self.server.accept(Reply(250, "2.0.0", f"OK queued as M{len(self.messages)}"))
                elif isinstance(event, ev.AuthAttempt):
                    if event.credentials.password == "pw":
                        self.server.accept()
                    else:
                        self.server.reject(Reply(535, "5.7.8", "Authentication credentials invalid"))
                elif event.needs_reply:
                    self.server.accept()
            back = self.server.data_to_send()
            if back:
                self.writes += 1
                self.client.receive_data(back)
            while (reply := self.client.next_event()) is not None:
                got.append(reply)
            if not out and not back:
                break
        self.replies += got
        return got


def _session(settings: ServerSettings | None = None) -> Wire:
    w = Wire(
        settings or ServerSettings(hostname="mx.test", tls_active=True, auth_mechanisms=("PLAIN", "LOGIN"))
    )
    assert [r.command for r in w.pump()] == ["GREETING"]
    w.client.ehlo()
    (ehlo,) = w.pump()
    assert ehlo.reply.code == 250
    assert w.client.extensions is not None and w.client.extensions.has("PIPELINING")
    return w


def test_pipelined_transaction_replies_in_one_write() -> None:
    w = _session()
    w.client.mail("a@c.test")
    w.client.rcpt("x@mx.test")
    w.client.rcpt("y@mx.test")
    w.client.data()
    before = w.writes
    replies = w.pump()
    assert [(r.command, r.reply.code) for r in replies] == [
        ("MAIL", 250),
        ("RCPT", 250),
        ("RCPT", 250),
        ("DATA", 354),
    ]
    assert w.writes - before == 1  # four replies, one write
    w.client.body(b"Subject: t\r\n\r\n.dot first\r\nlast line without CRLF")
    w.client.end_data()
    (done,) = w.pump()
    assert (done.command, done.reply.code, done.reply.enhanced) == ("DATA-END", 250, "2.0.0")
    assert w.messages == [b"Subject: t\r\n\r\n.dot first\r\nlast line without CRLF\r\n"]


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("password", ["pw", "wrong"])
def test_sasl_both_roles(mech: str, password: str) -> None:
    w = _session()
    m = client_mechanism(mech, username="alice", password=password)
    w.client.auth(mech, m.initial())
    reply = w.pump()[-1]
    while reply.reply.code == 334:
        w.client.auth_response(m.respond(w.client.auth_challenge(reply.reply)))
        reply = w.pump()[-1]
    assert reply.reply.code == (235 if password == "pw" else 535)


def test_bdat_both_roles() -> None:
    w = _session()
    w.client.mail("a@c.test")
    w.client.rcpt("x@mx.test")
    w.client.bdat(b"Subject: chunked\r\n\r\n")
    w.client.bdat(b"no dot-stuffing here:\r\n.\r\n", last=True)
    codes = [(r.command, r.reply.code) for r in w.pump()]
    assert codes == [("MAIL", 250), ("RCPT", 250), ("BDAT", 250), ("BDAT", 250)]
    assert w.messages == [b"Subject: chunked\r\n\r\nno dot-stuffing here:\r\n.\r\n"]


def test_client_refuses_injection_before_anything_is_written() -> None:
    w = _session()
    with pytest.raises(Exception, match=r"(?i)CR|LF|NUL"):
        w.client.mail("a@c.test>\r\nRCPT TO:<victim@x.test")
    assert w.client.data_to_send() == b""


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4000))
def test_any_body_survives_the_round_trip(body: bytes) -> None:
    """Whatever bytes a sender passes, the server stores exactly what the client framed:
    line ends normalised to CRLF (the client's documented rule), dots intact."""
    w = _session(ServerSettings(hostname="mx.test", max_message_size=10**6))
    w.client.mail("a@c.test")
    w.client.rcpt("x@mx.test")
    w.client.data()
    w.pump()
    # Keep lines under the 998-octet limit so the message must be accepted.
    norm = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = [line[:900] for line in norm.split(b"\n")]
    payload = b"\r\n".join(lines)
    w.client.body(payload)
    w.client.end_data()
    (done,) = w.pump()
    assert done.reply.code == 250
    expected = payload if payload.endswith(b"\r\n") or not payload else payload + b"\r\n"
    assert w.messages == [expected]
