"""A minimal blocking SMTP client for measuring: one timed transaction, one timed greeting.

It speaks just enough RFC 5321 (sections 4.1.1 and 4.2) to time a plain-text transaction
connect -> EHLO -> MAIL -> RCPT -> DATA -> 250 -> QUIT -> 221 against any server, and to send one
large message with DATA (RFC 5321 4.5.2 dot-stuffing is the caller's job: the bodies used here
never have a line starting with a dot).

Invariant: every socket operation has a timeout; an unexpected reply raises `SMTPFailure`.

Not responsible for: TLS, AUTH, pipelining or retries (a measuring client must not hide failures).
"""

from __future__ import annotations

import socket
import time


class SMTPFailure(RuntimeError):
    """The server answered something other than the expected reply (or closed the connection)."""


class Conn:
    """A line-oriented SMTP connection over a blocking socket."""

    def __init__(self, host: str, port: int, timeout: float, source: str | None = None) -> None:
        addr = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self, expect: str) -> str:
        """Read one (possibly multi-line) reply; raise unless its code starts with `expect`."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise SMTPFailure(f"connection closed while waiting for {expect}xx")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
        text = b"\n".join(lines).decode("utf-8", "replace")
        if not text.startswith(expect):
            raise SMTPFailure(f"expected {expect}xx, got {text[:200]!r}")
        return text

    def cmd(self, line: str, expect: str) -> str:
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        return self.reply(expect)

    def close(self) -> None:
        self.sock.close()


def message(size: int, sender: str, rcpt: str, msgid: str) -> bytes:
    """A message of headers plus about `size` bytes of body in 78-character lines, CRLF-terminated."""
    head = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench\r\nMessage-ID: <{msgid}@client.bench.test>\r\n"
        "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
    ).encode("ascii")
    line = b"x" * 78 + b"\r\n"
    lines, rest = divmod(size, len(line))
    return head + line * lines + (b"y" * max(rest - 2, 0) + b"\r\n" if rest else b"")


def transaction(host: str, port: int, sender: str, rcpt: str, body: bytes, timeout: float = 30.0) -> float:
    """Run one whole transaction on a new connection; return its duration in seconds."""
    start = time.perf_counter()
    conn = Conn(host, port, timeout)
    try:
        conn.reply("220")
        conn.cmd("EHLO probe.bench.test", "250")
        conn.cmd(f"MAIL FROM:<{sender}>", "250")
        conn.cmd(f"RCPT TO:<{rcpt}>", "250")
        conn.cmd("DATA", "354")
        conn.sock.sendall(body + b".\r\n")
        conn.reply("250")
        conn.cmd("QUIT", "221")
    finally:
        conn.close()
    return time.perf_counter() - start


def greeting(host: str, port: int, timeout: float = 30.0) -> float:
    """Seconds from the start of connect() to the complete 220 greeting."""
    start = time.perf_counter()
    conn = Conn(host, port, timeout)
    try:
        conn.reply("220")
        return time.perf_counter() - start
    finally:
        conn.close()
