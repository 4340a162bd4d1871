"""Raw-socket checks over real TLS that no library client can make: injection, BDAT, SIZE.

The client here is a plain socket wrapped by Python's ssl module, so the test controls
exactly which bytes travel in which packet (e.g. plaintext pipelined behind STARTTLS).
RFCs: 3207 5 (discard anything pipelined after STARTTLS; STARTTLS only once), 3030
(CHUNKING/BDAT, header cleanup across chunk boundaries), 1870 (SIZE), 6409 8.
Not responsible for: the parsers themselves (protocol/ unit tests cover them).
"""

from __future__ import annotations

import base64
import socket
import ssl

import pytest

from .conftest import HOST, PASSWORD, USER, QueueWatch, spawn, tls_context, unfolded_headers


class Wire:
    """Line-oriented reads of replies on a (possibly TLS) socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One complete (possibly multi-line) reply."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed after {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines)

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()


def _starttls(srv: spawn.SpawnedServer, port_name: str, injected: bytes = b"") -> Wire:
    raw = socket.create_connection((HOST, srv.ports[port_name]), timeout=10)
    wire = Wire(raw)
    assert wire.reply().startswith(b"220 ")
    assert wire.cmd(b"EHLO client.test").startswith(b"250-")
    wire.send(b"STARTTLS\r\n" + injected)
    assert wire.reply().startswith(b"220 2.0.0"), "STARTTLS accepted"
    assert wire.buf == b"", "nothing but the 220 before the handshake"
    tls = tls_context(srv).wrap_socket(raw, server_hostname="mx.test")
    return Wire(tls)


@pytest.mark.parametrize("port_name", ["mx", "submission"])
def test_plaintext_pipelined_after_starttls_is_discarded(
    server: spawn.SpawnedServer, watch: QueueWatch, port_name: str
) -> None:
    # CVE-2011-0411 style: commands injected in the plaintext packet must not run under TLS.
    injected = b"MAIL FROM:<someone@example.org>\r\nRCPT TO:<bob@mx.test>\r\nNOOP\r\n"
    wire = _starttls(server, port_name, injected)
    # The first reply under TLS must answer our own command, not the injected ones.
    assert wire.cmd(b"RSET").startswith(b"250 2.0.0"), "no leftover replies"
    # The session restarted (RFC 3207 4.2): a transaction needs a fresh EHLO first.
    assert wire.cmd(b"MAIL FROM:<someone@example.org>").startswith(b"503 5.5.1")
    assert wire.cmd(b"EHLO client.test").startswith(b"250-")
    assert wire.cmd(b"STARTTLS").startswith(b"503 5.5.1"), "STARTTLS only once (RFC 3207 4.2)"
    wire.cmd(b"QUIT")
    assert watch.new() == {}


def test_bdat_over_tls_with_cleanup_across_chunks(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    wire = _starttls(server, "submission")
    ehlo = wire.cmd(b"EHLO client.test")
    assert b"CHUNKING" in ehlo and b"AUTH " in ehlo, ehlo
    creds = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    assert wire.cmd(b"AUTH PLAIN " + creds).startswith(b"235 2.7.0")
    chunks = [
        b"Subject: chunked\r\nX-Sp",
        b"lit: across chunks\r",
        b"\n\r\n.body line\r\n",
        b"\r\n.\r\nend\r\n",
    ]
    # Pipelined envelope and first chunk in one write (RFC 3030 4.2 allows it).
    wire.send(
        f"MAIL FROM:<{USER}>\r\nRCPT TO:<bob@mx.test>\r\nBDAT {len(chunks[0])}\r\n".encode() + chunks[0]
    )
    assert wire.reply().startswith(b"250 2.1.0")
    assert wire.reply().startswith(b"250 2.1.5")
    assert wire.reply().startswith(b"250 ")
    for chunk in chunks[1:-1]:
        wire.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
        assert wire.reply().startswith(b"250 ")
    wire.send(f"BDAT {len(chunks[-1])} LAST\r\n".encode() + chunks[-1])
    last = wire.reply()
    assert last.startswith(b"250 2.0.0"), last
    wire.cmd(b"QUIT")
    qid, rcpts = watch.only_new()
    assert qid.encode() in last
    assert rcpts == ["bob@mx.test"]
    stored = server.body(qid)
    headers = unfolded_headers(stored)
    assert "with ESMTPSA" in headers[0]
    assert "X-Split: across chunks" in headers
    assert sum(h.startswith("Message-ID:") for h in headers) == 1
    # BDAT content is taken literally: no dot-unstuffing, a lone "." line is just data.
    assert stored.endswith(b"\r\n\r\n.body line\r\n\r\n.\r\nend\r\n")


def test_size_limit_announced_and_enforced(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    wire = _starttls(server, "mx")
    ehlo = wire.cmd(b"EHLO client.test")
    size = next(int(line.split()[1]) for line in ehlo.split(b"\r\n") if line[4:].startswith(b"SIZE "))
    assert size > 0
    reply = wire.cmd(f"MAIL FROM:<a@example.org> SIZE={size + 1}".encode())
    assert reply.startswith(b"552 5.3.4"), reply
    assert wire.cmd(f"MAIL FROM:<a@example.org> SIZE={size}".encode()).startswith(b"250 2.1.0")
    wire.cmd(b"QUIT")
    assert watch.new() == {}


def test_starttls_not_offered_on_implicit_tls(server: spawn.SpawnedServer) -> None:
    raw = socket.create_connection((HOST, server.ports["submissions"]), timeout=10)
    wire = Wire(tls_context(server).wrap_socket(raw, server_hostname="mx.test"))
    assert wire.reply().startswith(b"220 mx.test")
    ehlo = wire.cmd(b"EHLO client.test")
    assert b"STARTTLS" not in ehlo
    reply = wire.cmd(b"STARTTLS")
    assert reply[:3] in (b"502", b"503"), reply
    wire.cmd(b"QUIT")


def test_tls_handshake_failure_does_not_hurt_the_server(server: spawn.SpawnedServer) -> None:
    # A client that distrusts the certificate aborts the handshake; the server must carry on.
    raw = socket.create_connection((HOST, server.ports["submissions"]), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="mx.test")
    raw.close()
    raw = socket.create_connection((HOST, server.ports["submissions"]), timeout=10)
    wire = Wire(tls_context(server).wrap_socket(raw, server_hostname="mx.test"))
    assert wire.reply().startswith(b"220 ")
    wire.cmd(b"QUIT")
