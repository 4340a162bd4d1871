"""Sans-IO SMTP client engine: commands in, bytes out; bytes in, reply events out.

`ClientConnection` is the client role of the SMTP state machine (RFC 5321 sections 3 and
4), with PIPELINING (RFC 2920), CHUNKING/BDAT (RFC 3030), STARTTLS (RFC 3207) and AUTH
(RFC 4954).  Like h11 it does no IO: the caller calls command methods (`ehlo`, `mail`,
...), writes `data_to_send()` to the socket, feeds what it reads to `receive_data`, and
pulls `ReplyEvent`s from `next_event`.  Each reply is matched FIFO to the command it
answers; the greeting counts as the first "command".

Invariants:
- Nothing is queued unless the whole command is valid: arguments holding CR, LF or NUL,
  over-long lines and out-of-sequence commands raise `LocalProtocolError` first.
- Command lines are at most 512 octets including CRLF (RFC 5321 4.5.3.1.4); AUTH lines
  (the command with its initial response, and answers to 334 challenges) may reach
  12,288 octets (RFC 4954 section 4).
- Pipelining: without PIPELINING advertised, a command may be issued only when no reply
  is outstanding (the body after a 354 is not a command).  With PIPELINING, commands may
  be queued behind outstanding ones, except after EHLO, HELO, DATA, VRFY, NOOP, QUIT
  (RFC 2920 3.1), STARTTLS (RFC 3207 4.2: nothing may follow it in plaintext) or AUTH
  (its 334 challenges need answers), and before the greeting arrives.  Everything queued
  between two `data_to_send()` calls goes out in one write.
- Sequence: MAIL needs a completed EHLO or HELO (a 250 received) and no transaction;
  RCPT needs MAIL sent; DATA needs a RCPT sent; `body`/`end_data` need the 354; BDAT
  needs CHUNKING advertised (otherwise the server would read the chunk as commands) and
  a RCPT sent, and may not be mixed with DATA.  After a failed BDAT no more chunks may be
  sent (RFC 3030 section 2): only RSET (or QUIT) ends that state.
- Transactions are tracked as sent, then corrected by replies: a failed MAIL ends the
  transaction, a failed DATA falls back to "MAIL sent" if the MAIL had succeeded.  A
  reply only changes the transaction it belongs to, so late replies to pipelined
  commands cannot disturb a newer one.
- Replies are parsed strictly: lines end in CRLF and hold no other CR or LF; every line of
  a multi-line reply has the same code; a reply (all its lines) is at most
  `max_reply_bytes`; its first digit must fit the command (RFC 5321 4.2.1: 2yz, or 3yz
  for DATA and AUTH, or any 4yz/5yz).  Anything else is `RemoteProtocolError`.
- After a 221 or a 421 reply, or a QUIT's reply, the connection is closed; an unsolicited
  421 (none outstanding) is reported as a ReplyEvent whose command is "UNSOLICITED".
- `receive_data(b"")` means the peer closed the connection: `next_event` then raises
  `RemoteProtocolError` if replies were still owed (other than QUIT's) or a reply was cut.
- After the 220 to STARTTLS, no plaintext is parsed; bytes the server sent after that
  reply are an injection attempt and make `tls_started` raise `RemoteProtocolError`.
  `tls_started` forgets everything learned before (RFC 3207 4.2): extensions, EHLO and
  authentication.

Not responsible for: sockets, TLS handshakes, timeouts (net.client does those);
address syntax (address), MAIL/RCPT parameter syntax (params); SASL mechanisms (sasl);
line length and 8-bit checks on message content.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

from mailwright.protocol.dotstuff import DotStuffer
from mailwright.protocol.extensions import CHUNKING, PIPELINING, Extensions, parse_ehlo
from mailwright.protocol.reply import Reply, parse_reply_line, reply_from_lines

__all__ = [
    "MAX_AUTH_LINE",
    "MAX_COMMAND_LINE",
    "MAX_PARAM_LINE",
    "ClientConnection",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ReplyEvent",
]

MAX_COMMAND_LINE = 512
# RFC 1869 lets extensions lengthen MAIL/RCPT (ENVID, ORCPT, AUTH=); the server takes 2048 too.
MAX_PARAM_LINE = 2048
MAX_AUTH_LINE = 12288

# Commands after which nothing may be pipelined: their outcome changes what may follow.
_MUST_BE_LAST = frozenset({"GREETING", "EHLO", "HELO", "DATA", "VRFY", "NOOP", "QUIT", "STARTTLS", "AUTH"})
# Positive reply classes each command may get (RFC 5321 4.2.1, 4.3.2); 4 and 5 always fit.
_POSITIVE_CLASS: dict[str, frozenset[int]] = {
    "DATA": frozenset({3}),
    "AUTH": frozenset({2, 3}),
}
_DEFAULT_POSITIVE = frozenset({2})
# RFC 4422 3.1: SASL mechanism names are 1-20 of upper-case letters, digits, "-" and "_".
_SASL_MECH = re.compile(r"[A-Z0-9_-]{1,20}")


class LocalProtocolError(Exception):
    """We misused the engine: wrong state, or a bad argument.  Nothing was queued."""


class RemoteProtocolError(Exception):
    """The peer broke the protocol: malformed, over-long or unexpected reply."""


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """A reply and the command it answers.

    `command` is one of "GREETING", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "DATA-END"
    (the reply after the end-of-data terminator), "BDAT", "RSET", "NOOP", "QUIT",
    "STARTTLS", "AUTH" (also for replies to 334 answers), "VRFY", or "UNSOLICITED" for a
    421 that arrived while no command was outstanding.
    """

    command: str
    reply: Reply


class _Mode(enum.Enum):
    COMMAND = "command"  # commands may be issued (subject to pipelining)
    BODY = "body"  # 354 received: body()/end_data() only
    AUTH_CHALLENGE = "auth-challenge"  # 334 received: auth_response()/auth_cancel() only
    TLS_PENDING = "tls-pending"  # 220 to STARTTLS received: tls_started() only
    QUIT_SENT = "quit-sent"
    CLOSED = "closed"


class _Tx(enum.Enum):
    NONE = "none"
    MAIL = "mail"  # MAIL sent; RCPT, DATA or BDAT may follow
    DATA = "data"  # DATA sent, its reply outstanding
    BDAT = "bdat"  # at least one non-LAST BDAT sent
    BDAT_FAILED = "bdat-failed"  # a BDAT was refused: only RSET may follow


class _Pending(NamedTuple):
    command: str
    txn: int  # the transaction the command belongs to
    last_chunk: bool = False


def _check_arg(name: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise LocalProtocolError(f"{name} contains CR, LF or NUL: {value[:80]!r}")


class ClientConnection:
    """The client side of one SMTP session.  See the module docstring for the rules."""

    def __init__(self, local_hostname: str, *, max_reply_bytes: int = 64 * 1024) -> None:
        _check_arg("local_hostname", local_hostname)
        if not local_hostname or any(c.isspace() or ord(c) < 0x20 for c in local_hostname):
            raise LocalProtocolError(f"local_hostname {local_hostname!r} must be one non-empty token")
        if max_reply_bytes < MAX_COMMAND_LINE:
            raise ValueError("max_reply_bytes must be at least 512 (RFC 5321 4.5.3.1.5)")
        self.local_hostname = local_hostname
        self.max_reply_bytes = max_reply_bytes
        self.extensions: Extensions | None = None
        self._mode = _Mode.COMMAND
        self._greeted = False
        self._authenticated = False
        self._tls = False
        self._tx = _Tx.NONE
        self._txn = 0
        self._mail_ok = False
        self._rcpts = 0
        self._stuffer: DotStuffer | None = None
        self._pending: deque[_Pending] = deque([_Pending("GREETING", 0)])
        self._out: list[bytes] = []
        # Receive side: bytes in `_buf` before `_pos` are consumed; compacted lazily.
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._eof = False
        self._lines: list[str] = []
        self._code = 0
        self._reply_bytes = 0

    # -- state, read-only -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._mode is _Mode.CLOSED

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def tls(self) -> bool:
        """True once `tls_started` was called."""
        return self._tls

    @property
    def in_body(self) -> bool:
        """True between DATA's 354 and `end_data`."""
        return self._mode is _Mode.BODY

    @property
    def awaiting(self) -> tuple[str, ...]:
        """The commands whose replies are outstanding, oldest first."""
        return tuple(p.command for p in self._pending)

    # -- output -----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, for one write."""
        out = self._out
        self._out = []
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _can_issue(self, command: str) -> None:
        if self._mode is not _Mode.COMMAND:
            raise LocalProtocolError(f"cannot send {command} now: {self._mode_reason()}")
        if not self._pending:
            return
        head = self._pending[-1].command
        if self.extensions is None or not self.extensions.has(PIPELINING):
            raise LocalProtocolError(
                f"cannot send {command} while the reply to {head} is outstanding: "
                "the server did not advertise PIPELINING"
            )
        if head in _MUST_BE_LAST:
            raise LocalProtocolError(f"cannot pipeline {command} after {head}; wait for its reply")

    def _mode_reason(self) -> str:
        return {
            _Mode.COMMAND: "ready",
            _Mode.BODY: "in the DATA body; call body() or end_data()",
            _Mode.AUTH_CHALLENGE: "a 334 challenge needs auth_response() or auth_cancel()",
            _Mode.TLS_PENDING: "STARTTLS was accepted; call tls_started() after the handshake",
            _Mode.QUIT_SENT: "QUIT was sent",
            _Mode.CLOSED: "the connection is closed",
        }[self._mode]

    @staticmethod
    def _encode(command: str, line: str, limit: int = MAX_COMMAND_LINE) -> bytes:
        data = line.encode("utf-8") + b"\r\n"
        if len(data) > limit:
            raise LocalProtocolError(f"{command} line is {len(data)} octets, over the limit of {limit}")
        return data

    def _queue(self, command: str, data: bytes, *, last_chunk: bool = False) -> None:
        self._out.append(data)
        self._pending.append(_Pending(command, self._txn, last_chunk))

    def _send(
        self, command: str, line: str, *, limit: int = MAX_COMMAND_LINE, last_chunk: bool = False
    ) -> None:
        self._queue(command, self._encode(command, line, limit), last_chunk=last_chunk)

    def _require_greeted(self, command: str) -> None:
        if not self._greeted:
            raise LocalProtocolError(f"{command} needs a successful EHLO or HELO first")

    def _new_txn(self) -> None:
        self._txn += 1
        self._tx = _Tx.NONE
        self._mail_ok = False
        self._rcpts = 0

    # -- commands ---------------------------------------------------------------------

    def ehlo(self) -> None:
        self._hello("EHLO")

    def helo(self) -> None:
        self._hello("HELO")

    def _hello(self, verb: str) -> None:
        self._can_issue(verb)
        if self._tx not in (_Tx.NONE, _Tx.MAIL):
            raise LocalProtocolError(f"cannot send {verb} in the middle of a message; RSET first")
        self._send(verb, f"{verb} {self.local_hostname}")
        # EHLO/HELO reset any transaction (RFC 5321 4.1.4) and our knowledge of the server.
        self._new_txn()
        self._greeted = False
        self.extensions = None

    def starttls(self) -> None:
        self._can_issue("STARTTLS")
        if self._tls:
            raise LocalProtocolError("TLS is already active")
        self._require_greeted("STARTTLS")
        if self._tx is not _Tx.NONE:
            raise LocalProtocolError("cannot send STARTTLS during a mail transaction")
        self._send("STARTTLS", "STARTTLS")

    def tls_started(self) -> None:
        """Call after the TLS handshake that followed the 220 to STARTTLS."""
        if self._mode is not _Mode.TLS_PENDING:
            raise LocalProtocolError("tls_started() needs a 220 reply to STARTTLS first")
        if self._pos < len(self._buf):
            self._mode = _Mode.CLOSED
            raise RemoteProtocolError("the server sent plaintext after its 220 to STARTTLS (injection)")
        self._mode = _Mode.COMMAND
        self._tls = True
        self._greeted = False
        self._authenticated = False
        self.extensions = None
        self._new_txn()

    def mail(self, sender: str, params: str = "") -> None:
        _check_arg("sender", sender)
        _check_arg("params", params)
        self._can_issue("MAIL")
        self._require_greeted("MAIL")
        if self._tx is not _Tx.NONE:
            raise LocalProtocolError("MAIL sent while a transaction is open; finish it or RSET")
        line = f"MAIL FROM:<{sender}>" + (f" {params}" if params else "")
        data = self._encode("MAIL", line, MAX_PARAM_LINE if params else MAX_COMMAND_LINE)
        self._new_txn()
        self._queue("MAIL", data)
        self._tx = _Tx.MAIL

    def rcpt(self, recipient: str, params: str = "") -> None:
        _check_arg("recipient", recipient)
        _check_arg("params", params)
        if not recipient:
            raise LocalProtocolError("recipient must not be empty")
        self._can_issue("RCPT")
        if self._tx is not _Tx.MAIL:
            raise LocalProtocolError("RCPT needs MAIL first (and cannot follow DATA or BDAT)")
        line = f"RCPT TO:<{recipient}>" + (f" {params}" if params else "")
        self._send("RCPT", line, limit=MAX_PARAM_LINE if params else MAX_COMMAND_LINE)
        self._rcpts += 1

    def data(self) -> None:
        self._can_issue("DATA")
        if self._tx is not _Tx.MAIL or self._rcpts == 0:
            raise LocalProtocolError("DATA needs MAIL and at least one RCPT first")
        self._send("DATA", "DATA")
        self._tx = _Tx.DATA

    def body(self, chunk: bytes) -> None:
        """Queue part of the message, normalised to CRLF and dot-stuffed."""
        if self._mode is not _Mode.BODY or self._stuffer is None:
            raise LocalProtocolError("body() needs a 354 reply to DATA first")
        out = self._stuffer.feed(chunk)
        if out:
            self._out.append(out)

    def end_data(self) -> None:
        """Queue the end-of-data terminator; its reply is reported as "DATA-END"."""
        if self._mode is not _Mode.BODY or self._stuffer is None:
            raise LocalProtocolError("end_data() needs a 354 reply to DATA first")
        self._out.append(self._stuffer.finish())
        self._stuffer = None
        self._pending.append(_Pending("DATA-END", self._txn))
        self._mode = _Mode.COMMAND
        # Whatever the reply, the transaction is over once the terminator is sent.
        self._new_txn()

    def bdat(self, chunk: bytes, last: bool = False) -> None:
        """Queue ``BDAT <size> [LAST]`` and the chunk as is (BDAT needs no dot-stuffing)."""
        self._can_issue("BDAT")
        if self.extensions is None or not self.extensions.has(CHUNKING):
            raise LocalProtocolError("BDAT needs CHUNKING advertised in the EHLO reply")
        if self._tx is _Tx.BDAT_FAILED:
            raise LocalProtocolError("a BDAT was refused; no more chunks may be sent (RSET first)")
        if self._tx not in (_Tx.MAIL, _Tx.BDAT) or self._rcpts == 0:
            raise LocalProtocolError("BDAT needs MAIL and at least one RCPT first (and cannot follow DATA)")
        line = f"BDAT {len(chunk)} LAST" if last else f"BDAT {len(chunk)}"
        self._send("BDAT", line, last_chunk=last)
        if chunk:
            self._out.append(chunk)
        if last:
            self._new_txn()
        else:
            self._tx = _Tx.BDAT

    def rset(self) -> None:
        self._can_issue("RSET")
        self._send("RSET", "RSET")
        self._new_txn()

    def noop(self) -> None:
        self._can_issue("NOOP")
        self._send("NOOP", "NOOP")

    def vrfy(self, arg: str) -> None:
        _check_arg("arg", arg)
        if not arg:
            raise LocalProtocolError("VRFY needs an argument")
        self._can_issue("VRFY")
        self._send("VRFY", f"VRFY {arg}")

    def quit(self) -> None:
        self._can_issue("QUIT")
        self._send("QUIT", "QUIT")
        self._mode = _Mode.QUIT_SENT

    def auth(self, mechanism: str, initial: bytes | None) -> None:
        """Send ``AUTH <mechanism> [initial-response]``; b"" is sent as "=" (RFC 4954 4)."""
        _check_arg("mechanism", mechanism)
        mech = mechanism.upper()
        if _SASL_MECH.fullmatch(mech) is None:
            raise LocalProtocolError(f"mechanism {mechanism!r} is not a SASL mechanism name")
        self._can_issue("AUTH")
        self._require_greeted("AUTH")
        if self._authenticated:
            raise LocalProtocolError("already authenticated (RFC 4954 4: AUTH only once)")
        if self._tx is not _Tx.NONE:
            raise LocalProtocolError("AUTH is not allowed during a mail transaction")
        line = f"AUTH {mech}"
        if initial is not None:
            line += " " + (base64.b64encode(initial).decode("ascii") if initial else "=")
        self._send("AUTH", line, limit=MAX_AUTH_LINE)

    def auth_response(self, data: bytes) -> None:
        """Answer a 334 challenge with `data` (base64-encoded on the wire)."""
        if self._mode is not _Mode.AUTH_CHALLENGE:
            raise LocalProtocolError("auth_response() needs a 334 challenge first")
        self._send("AUTH", base64.b64encode(data).decode("ascii"), limit=MAX_AUTH_LINE)
        self._mode = _Mode.COMMAND

    def auth_cancel(self) -> None:
        """Cancel the exchange with "*"; the server answers 501."""
        if self._mode is not _Mode.AUTH_CHALLENGE:
            raise LocalProtocolError("auth_cancel() needs a 334 challenge first")
        self._send("AUTH", "*")
        self._mode = _Mode.COMMAND

    def auth_challenge(self, reply: Reply) -> bytes:
        """Decode the base64 text of a 334 reply (an empty text is an empty challenge)."""
        if reply.code != 334:
            raise LocalProtocolError(f"auth_challenge() needs a 334 reply, got {reply.code}")
        text = "".join(reply.lines).strip()
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise RemoteProtocolError(f"334 challenge is not valid base64: {text[:80]!r}") from exc

    # -- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; b"" means the peer closed the connection."""
        if self._mode is _Mode.CLOSED:
            return
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("receive_data() after end of file")
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
            self._scan = 0
        self._buf += data

    def next_event(self) -> ReplyEvent | None:
        """The next complete reply, or None when more data is needed (or the session ended)."""
        if self._mode in (_Mode.CLOSED, _Mode.TLS_PENDING):
            return None
        reply = self._next_reply()
        if reply is None:
            if self._eof:
                self._on_eof()
            return None
        return self._dispatch(reply)

    def _on_eof(self) -> None:
        cut = bool(self._lines) or self._pos < len(self._buf)
        owed = [p.command for p in self._pending if p.command != "QUIT"]
        in_body = self._mode in (_Mode.BODY, _Mode.AUTH_CHALLENGE)
        self._mode = _Mode.CLOSED
        if cut or owed or in_body:
            what = f"replies to {', '.join(owed)} outstanding" if owed else "a reply was cut short"
            if in_body and not owed:
                what = "a DATA body or AUTH exchange was in progress"
            raise RemoteProtocolError(f"the server closed the connection with {what}")

    def _next_reply(self) -> Reply | None:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n", max(self._pos, self._scan))
            if end < 0:
                if self._reply_bytes + len(buf) - self._pos > self.max_reply_bytes:
                    self._fail("reply longer than max_reply_bytes without CRLF")
                # Resume the search where this one stopped (a CR may end the buffer), so a
                # line trickling in byte by byte is not rescanned from its start each time.
                self._scan = max(self._pos, len(buf) - 1)
                return None
            line = bytes(buf[self._pos : end])
            self._pos = end + 2
            self._reply_bytes += len(line) + 2
            if self._reply_bytes > self.max_reply_bytes:
                self._fail(f"reply longer than {self.max_reply_bytes} octets")
            if b"\n" in line or b"\r" in line:
                self._fail(f"bare CR or LF inside reply line {line[:80]!r}")
            try:
                code, is_last, text = parse_reply_line(line)
            except ValueError as exc:
                self._fail(str(exc))
            if self._lines and code != self._code:
                self._fail(f"multi-line reply changed code from {self._code} to {code}")
            self._code = code
            self._lines.append(text)
            if is_last:
                lines = self._lines
                self._lines = []
                self._reply_bytes = 0
                if self._pos > 65536 and self._pos * 2 > len(buf):
                    del buf[: self._pos]
                    self._pos = 0
                    self._scan = 0
                return reply_from_lines(code, lines)

    def _fail(self, message: str) -> NoReturn:
        self._mode = _Mode.CLOSED
        raise RemoteProtocolError(message)

    def _dispatch(self, reply: Reply) -> ReplyEvent:
        if not self._pending:
            if reply.code == 421:
                self._mode = _Mode.CLOSED
                return ReplyEvent("UNSOLICITED", reply)
            self._fail(f"unexpected reply with no command outstanding: {reply}")
        pending = self._pending.popleft()
        command = pending.command
        first = reply.code // 100
        if first not in (4, 5) and first not in _POSITIVE_CLASS.get(command, _DEFAULT_POSITIVE):
            self._fail(f"reply {reply.code} does not fit {command}")
        if command == "STARTTLS" and first == 2 and reply.code != 220:
            # Any other 2yz leaves it unclear whether the server is starting TLS.
            self._fail(f"reply {reply.code} to STARTTLS; RFC 3207 allows only 220 to proceed")
        current = pending.txn == self._txn
        positive = first in (2, 3)
        if command == "EHLO" and reply.code == 250:
            self.extensions = parse_ehlo(reply)[1]
            self._greeted = True
        elif command == "HELO" and reply.code == 250:
            self._greeted = True
        elif command == "MAIL" and current:
            self._mail_ok = positive
            if not positive and self._tx in (_Tx.MAIL, _Tx.DATA):
                self._tx = _Tx.NONE
        elif command == "DATA" and current and self._tx is _Tx.DATA:
            if reply.code == 354:
                self._mode = _Mode.BODY
                self._stuffer = DotStuffer()
            else:
                self._tx = _Tx.MAIL if self._mail_ok else _Tx.NONE
        elif command == "BDAT" and current and not positive and not pending.last_chunk:
            if self._tx is _Tx.BDAT:
                self._tx = _Tx.BDAT_FAILED
        elif command == "STARTTLS" and reply.code == 220:
            self._mode = _Mode.TLS_PENDING
        elif command == "AUTH":
            if reply.code == 334:
                self._mode = _Mode.AUTH_CHALLENGE
            elif first == 2:
                self._authenticated = True
        if reply.code in (221, 421) or command == "QUIT":
            self._mode = _Mode.CLOSED
        return ReplyEvent(command, reply)
