"""The server role of the sans-IO SMTP engine (RFC 5321, 1869, 2920, 3030, 3207, 4954, 6531).

Feed received bytes with `receive_data()`, pull events with `next_event()`, answer events
that need a reply with `accept()` / `reject()`, and write what `data_to_send()` returns.
Replies produced while handling one batch of received bytes accumulate in one buffer, so a
caller that writes once per batch sends pipelined replies together (RFC 2920 3.2).

Invariants:
- Which command is legal in which state is one table, `_ALLOWED`; nothing else decides it.
- While an event awaits its reply nothing more is parsed, so replies keep command order.
- Buffers are bounded: a command line longer than its command's limit (`MAX_COMMAND`,
  `MAX_MAIL_RCPT`, `MAX_AUTH`) is answered with 500 5.5.2 (500 5.5.6 for an AUTH command or a
  SASL response, RFC 4954 6), and one longer than `MAX_AUTH` is dropped as it arrives, with
  that same answer however the reads fell; DATA holds at most one
  partial text line; BDAT chunks are streamed, never held; the caller is expected to stop
  reading while `wants_read` is False (`MAX_PENDING` unparsed octets).
- The replies, events and messages of a session do not depend on how its octets were split
  into reads, except after STARTTLS (below) and in the text of a 550 5.6.0 for a message with
  two faults, which names the first one seen.
- After STARTTLS's 220 every byte that arrives before `tls_started()` is discarded (RFC 3207
  section 6: plaintext pipelined after STARTTLS must not survive the handshake), and the
  session then starts over, EHLO first. Meanwhile `wants_read` is False: what arrives after
  the 220 is the client's handshake, for the caller's TLS layer.
- BDAT chunks are read whether their command is accepted or refused (RFC 3030 2), so no chunk
  octet is ever read as a command; a BDAT command whose size cannot be read ends the session
  (521 5.5.4), since nothing then tells the chunk that follows from commands.
- No user input ever raises: every bad line gets a reply with an enhanced status code (none
  on a reply to HELO or EHLO, as RFC 2034 3 asks).
  `LocalProtocolError` is raised only when the *caller* misuses the engine.

Not responsible for: sockets, TLS, time-outs, policy (who may relay, password checks),
storing messages.  Those belong to the caller and get the events.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from mailwright.protocol import events as ev
from mailwright.protocol.address import Address, AddressError, parse_path
from mailwright.protocol.framing import DataReceiver, take_line
from mailwright.protocol.params import MailParams, parse_mail_params, parse_rcpt_params
from mailwright.protocol.reply import R, Reply, SMTPError
from mailwright.protocol.sasl import (
    Challenge,
    Credentials,
    ServerMechanism,
    decode_response,
    error_challenge,
    server_mechanism,
)

MAX_COMMAND: Final = 512  # RFC 5321 4.5.3.1.4, CRLF included
MAX_MAIL_RCPT: Final = 2048  # room for the RFC 1869 / 3461 / 4954 parameter extensions
MAX_AUTH: Final = 12288  # RFC 4954 4: AUTH lines and SASL responses
MAX_PENDING: Final = 256 * 1024
_MAX_REPLY_TEXT: Final = 512 - len("250-") - len("\r\n")  # RFC 5321 4.5.3.1.5
MAX_ERRORS: Final = 20  # as Postfix's smtpd_hard_error_limit
MAX_JUNK: Final = 100  # as Postfix's smtpd_junk_command_limit: see _count_junk
MAX_OVERSHOOT: Final = 1000  # as Postfix's smtpd_recipient_overshoot_limit: see _cmd_rcpt
_MECH_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_REFILL: Final = 16 * 1024  # > MAX_AUTH: a full command line always fits in one refill
_EXPN_DISABLED: Final = Reply(502, "5.5.1", "EXPN is disabled")
# RFC 2034 3: "all 2xx, 4xx, and 5xx SMTP responses other than the initial greeting and any
# response to HELO or EHLO" carry an enhanced code; before its first EHLO reply the client cannot
# know that they are enhanced codes. Postfix, Exim and Dovecot send these without one.
_EHLO_SYNTAX: Final = Reply(501, None, "Syntax: EHLO hostname")
_HELO_SYNTAX: Final = Reply(501, None, "Syntax: HELO hostname")
_NO_MAIL_PARAMS: Final = MailParams()  # frozen: one shared value for "no transaction"


class LocalProtocolError(Exception):
    """The caller used the engine wrongly (answered nothing pending, fed data after close)."""


class State(Enum):
    CONNECTED = auto()  # greeting sent, no EHLO/HELO yet
    READY = auto()  # EHLO done, no transaction
    MAIL = auto()  # MAIL accepted, no recipient yet
    RCPT = auto()  # at least one recipient accepted
    DATA = auto()  # receiving a DATA body
    BDAT = auto()  # a BDAT transaction is open between chunks
    AUTH = auto()  # inside a SASL exchange
    TLS_WAIT = auto()  # 220 to STARTTLS sent, handshake not done
    CLOSED = auto()


_S = State
# Tuples, not frozensets: membership by identity, where a set would call Enum's __hash__, a
# Python function, on every command.
_SESSION = (_S.CONNECTED, _S.READY, _S.MAIL, _S.RCPT, _S.BDAT)
_ALLOWED: dict[str, tuple[State, ...]] = {
    "EHLO": _SESSION,
    "HELO": _SESSION,
    "MAIL": (_S.READY,),
    "RCPT": (_S.MAIL, _S.RCPT),
    "DATA": (_S.MAIL, _S.RCPT),
    "BDAT": _SESSION,  # sequence errors are answered after the chunk is consumed
    "RSET": _SESSION,
    "NOOP": _SESSION,
    "HELP": _SESSION,
    "VRFY": _SESSION,
    "EXPN": _SESSION,
    "QUIT": _SESSION,
    "STARTTLS": (_S.CONNECTED, _S.READY),
    "AUTH": (_S.READY,),
}


# eq=False: compared and hashed by identity. A listener's settings object lives as long as the
# listener, and hashing nine fields for the reply caches below cost more than building an EHLO reply.
@dataclass(frozen=True, slots=True, eq=False)
class ServerSettings:
    hostname: str
    greeting: str = "ESMTP mailwright"
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    tls_available: bool = False  # STARTTLS can be offered
    tls_active: bool = False  # the session is already under TLS (implicit TLS on 465)
    auth_mechanisms: tuple[str, ...] = ()
    auth_required: bool = False  # submission: no MAIL before AUTH
    allow_plaintext_auth: bool = False


# Replies that depend only on configuration and session facts are built once: a busy server
# would otherwise format the same EHLO reply for every connection.
@functools.lru_cache(maxsize=64)
def _greeting(hostname: str, greeting: str) -> Reply:
    return Reply(220, None, f"{hostname} {greeting}")


@functools.lru_cache(maxsize=64)
def _bye(hostname: str) -> Reply:
    return Reply(221, "2.0.0", f"{hostname} closing connection")


_BASE_COMMANDS: Final = (
    "EHLO",
    "HELO",
    "MAIL",
    "RCPT",
    "DATA",
    "BDAT",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "HELP",
)


@functools.lru_cache(maxsize=256)
def _keywords(
    s: ServerSettings, tls_active: bool, authenticated: bool
) -> tuple[tuple[str, ...], frozenset[str]]:
    """(EHLO keyword lines, their names) offered in a session in this state."""
    kws = ["PIPELINING", f"SIZE {s.max_message_size}"]
    if s.tls_available and not tls_active:
        kws.append("STARTTLS")
    if s.auth_mechanisms and not authenticated and (tls_active or s.allow_plaintext_auth):
        kws.append("AUTH " + " ".join(s.auth_mechanisms))
    kws += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
    if tls_active:
        kws.append("REQUIRETLS")  # RFC 8689 2: only offered on a TLS session
    return tuple(kws), frozenset(k.split(" ", 1)[0] for k in kws)


@functools.lru_cache(maxsize=1024)
def _cached_hello_reply(
    s: ServerSettings, name: str, extended: bool, tls_active: bool, authenticated: bool
) -> Reply:
    head = f"{s.hostname} Hello {name}"
    if len(head.encode()) > _MAX_REPLY_TEXT:
        # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; a 505-octet name made it 525.
        # Postfix never echoes the name; here only a name that fits is.
        head = s.hostname
    if not extended:
        return Reply(250, None, head)
    return Reply(250, None, [head, *_keywords(s, tls_active, authenticated)[0]])


@functools.lru_cache(maxsize=64)
def _help_reply(s: ServerSettings, tls_active: bool, authenticated: bool) -> Reply:
    """HELP names the commands this session may use now: STARTTLS and AUTH only where EHLO
    would offer them, so HELP never points a client at a command that would be refused."""
    offered = _keywords(s, tls_active, authenticated)[1]
    names = [*_BASE_COMMANDS, *(kw for kw in ("STARTTLS", "AUTH") if kw in offered)]
    return Reply(214, "2.0.0", "See RFC 5321; commands: " + " ".join(names))


class ServerConnection:
    """One SMTP session, server side.  See the module docstring for the calling pattern."""

    def __init__(self, settings: ServerSettings, nonce: Callable[[], str] = lambda: "0") -> None:
        self.settings = settings
        self._nonce = nonce
        self.state = State.CONNECTED
        self.tls_active = settings.tls_active
        self.helo: str | None = None
        self.extended = False
        self.authenticated: str | None = None
        self.mail_params = _NO_MAIL_PARAMS
        self.recipient_count = 0
        self.errors = 0
        self.junk = 0  # HELO, EHLO, NOOP, RSET, VRFY and HELP since the last message accepted
        self.overshoot = 0  # RCPTs refused in this transaction for max_recipients
        self._in = bytearray()  # received octets not yet looked at
        # Command-mode input taken from _in, decoded as Latin-1 (one character per octet, see
        # framing.take_line); _text[_tpos:] comes before whatever _in holds.  Empty whenever
        # a DATA or BDAT body is being read: what followed its command goes back to _in.
        self._text = ""
        self._tpos = 0
        self._out: list[bytes] = []
        self._events: list[ev.Event] = []
        self._pending: ev.Event | None = None
        # The answer to an over-long line being dropped as it arrives, chosen from its start.
        self._discarding: Reply | None = None
        self._data: DataReceiver | None = None
        self._bdat_left = 0  # octets of the current BDAT chunk still to come
        self._bdat_last = False
        self._bdat_failure: Reply | None = None
        self._bdat_size = 0
        self._sasl: ServerMechanism | None = None
        self._sasl_final: Reply | None = None  # sent after the client acknowledges an error challenge
        self._advertised: frozenset[str] = frozenset()
        self._queue(_greeting(settings.hostname, settings.greeting))

    # -- the caller's side -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def paused(self) -> bool:
        return self._pending is not None

    @property
    def receiving_body(self) -> bool:
        """True while what arrives is a message's octets: in DATA, or inside a BDAT chunk. Between
        BDAT chunks the client owes a command, as it does anywhere else (RFC 5321 4.5.3.2: the
        caller's time-outs tell the two apart)."""
        return self.state is State.DATA or self._bdat_left > 0

    @property
    def wants_read(self) -> bool:
        """False while enough is buffered that reading more would only grow memory, and from the
        220 to STARTTLS until `tls_started()`."""
        # After the 220 the client sends its TLS handshake, which belongs to the caller's TLS
        # layer, not here: read into the engine it would be dropped (TLS_WAIT discards what it
        # receives) and the handshake would hang. The caller may start TLS a loop turn after the
        # 220 went out (it does when STARTTLS was answered from a commit's callback), so it must
        # stop reading at once.
        state = self.state
        return (
            len(self._in) + len(self._text) - self._tpos < MAX_PENDING
            and state is not State.CLOSED
            and state is not State.TLS_WAIT
        )

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if self.state is State.TLS_WAIT:
            return  # plaintext injected before the handshake: never parsed
        self._in += data

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> ev.Event | None:
        """The next event, or None when more bytes are needed or a reply is pending."""
        while not self._events:
            if self._pending is not None or self.state in (State.CLOSED, State.TLS_WAIT):
                return None
            if not self._step():
                return None
        event = self._events.pop(0)
        if event.needs_reply:
            self._pending = event
        return event

    def accept(self, reply: Reply | None = None) -> None:
        """Answer the pending event positively (with the default reply unless one is given)."""
        event = self._take_pending()
        if isinstance(event, ev.Hello):
            self.helo = event.hostname
            self.extended = event.extended
            if self.state in (State.MAIL, State.RCPT, State.BDAT):
                # RFC 5321 4.1.4: an EHLO the server accepts resets the session as RSET does; a
                # refused one changes nothing. So the reset is told only now, after the Hello.
                self._emit(ev.TransactionReset())
            self._reset_transaction()
            self.state = State.READY
            default = self._hello_reply(event)  # also records what this session offers
            self._queue(reply or default)
            # Counted once answered, so a 421 at the limit follows the Hello's reply: an EHLO loop
            # held a connection for ever (Postfix counts HELO and EHLO as junk commands too).
            self._count_junk()
        elif isinstance(event, ev.Mail):
            self.mail_params = event.params
            self.recipient_count = 0
            self.state = State.MAIL
            self._queue(reply or R.SENDER_OK)
        elif isinstance(event, ev.Rcpt):
            self.recipient_count += 1
            self.state = State.RCPT
            self._queue(reply or R.RCPT_OK)
        elif isinstance(event, ev.EndOfData):
            self._reset_transaction()
            self.junk = 0  # as Postfix: "The junk command count is reset after mail is delivered"
            self._queue(reply or R.OK)
        elif isinstance(event, ev.AuthAttempt):
            self.authenticated = event.credentials.authzid or event.credentials.authcid
            self.state = State.READY
            self._queue(reply or R.AUTH_OK)

    def reject(self, reply: Reply) -> None:
        """Answer the pending event with an error; the session state stays as before it."""
        if reply.is_positive:
            raise LocalProtocolError(f"reject() needs a 4xx/5xx reply, got {reply}")
        event = self._take_pending()
        if isinstance(event, ev.EndOfData):
            self._reset_transaction()
        elif isinstance(event, ev.AuthAttempt):
            challenge = error_challenge(event.credentials.mechanism)
            if challenge is not None and reply.code == 535:
                # XOAUTH2/OAUTHBEARER: an error challenge first, the final reply after the
                # client's empty response (RFC 7628 3.2.2).
                self.state = State.AUTH
                self._sasl_final = reply
                self._queue(Reply(334, None, base64.b64encode(challenge.data).decode("ascii")))
                return
            self.state = State.READY
        self._error(reply)

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS succeeded: start the session over (RFC 3207 4.2)."""
        if self.state is not State.TLS_WAIT:
            raise LocalProtocolError("tls_started() without a STARTTLS in progress")
        self.tls_active = True
        self.helo = None
        self.extended = False
        self._advertised = frozenset()
        self.authenticated = None
        self._reset_transaction()
        self._in.clear()
        self._text, self._tpos = "", 0
        self.state = State.CONNECTED

    def close_with(self, reply: Reply) -> None:
        """Queue a final reply (421 time-out, shutdown) and close; it also answers a pending event."""
        self._pending = None
        self._queue(reply)
        self.state = State.CLOSED

    # -- internals ---------------------------------------------------------------------

    def _take_pending(self) -> ev.Event:
        event = self._pending
        if event is None:
            raise LocalProtocolError("no event is waiting for a reply")
        self._pending = None
        return event

    def _queue(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    def _error(self, reply: Reply) -> None:
        """Queue an error reply and count it; past MAX_ERRORS the session ends (a prober or a
        confused peer, as Postfix's hard error limit: refused RCPTs count too)."""
        self._queue(reply)
        self._count_error()

    def _count_junk(self) -> None:
        """HELO, EHLO, NOOP, RSET, VRFY and HELP cost a client nothing and each restarts its idle
        time-out, so past MAX_JUNK of them since the last accepted message each also counts as an
        error (its reply stays the same): a client cannot hold a connection for ever with them
        alone. As Postfix, whose smtpd counts the same (ETRN for HELP) and compares the count
        from before the command (`junk_cmds++ > limit`)."""
        junk = self.junk
        self.junk = junk + 1
        if junk > MAX_JUNK:
            self._count_error()

    def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= MAX_ERRORS and self.state is not State.CLOSED:
            bye = Reply(421, "4.7.0", f"{self.settings.hostname} Too many errors, closing connection")
            self._queue(bye)
            self.state = State.CLOSED
            self._events.append(ev.Closing(bye))

    def _emit(self, event: ev.Event) -> None:
        self._events.append(event)

    def _reset_transaction(self) -> None:
        self.mail_params = _NO_MAIL_PARAMS
        self.recipient_count = 0
        self.overshoot = 0
        self._data = None
        self._bdat_failure = None
        self._bdat_size = 0
        if self.state in (State.MAIL, State.RCPT, State.DATA, State.BDAT):
            self.state = State.READY

    def _step(self) -> bool:
        """Parse one unit of input. False when nothing more can be parsed yet."""
        if self.state is State.DATA:
            return self._step_data()
        if self._bdat_left:
            return self._step_bdat()
        line, nxt, bare = take_line(self._text, self._tpos)
        if nxt < 0:
            if self._in:
                self._refill()
                line, nxt, bare = take_line(self._text, 0)
            if nxt < 0:
                if self._discarding is None:
                    if len(self._text) - self._tpos <= MAX_AUTH:
                        return False  # a line still arriving
                    self._discarding = self._too_long(self._text[self._tpos : self._tpos + 5])
                self._text, self._tpos = "", 0
                return len(self._in) > 0
        if nxt == len(self._text):
            self._text, self._tpos = "", 0
        else:
            self._tpos = nxt
        if self._discarding is not None or len(line) > MAX_AUTH:
            # Too long, whether it arrived whole or was dropped while it arrived (the same
            # answer either way, bare line end or not): an AUTH exchange ends with it.
            reply = self._discarding or self._too_long(line[:5])
            self._discarding = None
            if self.state is State.AUTH:
                self._finish_auth()
            self._error(reply)
            return True
        if bare:
            if self.state is State.AUTH:  # as above: the exchange ends with its error reply
                self._finish_auth()
            self._error(R.BARE_LF_COMMAND)
            return True
        if self.state is State.AUTH:
            self._sasl_response(line.encode("latin-1"))
            return True
        self._command(line)
        if self._text and self.receiving_body:
            # A body starts: it is read from _in as octets.
            self._in[:0] = self._text[self._tpos :].encode("latin-1")
            self._text, self._tpos = "", 0
        return True

    def _too_long(self, head: str) -> Reply:
        """The answer to an over-long line that starts with `head` (its first 5 characters)."""
        if self.state is State.AUTH or head.upper() == "AUTH ":
            return R.AUTH_LINE_TOO_LONG
        return R.LINE_TOO_LONG

    def _refill(self) -> None:
        """Move received octets to the text, at most _REFILL at a time: a body pipelined behind
        DATA or BDAT (BDAT's normal case) is handed back, so only this much is decoded twice."""
        raw = self._in
        if len(raw) > _REFILL:
            more = raw[:_REFILL].decode("latin-1")
            del raw[:_REFILL]
        else:
            more = raw.decode("latin-1")
            raw.clear()
        self._text = self._text[self._tpos :] + more
        self._tpos = 0

    def _command(self, line: str) -> None:
        """`line` is Latin-1 decoded octets (framing.take_line)."""
        verb, _, arg = line.partition(" ")
        ascii_line = line.isascii()
        # str.upper() maps some Latin-1 letters to ASCII ("\xdf" to "SS"): only an ASCII
        # verb may name a command.
        verb = verb.upper() if ascii_line or verb.isascii() else "?"
        limit = MAX_AUTH if verb == "AUTH" else MAX_MAIL_RCPT if verb in ("MAIL", "RCPT") else MAX_COMMAND
        if len(line) + 2 > limit:
            self._error(R.AUTH_LINE_TOO_LONG if verb == "AUTH" else R.LINE_TOO_LONG)
            return
        if "\x00" in line:
            self._error(Reply(501, "5.5.2", "NUL octet in command"))
            return
        allowed = _ALLOWED.get(verb)
        if allowed is None and verb[-1:] == "\t" and not arg.strip(" \t"):
            # RFC 5321 4.1.1: trailing white space SHOULD be tolerated, a tab too: "QUIT\t" was
            # 500 and its client never got a 221. Looked at only here, off the known verbs' path.
            verb = verb.rstrip(" \t")
            allowed = _ALLOWED.get(verb)
        if allowed is None:
            self._error(R.UNRECOGNIZED)
            return
        if self.state not in allowed:
            self._error(self._sequence_reply(verb))
            return
        if not ascii_line:
            try:
                arg = arg.encode("latin-1").decode("utf-8")
            except UnicodeDecodeError:
                self._error(Reply(501, "5.5.2", "Command is not valid UTF-8"))
                return
        try:
            self._dispatch(verb, arg)
        except SMTPError as exc:
            self._error(exc.reply)

    def _dispatch(self, verb: str, arg: str) -> None:
        # Direct calls, most frequent first: compiled (mypyc), a getattr-built bound method
        # per command cost more than parsing the command itself.
        if verb == "MAIL":
            self._cmd_mail(arg)
        elif verb == "RCPT":
            self._cmd_rcpt(arg)
        elif verb == "DATA":
            self._cmd_data(arg)
        elif verb == "EHLO":
            self._cmd_ehlo(arg)
        elif verb == "QUIT":
            self._cmd_quit(arg)
        elif verb == "BDAT":
            self._cmd_bdat(arg)
        elif verb == "RSET":
            self._cmd_rset(arg)
        elif verb == "NOOP":
            self._cmd_noop(arg)
        elif verb == "HELO":
            self._cmd_helo(arg)
        elif verb == "STARTTLS":
            self._cmd_starttls(arg)
        elif verb == "AUTH":
            self._cmd_auth(arg)
        elif verb == "VRFY":
            self._cmd_vrfy(arg)
        elif verb == "EXPN":
            self._cmd_expn(arg)
        elif verb == "HELP":
            self._cmd_help(arg)
        else:  # _ALLOWED and this chain disagree: a bug here, not the peer's
            raise LocalProtocolError(f"no handler for {verb}")

    def _sequence_reply(self, verb: str) -> Reply:
        if verb == "MAIL" and self.state is State.CONNECTED:
            return Reply(503, "5.5.1", "Send EHLO or HELO first")
        if verb == "MAIL" and self.state in (State.MAIL, State.RCPT, State.BDAT):
            return Reply(503, "5.5.1", "Sender already specified; send RSET to start over")
        if verb in ("RCPT", "DATA") and self.state is State.BDAT:
            # RFC 3030 3: no DATA after BDAT in a transaction, and its recipients are settled.
            return Reply(503, "5.5.1", f"{verb} not permitted after BDAT; send RSET to start over")
        if verb in ("RCPT", "DATA", "BDAT"):
            return Reply(503, "5.5.1", "Send MAIL first")
        if verb == "AUTH" and self.state is State.CONNECTED:
            return Reply(503, "5.5.1", "Send EHLO first")
        if verb == "AUTH":
            return Reply(503, "5.5.1", "AUTH is not permitted during a mail transaction")
        if verb == "STARTTLS":
            return Reply(503, "5.5.1", "STARTTLS is not permitted during a mail transaction")
        return R.BAD_SEQUENCE

    # -- commands --------------------------------------------------------------------------

    def _cmd_ehlo(self, arg: str) -> None:
        self._hello(arg, extended=True)

    def _cmd_helo(self, arg: str) -> None:
        self._hello(arg, extended=False)

    def _hello(self, arg: str, *, extended: bool) -> None:
        name = arg.strip()
        # isprintable: no control character, and no line or paragraph separator, which would
        # otherwise travel in the Hello reply and the Received header.
        if not name or " " in name or not name.isprintable():
            raise SMTPError(_EHLO_SYNTAX if extended else _HELO_SYNTAX)
        self._emit(ev.Hello(name, extended))

    def enabled_extensions(self) -> frozenset[str]:
        """The EHLO keywords advertised in this session: their parameters are accepted."""
        return self._advertised

    def _hello_reply(self, event: ev.Hello) -> Reply:
        authed = self.authenticated is not None
        if event.extended:
            self._advertised = _keywords(self.settings, self.tls_active, authed)[1]
        else:
            self._advertised = frozenset()
        return _cached_hello_reply(self.settings, event.hostname, event.extended, self.tls_active, authed)

    def _cmd_mail(self, arg: str) -> None:
        s = self.settings
        if s.auth_required and not self.authenticated:
            if s.tls_available and not self.tls_active and not s.allow_plaintext_auth:
                raise SMTPError(R.TLS_REQUIRED)
            raise SMTPError(R.AUTH_REQUIRED)
        if arg[:5].upper() != "FROM:":
            raise SMTPError(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
        try:
            sender, rest = parse_path(arg[5:], utf8=True, allow_null=True)
        except AddressError as exc:
            raise SMTPError(Reply(501, "5.1.7", f"Bad sender address syntax: {exc}")) from None
        params = parse_mail_params(rest, self.enabled_extensions())
        if sender is not None and sender.is_utf8 and not params.smtputf8:
            raise SMTPError(R.SMTPUTF8_REQUIRED)
        if params.size is not None and params.size > s.max_message_size:
            raise SMTPError(R.MESSAGE_TOO_BIG)
        self._emit(ev.Mail(sender, params, rest))

    def _cmd_rcpt(self, arg: str) -> None:
        if arg[:3].upper() != "TO:":
            raise SMTPError(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
        if self.recipient_count >= self.settings.max_recipients:
            # 452 not 5xx: the client sends the rest in another transaction (RFC 5321 4.5.3.1.10).
            # Past MAX_OVERSHOOT of them each also counts as an error, as in Postfix: a client
            # pipelining a long list gets through it, one repeating RCPT for ever does not.
            self._queue(R.TOO_MANY_RECIPIENTS)
            overshoot = self.overshoot
            self.overshoot = overshoot + 1
            if overshoot >= MAX_OVERSHOOT:
                self._count_error()
            return
        try:
            rcpt, rest = self._postmaster(arg[3:]) or parse_path(arg[3:], utf8=True, allow_null=False)
        except AddressError as exc:
            raise SMTPError(Reply(501, "5.1.3", f"Bad recipient address syntax: {exc}")) from None
        assert rcpt is not None
        params = parse_rcpt_params(rest, self.enabled_extensions())
        if rcpt.is_utf8 and not self.mail_params.smtputf8:
            raise SMTPError(R.SMTPUTF8_REQUIRED)
        self._emit(ev.Rcpt(rcpt, params, rest))

    def _postmaster(self, text: str) -> tuple[Address, str] | None:
        """RFC 5321 4.5.1: "<Postmaster>" with no domain must be accepted, for us."""
        stripped = text.lstrip(" ")
        if stripped[:12].lower() != "<postmaster>":
            return None
        rest = stripped[12:]
        if rest and rest[0] != " ":
            # As after any path: "<postmaster>NOTIFY=NEVER" is no path followed by parameters.
            raise AddressError("unexpected text after closing angle bracket")
        return Address("postmaster", self.settings.hostname), rest.lstrip(" ")

    def _cmd_data(self, arg: str) -> None:
        if arg.strip():
            raise SMTPError(Reply(501, "5.5.4", "DATA takes no arguments"))
        if self.state is State.MAIL:
            raise SMTPError(R.NO_VALID_RCPTS)
        self._data = DataReceiver(self.settings.max_message_size)
        self.state = State.DATA
        self._queue(R.START_DATA)
        self._emit(ev.BodyStart(chunked=False))

    def _cmd_bdat(self, arg: str) -> None:
        parts = arg.split()
        if (
            not 1 <= len(parts) <= 2
            or not (parts[0].isascii() and parts[0].isdigit())
            # chunk-size is 1*DIGIT (RFC 3030 2): zeros in front change nothing; past 15 digits
            # (a petabyte) it is no size a client sends.
            or len(parts[0].lstrip("0")) > 15
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            # A chunk follows, and without its size nothing tells its octets from commands:
            # answered and read on, they were commands (a chunk holding "MAIL FROM:..." made a
            # transaction of its own). So the session ends here, as Postfix's smtpd ends it.
            bye = Reply(521, "5.5.4", "Syntax: BDAT size [LAST]; closing, as the chunk cannot be delimited")
            if self.state in (State.MAIL, State.RCPT, State.BDAT):
                self._emit(ev.TransactionReset())
            self._reset_transaction()
            self._queue(bye)
            self.state = State.CLOSED
            self._emit(ev.Closing(bye))
            return
        size = int(parts[0])
        last = len(parts) == 2
        self._bdat_left = size
        self._bdat_last = last
        # The chunk's octets must be consumed whatever we answer, or we lose sync (RFC 3030 2).
        if not self.extended:
            self._bdat_failure = Reply(503, "5.5.1", "CHUNKING was not negotiated: send EHLO first")
        elif self.state is State.MAIL:
            self._bdat_failure = R.NO_VALID_RCPTS
        elif self.state not in (State.RCPT, State.BDAT):
            self._bdat_failure = Reply(503, "5.5.1", "Send MAIL first")
        if self.state is State.RCPT and self._bdat_failure is None:
            self.state = State.BDAT
            self._bdat_size = 0
            self._emit(ev.BodyStart(chunked=True))
        if size == 0:
            self._end_bdat_chunk()
            if not last and self.state is State.BDAT:
                # An empty chunk that is not the last moves nothing forward, yet restarts the
                # idle time-out as a NOOP does: it counts as one (Postfix refuses it outright).
                self._count_junk()

    def _step_bdat(self) -> bool:
        if not self._in:
            return False
        take = min(self._bdat_left, len(self._in))
        chunk = bytes(self._in[:take])
        del self._in[:take]
        self._bdat_left -= take
        if self._bdat_failure is None and self.state is State.BDAT:
            self._bdat_size += take
            if self._bdat_size > self.settings.max_message_size:
                self._bdat_failure = R.MESSAGE_TOO_BIG
            else:
                self._emit(ev.BodyChunk(chunk))
        if self._bdat_left == 0:
            self._end_bdat_chunk()
        return True

    def _end_bdat_chunk(self) -> None:
        failure = self._bdat_failure
        if failure is not None:
            if self.state is State.BDAT:
                self._emit(ev.BodyRejected(failure))
            elif self.state in (State.MAIL, State.RCPT):
                self._emit(ev.TransactionReset())
            self._reset_transaction()
            self._error(failure)
        elif self._bdat_last:
            self._emit(ev.EndOfData(self._bdat_size))
        else:
            self._queue(Reply(250, "2.0.0", f"{self._bdat_size} octets received"))

    def _step_data(self) -> bool:
        data = self._data
        assert data is not None
        if not self._in:
            return False
        chunk = bytes(self._in)
        self._in.clear()
        body, after = data.feed(chunk)
        if body:
            self._emit(ev.BodyChunk(body))
        if after is None:
            return True
        self._in[:0] = after
        self.state = State.READY  # before _error, which may close the session
        if data.failure is not None:
            self._emit(ev.BodyRejected(data.failure))
            self._reset_transaction()
            self._error(data.failure)
        else:
            self._emit(ev.EndOfData(data.size))
        return True

    def _cmd_rset(self, arg: str) -> None:
        if arg.strip():
            # RFC 5321 4.1.1.5: "RSET" CRLF. Refused, it resets nothing, as any refused command.
            raise SMTPError(Reply(501, "5.5.4", "RSET takes no arguments"))
        if self.state in (State.MAIL, State.RCPT, State.BDAT):
            self._emit(ev.TransactionReset())
        self._reset_transaction()
        self._queue(R.RESET)
        self._count_junk()

    def _cmd_noop(self, arg: str) -> None:
        self._queue(R.NOOP)
        self._count_junk()

    def _cmd_help(self, arg: str) -> None:
        self._queue(_help_reply(self.settings, self.tls_active, self.authenticated is not None))
        self._count_junk()

    def _cmd_vrfy(self, arg: str) -> None:
        if not arg.strip():
            raise SMTPError(Reply(501, "5.5.4", "Syntax: VRFY address"))
        self._queue(R.VRFY)
        self._count_junk()

    def _cmd_expn(self, arg: str) -> None:
        # Refused as any command is, so it counts as an error: answered without counting, a client
        # could hold its connection for ever with EXPN, past both the error and the junk limits.
        raise SMTPError(_EXPN_DISABLED)

    def _cmd_quit(self, arg: str) -> None:
        self._queue(_bye(self.settings.hostname))
        if self.state in (State.MAIL, State.RCPT, State.BDAT):
            self._emit(ev.TransactionReset())
        self.state = State.CLOSED
        self._emit(ev.Quit())

    def _cmd_starttls(self, arg: str) -> None:
        if arg.strip():
            raise SMTPError(Reply(501, "5.5.4", "STARTTLS takes no arguments"))
        if self.tls_active:
            raise SMTPError(Reply(503, "5.5.1", "TLS already active"))
        if not self.settings.tls_available:
            raise SMTPError(Reply(502, "5.5.1", "STARTTLS not offered"))
        self._queue(R.START_TLS)
        # RFC 3207 6: drop anything pipelined after STARTTLS
        self._in.clear()
        self._text, self._tpos = "", 0
        self.state = State.TLS_WAIT
        self._emit(ev.StartTLS())

    def _cmd_auth(self, arg: str) -> None:
        s = self.settings
        if self.authenticated:
            raise SMTPError(R.AUTH_ALREADY)
        # RFC 5321 4.1.1: trailing white space is tolerated ("AUTH CRAM-MD5 " was read as
        # carrying an empty initial response, which CRAM-MD5 and LOGIN refuse).
        parts = arg.rstrip(" \t").split(" ")
        # RFC 4422 3.1: 1 to 20 of A-Z, 0-9, "-" and "_" (any case here); anything else is no
        # mechanism's name. ASCII first: str.upper() maps "\u0131" to "I", so "PLA\u0131N" was PLAIN.
        name = parts[0].upper() if parts[0].isascii() else "?"
        if not 1 <= len(parts) <= 2 or not 1 <= len(name) <= 20 or name.strip(_MECH_CHARS):
            raise SMTPError(Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
        if not s.auth_mechanisms:
            raise SMTPError(Reply(502, "5.5.1", "AUTH not offered on this port"))
        if not self.tls_active and not s.allow_plaintext_auth:
            raise SMTPError(R.ENCRYPTION_REQUIRED)
        if name not in s.auth_mechanisms:
            raise SMTPError(R.AUTH_MECH_UNKNOWN)
        mech = server_mechanism(name, hostname=s.hostname, nonce=self._nonce())
        initial = decode_response(parts[1].encode()) if len(parts) == 2 else None
        self._sasl = mech
        self._sasl_result(mech.start(initial))

    def _sasl_response(self, line: bytes) -> None:
        mech = self._sasl
        try:
            if len(line) + 2 > MAX_AUTH:
                raise SMTPError(R.AUTH_LINE_TOO_LONG)
            if self._sasl_final is not None:
                final, self._sasl_final = self._sasl_final, None
                self._finish_auth()
                self._error(final)
                return
            assert mech is not None
            self._sasl_result(mech.step(decode_response(line)))
        except SMTPError as exc:
            self._finish_auth()
            self._error(exc.reply)

    def _sasl_result(self, result: Challenge | Credentials) -> None:
        if isinstance(result, Challenge):
            self.state = State.AUTH
            self._queue(Reply(334, None, base64.b64encode(result.data).decode("ascii")))
            return
        self._finish_auth()
        self._emit(ev.AuthAttempt(result))

    def _finish_auth(self) -> None:
        self._sasl = None
        self._sasl_final = None  # however the exchange ended, a pending error reply goes with it
        self.state = State.READY
