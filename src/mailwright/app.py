"""Wiring: builds the server's parts from a `Config` and runs them.  No global registry.

Start-up order: state directory, TLS material (a self-signed certificate is generated on
first start when none is configured, with a warning), user store, queue store, listeners; started
as root with `user` set, the listeners are bound first and root is given up before the rest
(`_give_up_root`, `mailwright.privileges`), so that everything after runs and creates as that user.
Signals: SIGHUP reloads the TLS certificate and key (new handshakes use them; a bad file
keeps the old one and says why); SIGTERM/SIGINT stop accepting, tell open sessions 421 (a
session with a commit in flight gets its 250 first; a STARTTLS handshake still in progress is
cut), close the queue, and log "mailwright stopped"; a second stop signal meanwhile only says
what the stop waits for, and later ones are ignored.
`run` chooses the process model from `workers`: this module's single process, or
`prefork.master` (the same start-up, done once by the master, and a `Server` per worker).

Not responsible for: protocol rules, policy decisions, storage details, worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import pwd
import signal
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

from mailwright import log_format
from mailwright.build_info import build_kind
from mailwright.config.schema import (
    BUSY_WAIT,
    Config,
    ListenerConfig,
    is_ip_address,
    root_note,
    running_as_root,
    unprivileged_note,
)
from mailwright.limits.auth_failures import AuthFailureLimiter
from mailwright.limits.connections import ConnectionLimits
from mailwright.limits.open_files import fit_open_files
from mailwright.net.cert_watch import CertificateWatch
from mailwright.net.server import AuthBackend, ListenerRuntime, ServerContext, SessionFactory, SMTPSession
from mailwright.net.tls import ReloadableServerContext, TLSConfigError, ensure_self_signed
from mailwright.policy.cleanup import header_host
from mailwright.policy.relay import RelayPolicy
from mailwright.privileges import PrivilegeError, RunAs, code_directories, drop, hand_over
from mailwright.protocol.reply import R
from mailwright.protocol.sasl import Credentials
from mailwright.protocol.server import ServerSettings
from mailwright.queue.sqlite import QueueLocked, QueueUnusable, SQLiteQueueStore
from mailwright.queue.store import MessageSink
from mailwright.users.store import UserError, UserStore, canonical_name

log = logging.getLogger("mailwright")

# Connections the kernel holds for us while every worker is busy.  SMTP's server speaks first, so
# an overflow is worse than a refusal: Linux drops the handshake's last ACK, later forgets the
# half-open request, and the client waits for a greeting that never comes (Postfix's default is
# 100; net.core.somaxconn caps it, 4096 on current kernels).
LISTEN_BACKLOG = 1024


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def listener_settings(config: Config, lc: ListenerConfig, tls: bool) -> ServerSettings:
    submission = lc.role in ("submission", "submissions")
    return ServerSettings(
        # The greeting, EHLO and CRAM-MD5 challenges carry the name: RFC 5321's domain is ASCII.
        hostname=header_host(config.hostname),
        max_message_size=config.limits.max_message_size,
        max_recipients=config.limits.max_recipients,
        tls_available=tls and lc.role != "submissions",
        tls_active=lc.role == "submissions",
        auth_mechanisms=tuple(config.auth.mechanisms) if submission else (),
        auth_required=submission,
        allow_plaintext_auth=lc.allow_plaintext_auth and _is_loopback(lc.address),
    )


def make_verifier(users: UserStore) -> Callable[[Credentials, str], Awaitable[bool]]:
    async def verify(cred: Credentials, listener: str) -> bool:
        # An authzid naming the same user as the store compares names ("a@EXAMPLE.org" is
        # "a@example.org") acts for no one else; acting for another user is not offered.
        if cred.authzid and canonical_name(cred.authzid) != canonical_name(cred.authcid):
            return False
        if cred.password is not None:
            return await users.averify_password(cred.authcid, cred.password)
        if cred.cram_digest is not None:
            secret = await asyncio.to_thread(users.cram_secret, cred.authcid)
            return secret is not None and cred.verify_cram(secret)
        return False

    return verify


def tls_material(config: Config) -> tuple[Path, Path]:
    """The certificate and key to serve: the configured ones, else a generated self-signed pair."""
    cert, key = config.tls.cert, config.tls.key
    if cert is None or key is None:
        cert, key = ensure_self_signed(config.state_dir / "tls", config.hostname)
        log.warning(
            "no TLS certificate configured: using a self-signed one for %s at %s. Clients will not "
            "trust it; set [tls] cert and key to a real certificate (e.g. from Let's Encrypt).",
            config.hostname,
            cert,
        )
    return cert, key


class Server:
    """One event loop's SMTP service.  Alone it owns everything (the single-process server); in a
    worker process (`prefork`) the master passes in the bound sockets, the queue channel, the
    shared connection caps, the relayed AUTH limiter and the certificate files it chose, and the
    worker announces nothing."""

    def __init__(
        self,
        config: Config,
        *,
        store: MessageSink | None = None,
        sockets: Sequence[Sequence[socket.socket]] | None = None,
        limits: ConnectionLimits | None = None,
        limiter: AuthFailureLimiter | None = None,
        tls_files: tuple[Path, Path] | None = None,
        announce: bool = True,
    ) -> None:
        self.config = config
        self.servers: list[asyncio.AbstractServer] = []
        self.tls: ReloadableServerContext | None = None
        self.store: MessageSink | None = store
        self.sockets = sockets
        self.limits = limits
        self.limiter = limiter
        self.tls_files = tls_files
        self.announce = announce
        self.ctx: ServerContext | None = None
        self.sweeper: asyncio.Future[None] | None = None
        # The single process watches its certificate; a worker's master does it for all of them.
        self.cert_watch: CertificateWatch | None = None
        self.cert_timer: asyncio.Future[None] | None = None
        self.stopped = False  # stop() has finished: the queue is closed

    async def start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.tls = ReloadableServerContext(*(self.tls_files or tls_material(cfg)))
        if self.tls_files is None:
            self.cert_watch = CertificateWatch(cfg.hostname, generated=cfg.tls.cert is None)
            self._watch_certificate()
        users = UserStore(cfg.users_db)
        if self.store is None:
            self.store = SQLiteQueueStore(cfg.queue.directory, min_free=cfg.queue.min_free)
        limiter = self.limiter
        if limiter is None:  # not `or`: an empty limiter is falsy (it has a length)
            limiter = AuthFailureLimiter(
                max_failures=cfg.auth.max_failures, window=cfg.auth.failure_window, lockout=cfg.auth.lockout
            )
        limits = self.limits
        if limits is None:
            limits = ConnectionLimits(
                cfg.limits.max_connections,
                cfg.limits.max_connections_per_ip,
                ipv6_prefix=cfg.limits.ipv6_prefix,
            )
        auth = AuthBackend(
            verify=make_verifier(users),
            owns=users.owns_sender,
            limiter=limiter,
            sender_must_be_owned=cfg.auth.sender_must_be_owned,
            stamp=users.credentials_stamp,
            canonical=canonical_name,
        )
        self.ctx = ctx = ServerContext(
            store=self.store,
            relay=RelayPolicy(cfg.local_domains, cfg.relay_domains, hostname=cfg.hostname),
            auth=auth,
            limits=limits,
            command_timeout=cfg.limits.command_timeout,
            data_timeout=cfg.limits.data_timeout,
        )
        self.sweeper = asyncio.ensure_future(ctx.sweep())
        loop = asyncio.get_running_loop()
        note = unprivileged_note(cfg)
        if note and self.announce:
            log.warning("%s", note)
        if self.announce:
            announce_privileges(cfg)
        for index, lc in enumerate(cfg.listeners):
            implicit = lc.role == "submissions"
            runtime = ListenerRuntime(
                name=f"{lc.role}:{lc.port}",
                role=lc.role,
                settings=listener_settings(cfg, lc, tls=True),
                tls_context=self.tls.context,
                add_missing_headers=lc.role != "mx",
            )
            # Plain TCP for implicit TLS too: the session counts the connection against the caps
            # first, then runs the handshake itself (SMTPSession._implicit_tls).
            factory = SessionFactory(ctx, runtime)
            if self.sockets is None:
                server = await loop.create_server(
                    factory,
                    host=lc.address,
                    port=lc.port,
                    backlog=LISTEN_BACKLOG,
                    reuse_address=True,
                )
                self.servers.append(server)
            else:
                for sock in self.sockets[index]:
                    # The backlog again: uvloop calls listen() on a given socket too, with 100
                    # unless told, which would shrink the queue the master made.
                    server = await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG)
                    self.servers.append(server)
            if self.announce:
                log.info(
                    "listening on %s (%s%s)", lc.host_port(), lc.role, ", implicit TLS" if implicit else ""
                )
        if self.announce:
            log.info(
                "mailwright ready: hostname %s, queue %s, one process, %s",
                cfg.hostname,
                cfg.queue.directory,
                build_kind(),
            )

    def reload_tls(self) -> None:
        if self.tls is None:
            return
        try:
            self.tls.reload()
            log.info("TLS certificate reloaded")
            self._watch_certificate()
        except TLSConfigError as exc:
            log.error("TLS reload failed, keeping the old certificate: %s", exc)

    def _watch_certificate(self) -> None:
        """Announce the certificate just loaded, and look at it again whenever the watch says."""
        watch, tls = self.cert_watch, self.tls
        if watch is None or tls is None:
            return
        watch.announce(tls.cert)
        if self.cert_timer is not None:
            self.cert_timer.cancel()

        async def again() -> None:
            while True:
                await asyncio.sleep(max(0.0, watch.due - time.monotonic()))
                if time.monotonic() >= watch.due:
                    watch.check()

        self.cert_timer = asyncio.ensure_future(again())

    async def stop(self) -> None:
        for task in (self.sweeper, self.cert_timer):
            if task is not None:
                task.cancel()
        for server in self.servers:
            server.close()
        ctx = self.ctx
        if ctx is not None:
            # uvloop calls connection_made one turn after it accepted the connection: let those
            # accepted just before the listeners closed in, so that they are told 421 below too.
            await asyncio.sleep(0)
            hooked: set[asyncio.Future[Any]] = set()
            # Let in-flight commits finish so their clients get the 250 they are owed, then tell
            # those sessions 421 too (see _close_when_idle). Each pass also catches late arrivals.
            # A worker's master waits limits.stop_timeout for it; alone, nothing else bounds this.
            wait = min(BUSY_WAIT, self.config.limits.stop_timeout)
            for _ in range(max(1, round(wait / 0.05))):
                for session in list(ctx.sessions):
                    _close_when_idle(session, hooked)
                if not any(s.task for s in ctx.sessions):
                    break
                await asyncio.sleep(0.05)
        if self.store is not None:
            await self.store.close()
        self.stopped = True


def _close_when_idle(session: SMTPSession, hooked: set[asyncio.Future[Any]]) -> None:
    """Shutting down: tell `session` 421 4.3.2 and close it now, or else as soon as the work it
    waits for (a commit, a password check) has been answered. A STARTTLS handshake in progress
    is cut at once (`SMTPSession.abort_handshake`): nothing is owed to its client, and a client
    that stalls it would hold the stop for the whole wait in `Server.stop`.

    Why not leave a busy session alone: after its 250 the client goes on with its next message,
    the store that is closing refuses it (451 4.3.0, with a traceback in the log), or the exit
    cuts the connection without a reply, and meanwhile the server keeps taking new mail for as
    long as such clients keep it busy (up to the wait in `Server.stop`).
    """
    conn = session.conn
    if conn is None or conn.closed or session.abort_handshake():
        return
    task = session.task
    if task is None:
        conn.close_with(R.SHUTTING_DOWN)
        session._flush()
    elif task not in hooked:
        hooked.add(task)

        def answered(done: asyncio.Future[Any]) -> None:
            # Cancelled: the connection is gone, or the loop is being torn down at exit; the
            # transport may be closed: write nothing.
            if not done.cancelled():
                _close_when_idle(session, hooked)

        # Added after the session's own callback (which sends the 250 and answers whatever the
        # client pipelined after it), so this runs right after that, before the next read.
        task.add_done_callback(answered)


async def serve(config: Config, sockets: list[list[socket.socket]] | None = None) -> None:
    server = Server(config, sockets=sockets)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    log.info("shutting down")
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _already_stopping, server)
    await server.stop()
    # The same last line as the prefork master's: the operator sees that the stop completed.
    if isinstance(server.store, SQLiteQueueStore):
        log.info("mailwright stopped: %s", server.store.stats.summary())
    _ignore_late_signals()


def _already_stopping(server: Server) -> None:
    """A stop signal during the stop: an impatient operator is told it was seen, and what is left.
    One that came during the stop's last moments may be handled once the stop has finished (the
    loop still runs its callbacks while `uvloop.run` ends it): then the log's last line,
    "mailwright stopped", has said everything, and this one says nothing."""
    if server.stopped:
        return
    busy = sum(1 for s in server.ctx.sessions if s.task is not None) if server.ctx is not None else 0
    log.info("already shutting down: waiting for %d session(s) busy with a commit or a password check", busy)


def _ignore_late_signals() -> None:
    """The queue is closed and every session answered: from here on a further SIGTERM, ^C or
    SIGHUP (an impatient operator) has nothing left to stop or reload, and could only spoil the
    exit. The interpreter's finalization puts SIG_DFL back for every signal with a Python handler
    (the prefork master's, and uvloop's, which closing its loop leaves in place), so such a signal
    would then kill the process (status -15 or -2 instead of 0), whichever thread takes it: in one
    process, libuv's worker threads block no signal. SIG_IGN is left alone by finalization, and
    setting it drops one already pending. Call from the main thread.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _fit_open_files(config: Config, workers: int) -> Config:
    """The open-file limit that `limits.max_connections` needs (see limits.open_files), before the
    workers are forked so that they inherit it; the config with the cap that limit holds."""
    limits = config.limits
    budget = fit_open_files(limits.max_connections, workers)
    if budget.fits:
        if budget.raised:
            log.info(
                "open-file limit raised from %s to %s for limits.max_connections = %d",
                budget.soft_before,
                budget.soft,
                limits.max_connections,
            )
        return config
    cap = budget.max_connections
    log.warning("%s", budget.shortfall(limits.max_connections))
    fitted = dataclasses.replace(
        limits, max_connections=cap, max_connections_per_ip=min(limits.max_connections_per_ip, cap)
    )
    return dataclasses.replace(config, limits=fitted)


def announce_privileges(config: Config) -> None:
    """Started as root without `user`: a WARNING once other hosts can connect, else an INFO line."""
    note = root_note(config)
    if note:
        log.warning("%s", note)
    elif running_as_root() and config.user is None:
        log.info(
            'running as root, every listener on loopback: set user = "mailwright" (an unprivileged '
            "user) before listening on other addresses"
        )


def _give_up_root(config: Config) -> list[list[socket.socket]] | None:
    """Started as root with `user` set: bind the listeners, give the state to the user and become
    it (see `privileges`); the bound sockets, or None when nothing was bound here."""
    root = running_as_root()
    if config.user is None:
        return None  # what that means is said by `announce_privileges`, with the other start-up notes
    run_as = RunAs.lookup(config.user)
    if not root:
        if os.geteuid() == run_as.uid:
            return None  # started as that user already (systemd's User=, say)
        raise PrivilegeError(
            f"started as uid {os.geteuid()}, not root: cannot become user {run_as.name}",
            f"start it as root (it gives up root once its ports are bound) or as {run_as.name}, "
            "or remove user from the configuration",
        )
    from mailwright.prefork.master import bind_listener

    sockets: list[list[socket.socket]] = []
    try:
        for lc in config.listeners:
            sockets.append(bind_listener(lc, LISTEN_BACKLOG))
        changed = hand_over(run_as, config.state_dir, config.queue.directory)
        drop(run_as, code_directories())
    except BaseException:
        for group in sockets:
            for sock in group:
                sock.close()
        raise
    if changed:
        log.info(
            "gave %d file(s) of the state to user %s, the first %s", len(changed), run_as.name, changed[0]
        )
    log.info("running as user %s (uid %d, gid %d); ports bound as root", run_as.name, run_as.uid, run_as.gid)
    return sockets


def run(config: Config) -> int:
    """Run the server until a signal stops it: one uvloop process, or a master and its workers."""
    workers = config.worker_count()
    log_format.configure(os.environ.get("MAILWRIGHT_LOG", "INFO"), with_pid=workers > 1)
    config = _fit_open_files(config, workers)
    try:
        sockets = _give_up_root(config)
        if workers > 1:
            from mailwright.prefork.master import run_master

            code = run_master(config, workers, sockets)
            _ignore_late_signals()
            return code
        uvloop.run(serve(config, sockets))
    except PrivilegeError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except TLSConfigError as exc:
        log.error("%s", exc)
        return 2
    except QueueLocked as exc:
        log.error(
            "cannot start: %s (fix: stop the other mailwright, or give this one its own state_dir)", exc
        )
        return 1
    except QueueUnusable as exc:
        log.error("cannot start: %s", exc)
        return 1
    except (UserError, sqlite3.Error) as exc:
        log.error("cannot start: %s", _users_db_problem(config.users_db, exc))
        return 1
    except socket.gaierror as exc:
        # Only a listener's address is looked up at start-up; the resolver does not say which.
        names = [lc.address for lc in config.listeners if lc.address and not is_ip_address(lc.address)]
        log.error(
            "cannot start: cannot resolve the listener address %s: %s (fix: write an IP address of"
            ' this machine, e.g. address = "0.0.0.0", or a host name that resolves to one)',
            " or ".join(repr(n) for n in dict.fromkeys(names)) or "given",
            exc.strerror or exc,
        )
        return 1
    except OSError as exc:
        log.error("cannot start: %s%s", exc, _os_error_hint(exc))
        return 1
    return 0


def _os_error_hint(exc: OSError) -> str:
    """The fix for an OSError at start-up: a bind (no file name) or a path of the state."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        # The state directory (or one below it) could not be made: a file has its name.  The
        # loader catches this for paths written in the file, not for $MAILWRIGHT_STATE_DIR.
        return (
            " (fix: a file stands where mailwright makes a directory: move it, or choose another"
            " state_dir or MAILWRIGHT_STATE_DIR)"
        )
    if exc.filename is not None:
        # A path of the state (directory, queue, lock, user database): a bind error names none.
        if exc.errno in (errno.EACCES, errno.EPERM):
            try:
                user = pwd.getpwuid(os.geteuid()).pw_name
            except KeyError:
                user = f"uid {os.geteuid()}"
            return (
                f" (fix: the server runs as {user}, who may not create or write there: give it the"
                " directory, or set state_dir (or MAILWRIGHT_STATE_DIR) to one it may write)"
            )
        if exc.errno == errno.EROFS:
            return " (fix: that file system is read-only: set state_dir to a directory on a writable one)"
        return (
            " (fix: check state_dir, queue.directory and auth.users_db, or MAILWRIGHT_STATE_DIR: each"
            " must be a directory, or a file in one, that the server can create and write)"
        )
    if exc.errno == errno.EADDRINUSE:
        return " (fix: another server, Postfix perhaps, listens there: stop it or change the port)"
    if exc.errno == errno.EACCES:
        return " (fix: ports below 1024 need root or CAP_NET_BIND_SERVICE; or use ports above 1024)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            " (fix: that is no address of this machine: set the listener's address to one it has"
            ' (ip -brief address lists them), or to "0.0.0.0" or "::" for every address)'
        )
    return ""


def _users_db_problem(db: Path, exc: Exception) -> str:
    """The user database at `db` cannot be opened: which file, why, and the fix."""
    if db.is_dir():
        example = db / "users.db"
        return f"user database {db} is a directory (fix: set auth.users_db to a file in it, e.g. {example})"
    said = str(exc)
    problem = said if str(db) in said else f"user database {db}: {said}"
    if "fix:" in said:
        return problem
    return f"{problem} (fix: check auth.users_db and its permissions)"
