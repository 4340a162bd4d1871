"""The asyncio side of the SMTP server: sockets, TLS, time-outs, backpressure.

One `SMTPSession` (an asyncio protocol, not streams: no per-line `drain()`) drives one
`protocol.ServerConnection`.  Every batch of received bytes is parsed to the end and its
replies leave in one `write()` (RFC 2920 batching).  Events that need slow work (a queue
commit, a password check, the TLS handshake) run as a task while the engine is paused;
the engine parses nothing meanwhile, so replies keep their order.

Invariants:
- A message gets its 250 only after `QueueStore.commit()` returned, i.e. after fsync.
- Reading pauses while the engine holds `MAX_PENDING` unparsed bytes or the peer does not
  read our replies (transport write buffer high), so memory per connection is bounded.
- Every session has a deadline (RFC 5321 4.5.3.2): `command_timeout` from our last reply, and
  `data_timeout` from the last bytes received inside DATA or a BDAT chunk (between chunks the
  client owes a command: `command_timeout`); on expiry the peer gets 421 4.4.2 and is closed,
  and a peer that has not read our replies for that long is cut off (the 421 would wait behind
  them for ever). One sweeper checks them all: never early, at most two of its intervals (each
  at most 1 s) late. A TLS handshake may take `HANDSHAKE_TIMEOUT`, and no longer than
  `command_timeout`.
- A peer's address is shown, logged and stored as its transport gives it, but an IPv4-mapped
  IPv6 address as IPv4 and without an IPv6 zone (`peer_address`); the Received header's TCP-info
  writes it as an address literal, "[IPv6:...]" for IPv6 (RFC 5321 4.4, 4.1.3).
- Connection caps (total and per client, an IPv6 client counted by its network of
  `limits.ipv6_prefix` bits, as is its AUTH lock-out) answer 421 4.7.0 before any parsing, and
  count a connection from its accept: on an implicit-TLS listener from before the handshake,
  which the session runs itself (`_implicit_tls`), so clients that connect and never finish a
  handshake are held to the caps like any other (they are closed after the handshake time-out).
- No exception reaches the peer as a traceback: unexpected errors become 451 4.3.0 and
  are logged.
- A value the client chose (HELO name, addresses, SASL identity) enters a log line only through
  `log_format.printable`: escaped, bounded, so no line is forged and no terminal obeys it.

Not responsible for: protocol rules (the engine), who may relay (policy), storage (queue).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from mailwright.limits.auth_failures import AuthFailureLimiter
from mailwright.limits.connections import ConnectionLimits
from mailwright.log_format import printable
from mailwright.net.tls import session_facts
from mailwright.policy.cleanup import MAX_HOPS, HeaderCleanup, protocol_name, trace_name
from mailwright.policy.relay import RelayPolicy, check_sender
from mailwright.protocol import events as ev
from mailwright.protocol.reply import R, Reply, SMTPError
from mailwright.protocol.sasl import Credentials
from mailwright.protocol.server import ServerConnection, ServerSettings
from mailwright.queue.model import Envelope, Recipient
from mailwright.queue.store import MessageSink, MessageWriter

log = logging.getLogger("mailwright.smtpd")

# How long a client may take over its TLS handshake (STARTTLS, or implicit TLS on connect) before
# the connection is closed; until then it holds one of the connection caps' places. At most this,
# and never longer than command_timeout (`ServerContext.handshake_timeout`): the handshake is the
# client's turn to speak, as a command is, and Postfix's smtpd_starttls_timeout follows
# smtpd_timeout's default the same way; a fixed 30 s let a client that stalls its handshake hold a
# place ten times as long as a silent one when an operator cut command_timeout to 3 s.
HANDSHAKE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ListenerRuntime:
    """What a session needs to know about the listener it came in on."""

    name: str
    role: str  # "submission" | "submissions" | "mx"
    settings: ServerSettings
    tls_context: ssl.SSLContext | None
    add_missing_headers: bool  # RFC 6409 8: only for submission


class AuthBackend:
    """The seam between sessions and the user store / failure limiter (built in app.py)."""

    def __init__(
        self,
        verify: Callable[[Credentials, str], Awaitable[bool]],
        owns: Callable[[str, str], bool],
        limiter: AuthFailureLimiter,
        sender_must_be_owned: bool,
        stamp: Callable[[str], str | None],
        canonical: Callable[[str], str] = str,
    ) -> None:
        self.verify = verify
        self.owns = owns
        self.limiter = limiter
        self.sender_must_be_owned = sender_must_be_owned
        # A user's credentials as they are now (UserStore.credentials_stamp), None once removed:
        # a session keeps the stamp it authenticated with and compares it at each MAIL.
        self.stamp = stamp
        # The user's name as the store spells it (domain lower-cased, A-labels), for what the
        # session records and logs: a client may write its name in any spelling the store takes.
        self.canonical = canonical


class ServerContext:
    """Everything shared by all sessions of one server process."""

    def __init__(
        self,
        *,
        store: MessageSink,
        relay: RelayPolicy,
        auth: AuthBackend,
        limits: ConnectionLimits,
        command_timeout: float,
        data_timeout: float,
    ) -> None:
        # Built inside the loop it serves.  Sessions take it from here: get_running_loop() costs
        # a getpid() system call on every call in CPython 3.11, once per connection otherwise.
        self.loop = asyncio.get_running_loop()
        self.store = store
        self.relay = relay
        self.auth = auth
        self.limits = limits
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout
        self.handshake_timeout = min(HANDSHAKE_TIMEOUT, command_timeout)
        self.sessions: set[SMTPSession] = set()

    async def sweep(self) -> None:
        """Close sessions whose peer has been silent past its deadline (RFC 5321 4.5.3.2)."""
        interval = min(1.0, self.command_timeout / 4, self.data_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            self.expire(self.loop.time())

    def expire(self, now: float) -> None:
        """One sweep at loop time `now`.

        A session only flags its activity (each reply it sends, and each read of a message's
        octets); here a flagged session's deadline restarts from `now`: `data_timeout` while the
        engine reads a body (RFC 5321 4.5.3.2.6), else `command_timeout` (4.5.3.2.7; between BDAT
        chunks too, where the client owes a command: data_timeout there cut it off early, 3
        minutes where 5 are asked). So a time-out fires at least the timeout after the last
        activity, never earlier, and at most two sweep intervals later. Sessions waiting on our
        own work (a commit, a password check) are not timed out.
        """
        expired = []
        for session in self.sessions:
            if session.active:
                session.active = False
                conn = session.conn
                body = conn is not None and conn.receiving_body
                session.deadline = now + (self.data_timeout if body else self.command_timeout)
            elif session.deadline < now and session.task is None:
                expired.append(session)
        for session in expired:
            session._timed_out()


class SessionFactory:
    """A listener's protocol factory: uvloop calls it once per accepted connection.

    Here rather than as a closure in `app`, which is not compiled: from compiled code the session
    is built by a direct native call, not through `type.__call__`, an interpreted frame and
    `typing.cast` (363 instructions a connection, callgrind).
    """

    def __init__(self, ctx: ServerContext, listener: ListenerRuntime) -> None:
        self.ctx = ctx
        self.listener = listener

    def __call__(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, SMTPSession(self.ctx, self.listener))  # see SMTPSession


class SMTPSession:
    """One connection's asyncio protocol (structurally `asyncio.Protocol`: mypyc compiles this
    class to a native one, which cannot subclass it; asyncio and uvloop only call its methods)."""

    def __init__(self, ctx: ServerContext, listener: ListenerRuntime) -> None:
        self.ctx = ctx
        self.listener = listener
        self.loop = ctx.loop
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.peer_ip = "?"
        # What the caps and the AUTH limiter count this client under (ConnectionLimits.key).
        self.peer_key = "?"
        self.admitted = False
        self.task: asyncio.Future[Any] | None = None  # slow work the engine is paused for
        self.deadline = 0.0  # loop time after which the peer has been silent too long
        self.active = True  # activity since the last sweep (ServerContext.expire)
        self.peer_eof = False
        self.reading_paused = False
        self.write_paused = False
        self.handshaking = False  # a TLS handshake is in progress (the task awaits _handshake)
        self.tls_facts: str | None = None
        # What this session authenticated with, kept for _recheck (a PLAIN or LOGIN password stays in
        # memory while the session lasts), and the user's stored credentials as they were then.
        self.auth_credentials: Credentials | None = None
        self.auth_stamp: str | None = None
        # Implicit TLS: the bytes read before start_tls took the transport over (None otherwise).
        self.early: bytes | None = None
        # Transaction
        self.sender: str = ""
        self.raw_mail_params = ""
        self.recipients: list[Recipient] = []
        self.writer: MessageWriter | None = None
        self.cleanup: HeaderCleanup | None = None

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer_address(str(peer[0])) if peer else "?"
        limits = self.ctx.limits
        self.peer_key = limits.key(self.peer_ip)
        settings = self.listener.settings
        if not limits.admit(self.peer_key):
            if not settings.tls_active:
                self.transport.write(R.TOO_MANY_CONNECTIONS.to_bytes())
            # On implicit TLS a reply in clear would only be a TLS protocol error to the client.
            self.transport.close()
            return
        self.admitted = True
        self.conn = ServerConnection(settings, nonce=_nonce)
        if settings.tls_active:
            # Implicit TLS (465): the listener hands over plain TCP so that the connection is
            # counted before its handshake; joins `ctx.sessions` once greeted.
            self.early = b""
            self._start(self._implicit_tls())
            return
        self.ctx.sessions.add(self)
        self._flush()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        early = self.early
        if early is not None:
            # Implicit TLS, before start_tls took over: uvloop starts reading after
            # connection_made whatever it asked, so the ClientHello can be read here. Kept for
            # the TLS layer (`_hand_over_early`); pausing bounds it to one read.
            self.early = early + data
            if self.transport is not None:
                self.transport.pause_reading()
            return
        conn.receive_data(data)
        # A message's octets are progress, whether the message is being kept or refused (a chunk
        # whose BDAT was answered 554, a body past a full disk: the client still sends it all, and
        # was cut off by the time-out instead of getting its answer at the end). Between commands
        # only a reply counts (in _flush), so a client dripping a line that never ends is cut off.
        # Looked at before the bytes are parsed and after: they continue a body, or start one
        # behind its BDAT command.
        if conn.receiving_body:
            self.active = True
        if self.task is None:
            self._pump()
            if self.conn is not None and self.conn.receiving_body:
                self.active = True
        else:
            self._update_reading()  # slow work pending: stop reading once MAX_PENDING is held

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        """The connection is gone: give its places under the caps back and drop its state.
        Safe to call twice (after a failed STARTTLS handshake, `_starttls` and uvloop may both)."""
        if self.admitted:
            self.ctx.limits.release(self.peer_key)
            self.admitted = False
        self.ctx.sessions.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._drop_transaction()
        self.conn = None

    def eof_received(self) -> bool:
        """The peer shut down its sending side: answer what it sent, then close (keep the
        transport open for our replies, or a pipelined "...DATA .. QUIT" loses its 250)."""
        if self.early is not None:
            return False  # gone before its TLS handshake began: nothing to answer, close
        self.peer_eof = True
        if self.task is None:
            self._pump()
        # Over TLS the layer below closes at the peer's EOF whatever this returns, and asyncio and
        # uvloop log a WARNING for True: one per Postfix delivery, which ends so (QUIT, then close).
        return self.tls_facts is None

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    # -- the pump ---------------------------------------------------------------------------

    def _pump(self) -> None:
        conn = self.conn
        try:
            while conn is not None and self.task is None:
                event = conn.next_event()
                if event is None:
                    break
                self._handle(event)
                conn = self.conn
        except Exception:
            log.exception("session from %s failed", self.peer_ip)
            if self.conn is not None:
                self.conn.close_with(R.LOCAL_ERROR)
        self._flush()
        if self.peer_eof and self.task is None and self.transport is not None:
            # The peer half-closed: everything it sent has been answered; finish.
            self.transport.close()

    def _flush(self) -> None:
        conn, transport = self.conn, self.transport
        if conn is None or transport is None:
            return
        out = conn.data_to_send()
        if out:
            transport.write(out)
            # The peer's next command is awaited from our last reply (RFC 5321 4.5.3.2.7). A flag
            # for the sweeper (ServerContext.expire), not a clock reading: those were ~10 calls
            # and 3.8k instructions a message.
            self.active = True
        if conn.closed and self.task is None:
            transport.close()
            return
        self._update_reading()

    def _update_reading(self) -> None:
        transport, conn = self.transport, self.conn
        if transport is None or conn is None:
            return
        want = conn.wants_read and not self.write_paused
        # is_closing() last: a method call into uvloop, and most calls change nothing.
        if want == self.reading_paused and not transport.is_closing():
            self.reading_paused = not want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _timed_out(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed:
            log.info("time-out for %s", self.peer_ip)
            conn.close_with(R.TIMEOUT)
            self._flush()
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            # The peer has read none of our replies for a whole time-out (or since QUIT's 221 or a
            # 421): close() would wait for them, the 421 behind them, for ever, and hold the
            # connection, its buffers and its place under the caps. Postfix's smtpd gives up the
            # same way, when its write times out.
            log.info("closing the connection of %s: it does not read our replies", self.peer_ip)
            transport.abort()
        else:
            transport.close()

    def abort_handshake(self) -> bool:
        """Shutting down: close the connection if a STARTTLS handshake is still in progress, and
        say whether one was. Its client is owed nothing (what it sent before STARTTLS has been
        answered, and STARTTLS resets the transaction) and can be told nothing (the 220 is out,
        TLS is not up), while a client that stalls the handshake would hold the stop."""
        if not self.handshaking or self.transport is None:
            return False
        log.info("TLS handshake with %s cut short: shutting down", self.peer_ip)
        self.handshaking = False  # tells _handshake that the failure is ours, and logged
        self.conn = None
        self.transport.abort()
        return True

    def _start(self, coro: Awaitable[None]) -> None:
        self.task = asyncio.ensure_future(coro)
        self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("session task for %s failed", self.peer_ip, exc_info=exc)
            if self.conn is not None:
                if self.conn.paused:
                    self.conn.reject(R.LOCAL_ERROR)
                else:
                    self.conn.close_with(R.LOCAL_ERROR)
        self._pump()

    # -- events -----------------------------------------------------------------------------

    def _handle(self, event: ev.Event) -> None:
        conn = self.conn
        assert conn is not None
        if isinstance(event, ev.Hello):
            conn.accept()
        elif isinstance(event, ev.Mail):
            creds = self.auth_credentials
            if creds is not None and self.ctx.auth.stamp(creds.authcid) != self.auth_stamp:
                self._start(self._recheck(event))
                return
            self._mail(event)
        elif isinstance(event, ev.Rcpt):
            reply = self.ctx.relay.check_recipient(
                event.recipient, authenticated=conn.authenticated is not None
            )
            if reply is not None:
                self._log_refusal("RCPT", reply, self.sender, str(event.recipient))
                conn.reject(reply)
                return
            notify = ",".join(sorted(event.params.notify)) if event.params.notify else None
            orcpt = f"{event.params.orcpt[0]};{event.params.orcpt[1]}" if event.params.orcpt else None
            self.recipients.append(Recipient(str(event.recipient), notify, orcpt))
            conn.accept()
        elif isinstance(event, ev.BodyStart):
            self._open_body()
        elif isinstance(event, ev.BodyChunk):
            self._write_body(event.data)
        elif isinstance(event, ev.EndOfData):
            self._commit()
        # Tuples, not `A | B`: a union object would be built on every call.
        elif isinstance(event, (ev.BodyRejected, ev.TransactionReset)):
            self._drop_transaction()
        elif isinstance(event, ev.AuthAttempt):
            self._start(self._authenticate(event))
        elif isinstance(event, ev.StartTLS):
            self._start(self._starttls())
        elif isinstance(event, (ev.Quit, ev.Closing)):
            self._drop_transaction()

    def _mail(self, event: ev.Mail) -> None:
        conn = self.conn
        assert conn is not None
        reply = check_sender(
            event.sender,
            conn.authenticated,
            must_be_owned=self.ctx.auth.sender_must_be_owned,
            owns=self.ctx.auth.owns,
        )
        if reply is not None:
            self._log_refusal("MAIL", reply, "" if event.sender is None else str(event.sender), None)
            conn.reject(reply)
            return
        self._drop_transaction()
        self.sender = "" if event.sender is None else str(event.sender)
        self.raw_mail_params = event.raw_params if event.params.auth is None else self._trusted_auth(event)
        conn.accept()

    def _trusted_auth(self, event: ev.Mail) -> str:
        """The MAIL parameters to store, with AUTH= as RFC 4954 5 asks: the mailbox that first
        submitted the message, passed on only by a server that trusts the client to say so, and
        "as if AUTH=<> was supplied" otherwise. Trusted here: an authenticated session naming a
        mailbox its user owns. Stored rewritten, since the queue keeps the parameters to pass on
        unchanged: otherwise any client could have the next hop told that someone else sent it."""
        conn = self.conn
        assert conn is not None
        user, mailbox = conn.authenticated, event.params.auth
        if user is not None and mailbox is not None and mailbox != "<>" and self.ctx.auth.owns(user, mailbox):
            return event.raw_params
        return " ".join("AUTH=<>" if p[:5].upper() == "AUTH=" else p for p in event.raw_params.split())

    async def _recheck(self, event: ev.Mail) -> None:
        """The user's stored credentials changed since this session's AUTH: check the session's
        own against them again. A user removed, or a password changed (`user passwd`), ends the
        session with 421 at this MAIL: the operator's way to shut out a stolen password, which a
        session kept busy would otherwise outlive (Postfix and Dovecot keep such sessions). A 421,
        not a 5xx: a legitimate client loses no message, it reconnects and authenticates with what
        is valid now. The same password hashed afresh (a users.db rebuilt by configuration
        management and put in place) passes, and the session goes on."""
        conn = self.conn
        credentials = self.auth_credentials
        assert conn is not None and credentials is not None
        auth = self.ctx.auth
        stamp = auth.stamp(credentials.authcid)  # before the check, as in _authenticate
        ok = stamp is not None and await auth.verify(credentials, self.listener.name)
        if self.conn is None:
            return
        if ok:
            self.auth_stamp = stamp
            self._mail(event)
            return
        log.info(
            "session of %s from %s closed at MAIL: the user was removed or its password changed "
            "since it authenticated",
            printable(credentials.authcid),
            self.peer_ip,
        )
        conn.close_with(R.AUTH_REVOKED)

    def _open_body(self) -> None:
        conn = self.conn
        assert conn is not None
        try:
            self.writer = self.ctx.store.open_message()
        except SMTPError as exc:
            # The store refuses at once (closing, or a worker's link to the master lost) after
            # the engine queued its 354. Raised on, it was a traceback in the log and a 451 that
            # cut the session. A 421 ends the session; any other refusal is the answer at the
            # end of the body, as a disk that fills while the body streams is (_write_body).
            if exc.reply.code == 421:
                conn.close_with(exc.reply)
            else:
                self._body_error = exc.reply
            return
        hostname = self.listener.settings.hostname  # A-labels already (app.listener_settings)
        stamp = _date_stamp()
        msgid = date = None
        if self.listener.add_missing_headers:
            msgid = f"Message-ID: <{time.time_ns():x}.{secrets.token_hex(6)}@{hostname}>\r\n".encode()
            date = f"Date: {stamp}\r\n".encode()
        self.cleanup = HeaderCleanup(
            self._received(stamp, hostname),
            add_message_id=msgid,
            add_date=date,
            drop_bcc=self.listener.add_missing_headers,  # submission: see policy.cleanup
        )

    def _received(self, stamp: str, hostname: str) -> bytes:
        conn = self.conn
        assert conn is not None
        utf8 = conn.mail_params.smtputf8
        with_ = protocol_name(
            extended=conn.extended, tls=conn.tls_active, auth=conn.authenticated is not None, utf8=utf8
        )
        # The client's HELO name made safe for the header (policy.cleanup.trace_name); the peer's
        # address as an RFC 5321 address literal (`address_literal`).
        helo = trace_name(conn.helo, utf8=utf8) if conn.helo else "unknown"
        lines = [
            f"Received: from {helo} ({address_literal(self.peer_ip)})",
            f"\tby {hostname} (mailwright) with {with_}",
        ]
        if self.tls_facts:
            lines.append(f"\t(using {self.tls_facts})")
        if len(self.recipients) == 1:
            lines.append(f"\tfor <{self.recipients[0].address}>; {stamp}")
        else:
            lines[-1] += f"; {stamp}"
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def _write_body(self, data: bytes) -> None:
        writer, cleanup = self.writer, self.cleanup
        if writer is None or cleanup is None:
            return
        try:
            writer.write(cleanup.feed(data))
        except SMTPError as exc:
            # Disk full while streaming: keep reading to the end of DATA, answer then.
            self._body_error = exc.reply
            self._abort_writer()

    def _abort_writer(self) -> None:
        if self.writer is not None:
            try:
                self.ctx.store.abort(self.writer)
            except Exception:
                log.exception("aborting a message writer failed")
        self.writer = None
        self.cleanup = None

    def _drop_transaction(self) -> None:
        self._abort_writer()
        self._body_error = None
        self.sender = ""
        self.raw_mail_params = ""
        self.recipients = []

    _body_error: Reply | None = None

    def _commit(self) -> None:
        """Hand the message to the queue; the 250 goes out when its batch is on disk.

        A plain future callback rather than a task: this runs once per message.
        """
        conn = self.conn
        assert conn is not None
        writer, cleanup = self.writer, self.cleanup
        error = self._body_error
        if writer is None or cleanup is None or error is not None:
            self._drop_transaction()
            conn.reject(error or R.LOCAL_ERROR)
            return
        try:
            writer.write(cleanup.finish())
            if cleanup.hops > MAX_HOPS:
                loop = Reply(554, "5.4.6", f"Too many hops: {cleanup.hops} Received fields (a mail loop?)")
                self._log_refusal("END-OF-MESSAGE", loop, self.sender, None)
                raise SMTPError(loop)
            envelope = Envelope(
                sender=self.sender,
                recipients=tuple(self.recipients),
                mail_params=self.raw_mail_params,
                client_ip=self.peer_ip,
                helo=conn.helo or "",
                auth_user=conn.authenticated,
                tls=conn.tls_active,
                received_at=time.time(),
            )
            self.writer = None  # the store owns it now, whatever happens
            pending = self.ctx.store.commit(writer, envelope)
        except SMTPError as exc:
            self._drop_transaction()
            conn.reject(exc.reply)
            return
        self.task = pending
        pending.add_done_callback(self._committed)

    def _committed(self, pending: asyncio.Future[str]) -> None:
        self.task = None
        self._drop_transaction()
        conn = self.conn
        if conn is None or pending.cancelled():
            return
        exc = pending.exception()
        if exc is None:
            conn.accept(Reply(250, "2.0.0", f"OK queued as {pending.result()}"))
        elif isinstance(exc, SMTPError):
            conn.reject(exc.reply)
        else:
            log.error("queue commit for %s failed", self.peer_ip, exc_info=exc)
            conn.reject(R.LOCAL_ERROR)
        self._pump()

    def _log_refusal(self, verb: str, reply: Reply, sender: str, recipient: str | None) -> None:
        # Postfix's "NOQUEUE: reject:" line: why a client was turned away, in the log it reads.
        # Every client-chosen value through `printable`: an SMTPUTF8 address may hold a bidi
        # override, which a terminal showing the log would obey (log_format).
        conn = self.conn
        helo = printable(conn.helo) if conn is not None and conn.helo else "unknown"
        to = f" to=<{printable(recipient)}>" if recipient is not None else ""
        log.info(
            "NOQUEUE: reject: %s from %s[%s]: %s; from=<%s>%s listener=%s",
            verb, helo, self.peer_ip, reply, printable(sender), to, self.listener.name,
        )  # fmt: skip

    async def _authenticate(self, event: ev.AuthAttempt) -> None:
        conn = self.conn
        assert conn is not None
        auth = self.ctx.auth
        key = self.peer_key
        locked = auth.limiter.check(key)
        if locked is not None:
            log.info("AUTH refused from %s: locked out after repeated failures", self.peer_ip)
            conn.reject(locked)
            return
        # Read before the check: a change that races it makes the next MAIL check again (_recheck).
        stamp = auth.stamp(event.credentials.authcid)
        ok = await auth.verify(event.credentials, self.listener.name)
        if self.conn is None:
            return
        if ok:
            self.auth_credentials, self.auth_stamp = event.credentials, stamp
            auth.limiter.success(key)
            written = event.credentials.authcid
            user = auth.canonical(written)
            log.info(
                "AUTH %s ok for %s from %s%s",
                event.credentials.mechanism,
                printable(user),
                self.peer_ip,
                "" if user == written else f" (written {printable(written)})",  # log_format
            )
            conn.accept()
            # Recorded (Envelope.auth_user, sender ownership) as the store's user, not as written.
            conn.authenticated = user
            return
        delay = auth.limiter.failure(key)
        log.info("AUTH %s failed from %s", event.credentials.mechanism, self.peer_ip)
        await asyncio.sleep(delay)
        if self.conn is not None:
            conn.reject(auth.limiter.check(key) or R.AUTH_FAILED)

    async def _starttls(self) -> None:
        conn, transport = self.conn, self.transport
        assert conn is not None and transport is not None
        context = self.listener.tls_context
        self._flush()
        if context is None:
            conn.close_with(R.TLS_UNAVAILABLE)
            return
        if await self._handshake(transport, context):
            conn.tls_started()
            # The engine ends the authentication (a STARTTLS after AUTH: loopback, plaintext AUTH
            # allowed); so does the session, or _recheck would judge credentials no longer in use.
            self.auth_credentials = self.auth_stamp = None

    async def _handshake(self, transport: asyncio.Transport, context: ssl.SSLContext) -> bool:
        """The server side of a TLS handshake on `transport`, for STARTTLS and implicit TLS alike:
        True with `transport` and `tls_facts` replaced, or False with the session over."""
        self.handshaking = True
        try:
            new = await self.loop.start_tls(
                transport,
                cast(asyncio.BaseProtocol, self),
                context,
                server_side=True,
                ssl_handshake_timeout=self.ctx.handshake_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            if self.handshaking:  # not cut by abort_handshake, which said so itself
                log.info("TLS handshake with %s failed: %s", self.peer_ip, _reason(exc))
            transport.abort()
            # uvloop calls no connection_lost for a connection lost while the handshake runs (a
            # peer that closes, resets or times out; our own abort): without this its place
            # under the caps was never given back. This coroutine is the task: nothing to cancel.
            self.task = None
            self._end()
            return False
        finally:
            self.handshaking = False
        if new is None or self.conn is None:
            return False
        self.transport = new
        self.tls_facts = session_facts(new.get_extra_info("ssl_object"))
        return True

    async def _implicit_tls(self) -> None:
        """Implicit TLS (RFC 8314 3.3): the handshake first, then the greeting inside TLS.

        Run here rather than by the listener (`create_server(ssl=...)`), which calls
        `connection_made` only after the handshake: until then the connection was counted
        against no cap, so one address could hold any number of them open for the whole
        handshake time-out, past `max_connections_per_ip` and past the open-file limit, where
        libuv answers EMFILE by closing whatever waits in the listen queue: every other client's
        connection, unanswered and unlogged.
        """
        conn, transport = self.conn, self.transport
        context = self.listener.tls_context
        assert conn is not None and transport is not None
        if context is None:
            transport.close()
            return
        # Runs after start_tls's first step (which installs the TLS layer as the transport's
        # protocol and pauses reading) and before that layer starts its handshake: what was
        # read meanwhile goes in first, in order.
        self.loop.call_soon(self._hand_over_early)
        if not await self._handshake(transport, context):
            return
        self.ctx.sessions.add(self)
        self._flush()  # the greeting

    def _hand_over_early(self) -> None:
        early, transport = self.early, self.transport
        self.early = None
        if not early or transport is None:
            return
        layer = transport.get_protocol()
        if layer is cast(asyncio.BaseProtocol, self):  # start_tls did not take over: closing
            return
        # asyncio's and uvloop's TLS layers are buffered protocols; before their handshake has
        # started they only store what they are given.
        tls_layer = cast(asyncio.BufferedProtocol, layer)
        view = memoryview(early)
        while view:
            buffer = memoryview(tls_layer.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            tls_layer.buffer_updated(size)
            view = view[size:]


def peer_address(host: str) -> str:
    """A peer's address as the session shows and stores it: an IPv4 client that reached an IPv6
    socket (IPv4-mapped, "::ffff:192.0.2.1") as its IPv4 address, as Postfix does, and no zone
    ("%eth0", a link-local peer's interface), which belongs to this host, not to the address."""
    if ":" not in host:
        return host
    host = host.partition("%")[0]
    if host[:7].lower() == "::ffff:":
        rest = host[7:]
        if "." in rest and ":" not in rest:  # "::ffff:0:192.0.2.1" is IPv4-translated: IPv6
            return rest
    return host


def address_literal(ip: str) -> str:
    """`ip` as an RFC 5321 4.1.3 address literal, for the Received header's TCP-info (4.4):
    "[192.0.2.1]", "[IPv6:2001:db8::1]"."""
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def _reason(exc: BaseException) -> str:
    """An exception for a log line: its text, or its name when it has none (a peer that closed
    mid-handshake is a bare ConnectionResetError)."""
    return str(exc) or type(exc).__name__


_stamp_cache: tuple[int, str] = (0, "")


def _date_stamp() -> str:
    """RFC 5322 date for trace headers, formatted at most once a second (it is not cheap)."""
    global _stamp_cache
    now = int(time.time())
    if _stamp_cache[0] != now:
        _stamp_cache = (now, email.utils.formatdate(now, localtime=True))
    return _stamp_cache[1]


def _nonce() -> str:
    return f"{secrets.randbits(64)}.{int(time.time())}"
