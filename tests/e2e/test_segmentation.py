"""A session over a real socket gets the same replies however its bytes are cut into segments.

The engine reads command lines as text and bodies as octets, handing bytes between the two when
DATA or BDAT starts (mailwright.protocol.server); the session layer pauses parsing while a
message is committed (mailwright.net.server).  Both must give a client the same replies whether
its session arrives in one write or in many small ones.  Random sessions with fixed seeds (so a
failure reproduces) are sent to a running server twice, once in one write and once in pieces
sent 2 ms apart with Nagle off, so that the server reads them one by one.

Not covered here: STARTTLS (bytes pipelined behind it are dropped on purpose, RFC 3207 6),
AUTH (the MX listener offers none), the engine on its own (tests/protocol/test_server.py).
"""

from __future__ import annotations

import itertools
import random
import re
import socket
import time

import spawn

from .conftest import ServerFactory

# At most 8 of these per session (after a prefix that draws no error): even the worst stays
# under the 20-error limit, whose 421 would close the connection while the rest of a one-write
# session is still unread (the kernel then resets it, losing replies: TCP's doing, not ours).
FRAGMENTS = [
    b"EHLO c.test\r\n", b"HELO c.test\r\n", b"MAIL FROM:<a@c.test>\r\n", b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<\xc3\xa9@c.test> SMTPUTF8\r\n", b"MAIL FROM:<a@c.test> SIZE=100 BODY=8BITMIME\r\n",
    b"RCPT TO:<bob@mx.test>\r\n", b"RCPT TO:<bob@mx.test> NOTIFY=SUCCESS ORCPT=rfc822;bob@mx.test\r\n",
    b"RCPT TO:<postmaster>\r\n", b"RCPT TO:<\xff@mx.test>\r\n", b"RCPT TO:<x@elsewhere.test>\r\n",
    b"DATA\r\n", b"Subject: s\r\n\r\nbody line\r\n", b".\r\n", b"..dot\r\n", b"\r\n", b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n", b"BDAT 0 LAST\r\n", b"xyz", b"hello", b"RSET\r\n", b"NOOP\r\n", b"VRFY bob\r\n",
    b"BOGUS\r\n", b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"\n", b"\r", b"NO\nOP\r\n",
    b"x" * 600 + b"\r\n", b"A" * 13000, b"\xdf\xe9", b"<a@b>",
]  # fmt: skip
# Ends whatever is open: up to 5 octets of a BDAT chunk, a DATA body, then the session.
TAIL = b"xxxxx\r\n.\r\nQUIT\r\n"
SESSIONS = 100
QUEUED_AS = re.compile(rb"queued as \S+")
# A message with two faults (a bare LF and an over-long line) is refused naming the first one
# seen, which can depend on the segments; its code and status do not.
FAULT = re.compile(rb"550 5\.6\.0 [^\r]*")


# Most sessions open a transaction first, so that what follows meets every state.
PREFIXES = [
    b"",
    b"EHLO c.test\r\n",
    b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\n",
    b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<bob@mx.test>\r\n",
    b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n",
]


def session(seed: int) -> tuple[bytes, list[int]]:
    rnd = random.Random(seed)
    fragments = (rnd.choice(FRAGMENTS) for _ in range(rnd.randint(1, 8)))
    wire = rnd.choice(PREFIXES) + b"".join(fragments) + TAIL
    cuts = sorted({rnd.randint(1, len(wire) - 1) for _ in range(rnd.randint(1, 12))})
    return wire, cuts


def converse(port: int, pieces: list[bytes]) -> bytes:
    """Send the pieces (2 ms apart when more than one), then read every reply until the server
    closes; queue ids are blanked, since each message gets a new one, and so is the text of a
    550 5.6.0 (see FAULT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.002)
            sock.sendall(piece)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    return FAULT.sub(b"550 5.6.0", QUEUED_AS.sub(b"queued as ID", bytes(received)))


def test_replies_do_not_depend_on_how_the_session_is_segmented(make_server: ServerFactory) -> None:
    srv: spawn.SpawnedServer = make_server("segments")
    port = srv.ports["mx"]
    kinds: set[bytes] = set()
    for seed in range(SESSIONS):
        wire, cuts = session(seed)
        whole = converse(port, [wire])
        bounds = [0, *cuts, len(wire)]
        pieces = [wire[a:b] for a, b in itertools.pairwise(bounds)]
        assert converse(port, pieces) == whole, (seed, wire[:300], cuts)
        assert whole.startswith(b"220 ") and whole.endswith(b"\r\n"), whole[-200:]
        kinds.update(re.findall(rb"^\d{3}[ -](?:\d\.\d\.\d+)?", whole, re.M))
    # The sessions are not all alike: refusals and acceptances of several kinds came back.
    assert len(kinds) >= 8, kinds
    print(f"{SESSIONS} sessions, {len(kinds)} kinds of reply: {sorted(kinds)}")
