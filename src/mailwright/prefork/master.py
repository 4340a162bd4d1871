"""The multi-process server: one master that owns the queue, N forked workers that speak SMTP.

Why: one Python process is bound to one core by the GIL, and in one process the queue's writer
thread and the event loop trade the GIL for every batch. Here the SMTP sessions run in `workers`
processes that all accept from the same listening sockets (bound once, by the master, before the
fork; the kernel hands each connection to one of them), and the master is the queue's single
writer, like Postfix's smtpd processes feeding cleanup and the queue manager. The master runs no
event loop: it waits in `poll` on the workers' channels, takes every COMMIT that arrived, makes
the lot durable in ONE transaction (`queue.committer`), and answers. A batch forms by itself while
the previous one is being fsynced; under load (the last batch held more than one message) the
master also waits up to `GATHER_MS` for the next frame, so that it joins the batch: every
`fdatasync` saved is ~90 µs of CPU, which on a CPU-bound host buys more than the wait costs
(docs/performance.md, the rounds "Run 32" and "Run 33"). A lone message never waits.

Start-up happens in the master before any fork, so every start-up error is reported once, with its
fix: the queue directory lock, schema migration and recovery, the TLS material, the user database,
and the listening sockets (bound before all of it by `app.run` when it gives up root for `user`:
the master and its workers then run as that user).

Life cycle:
- A worker that dies is reaped and replaced (after a pause when it dies young, so a crash loop does
  not spin); its connection counts are cleared. Its sessions' unanswered commits are answered by
  nobody, which is safe: no 250 was sent for them.
- SIGTERM/SIGINT: the master tells every worker to stop (they answer 421 to idle sessions and wait
  for their commits), keeps committing until they are gone (SIGKILL after `limits.stop_timeout`),
  then closes the queue; a second signal only says what the stop still waits for. SIGHUP is
  passed on: each worker reloads the certificate (one still starting does so once it has said
  READY; "mailwright ready" is logged when all of them have).
- If the master dies, the kernel kills the workers (PR_SET_PDEATHSIG) and their channel ends: an
  accepted message is never acknowledged by a worker whose master cannot commit it.
- AUTH failures and successes are relayed to every other worker, so a lockout holds server-wide.

Not responsible for: SMTP (`net.server`, run by each worker through `app.Server`), the commit
itself (`queue.committer`), the wire format (`prefork.wire`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Final

import uvloop

from mailwright.build_info import build_kind
from mailwright.config.schema import Config, ListenerConfig, unprivileged_note
from mailwright.limits.connections import ConnectionLimits, ConnectionTable
from mailwright.net.cert_watch import CertificateWatch
from mailwright.net.tls import ReloadableServerContext, TLSConfigError, server_context
from mailwright.prefork import wire
from mailwright.prefork.worker import MasterLink, RelayedAuthLimiter, RemoteQueueStore
from mailwright.queue.commit_log import CommitLog
from mailwright.queue.committer import Job
from mailwright.queue.spool import HandedOverBody
from mailwright.queue.sqlite import SQLiteQueueStore
from mailwright.users.store import UserStore

log = logging.getLogger("mailwright")

YOUNG: Final = 2.0  # a worker that dies younger than this is restarted only after RESTART_PAUSE
RESTART_PAUSE: Final = 2.0
_READ: Final = 64 * 1024  # below malloc's mmap threshold: a bigger buffer costs mmap+munmap per read
_SEND_TIMEOUT: Final = 10  # seconds; SO_SNDTIMEO, so a send needs no poll() first (a Python timeout would)
_PR_SET_PDEATHSIG: Final = 1
# At most this long (ms) the master waits, under load, for one more worker frame to join a batch.
# 0 gained nothing and 2 no more than 1 (docs/performance.md, the round "Run 33").
GATHER_MS: Final = 1
EX_SOFTWARE: Final = 70  # sysexits.h: an internal error


@dataclass(eq=False)
class WorkerHandle:
    slot: int
    pid: int
    channel: socket.socket | None
    started: float
    reader: wire.FrameReader = field(default_factory=wire.FrameReader)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    ready: bool = False  # it said READY: its signal handlers and certificate are in place
    reload_due: bool = False  # a SIGHUP came before it was ready


def bind_listener(lc: ListenerConfig, backlog: int) -> list[socket.socket]:
    """Listening sockets for one listener (one per address `lc.address` resolves to)."""
    infos = socket.getaddrinfo(lc.address or None, lc.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                # Worded as asyncio words it, so both server modes report a clash alike.
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {addr!r}: {reason}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the master goes (Linux; elsewhere the
    channel's end-of-file stops the worker instead)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Master:
    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.count = workers
        self.workers: dict[int, WorkerHandle] = {}  # by pid
        # select.poll, not selectors: the selectors module is interpreted Python, run on every turn.
        self.poll = select.poll()
        self.channels: dict[int, WorkerHandle] = {}  # by channel fd
        self.stopping = False
        self.stop_deadline = 0.0
        self.restarts: dict[int, float] = {}  # slot -> monotonic time to restart at
        self.signals: list[int] = []
        self.exit_code = 0
        self.announced = False
        self._wake_r = self._wake_w = -1  # the signal wake-up pipe, made by prepare()
        self.commit_log = CommitLog()
        self.last_batch = 0  # messages the last turn committed (0: it read none); over one means load
        self.cert_watch = CertificateWatch(config.hostname, generated=config.tls.cert is None)

    # -- start-up (before any fork) -------------------------------------------------------------

    def prepare(self, sockets: list[list[socket.socket]] | None = None) -> None:
        from mailwright.app import LISTEN_BACKLOG, announce_privileges, tls_material

        # Signals are caught from here on (a SIGHUP during start-up must not kill the server); they
        # are acted on by the loop in run().
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = tls_material(cfg)
        ReloadableServerContext(self.cert, self.key)  # fail now, once, on a bad certificate
        self.cert_watch.announce(self.cert)
        UserStore(cfg.users_db)  # create or check it once, here
        note = unprivileged_note(cfg)
        if note:
            log.warning("%s", note)
        announce_privileges(cfg)
        self.store = SQLiteQueueStore(cfg.queue.directory, writer_thread=False, min_free=cfg.queue.min_free)
        try:
            self.sockets = sockets or [bind_listener(lc, LISTEN_BACKLOG) for lc in cfg.listeners]
        except BaseException:
            self.store.close_writer_role()
            raise
        self.table = ConnectionTable(self.count)
        for lc in cfg.listeners:
            implicit = ", implicit TLS" if lc.role == "submissions" else ""
            log.info("listening on %s (%s%s)", lc.host_port(), lc.role, implicit)

    # -- workers --------------------------------------------------------------------------------

    def spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # the worker
            code = EX_SOFTWARE
            try:
                ours.close()
                self._forget_in_child()
                code = self._worker(slot, theirs)
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(code)
        theirs.close()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", _SEND_TIMEOUT, 0))
        handle = WorkerHandle(slot, pid, ours, time.monotonic())
        self.workers[pid] = handle
        self.watch(handle)
        log.debug("worker %d started as pid %d", slot, pid)

    def _forget_in_child(self) -> None:
        """In a fresh worker: drop the master's signal plumbing and its ends of other channels."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        # A ^C reaches the whole process group; the master decides, and SIGTERMs the workers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Until the event loop takes SIGHUP over, a reload request must not kill the worker; the
        # certificate is read after that point anyway.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _die_with_parent()
        for handle in self.workers.values():
            if handle.channel is not None:
                handle.channel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.store.release_lock_in_child()

    def _worker(self, slot: int, channel: socket.socket) -> int:
        uvloop.run(self._serve(slot, channel))
        return 0

    async def _serve(self, slot: int, channel: socket.socket) -> None:
        from mailwright.app import Server

        cfg = self.config
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        _, link = await loop.create_unix_connection(lambda: MasterLink(on_lost=stop.set), sock=channel)
        limiter = RelayedAuthLimiter(
            link, max_failures=cfg.auth.max_failures, window=cfg.auth.failure_window, lockout=cfg.auth.lockout
        )
        server = Server(
            cfg,
            store=RemoteQueueStore(link, self.store.spool),
            sockets=self.sockets,
            limits=ConnectionLimits(
                cfg.limits.max_connections,
                cfg.limits.max_connections_per_ip,
                self.table,
                slot,
                ipv6_prefix=cfg.limits.ipv6_prefix,
            ),
            limiter=limiter,
            tls_files=(self.cert, self.key),
            announce=False,
        )
        # Handlers first: a SIGHUP during start-up then reloads (or finds nothing loaded yet, and
        # start() reads the new files), and a SIGTERM stops the worker cleanly.
        loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await server.start()
        link.send((wire.READY,))
        await stop.wait()
        await server.stop()  # closes the store too: waits for the master's answers in flight

    # -- the master's loop ----------------------------------------------------------------------

    def run(self) -> int:
        for slot in range(self.count):
            self.spawn(slot)
        self.poll.register(self._wake_r, select.POLLIN)
        self._reap()  # a worker may have died before SIGCHLD had a handler
        try:
            while not (self.stopping and not self.workers):
                self._turn()
        except Exception:
            # A bug here must not leave workers acknowledging what nobody commits: they die with
            # the master (PR_SET_PDEATHSIG), and the queue lock is released below.
            log.critical("the master failed; stopping (the workers stop with it)", exc_info=True)
            self.exit_code = EX_SOFTWARE
        finally:
            self.commit_log.flush()
            self.store.close_writer_role()
            for group in self.sockets:
                for sock in group:
                    sock.close()
        stats = self.store.committer.stats
        log.info("mailwright stopped: %s", stats.summary())
        return self.exit_code

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _timeout(self) -> float | None:
        now = time.monotonic()
        times = list(self.restarts.values())
        if self.stopping:
            times.append(self.stop_deadline)
        log_due = self.commit_log.due()
        if log_due is not None:
            times.append(log_due)
        if self.cert_watch.due != math.inf:
            times.append(self.cert_watch.due)
        return max(0.0, min(times) - now) if times else None

    def _turn(self) -> None:
        batch: list[Job] = []
        timeout = self._timeout()
        for fd, _ in self.poll.poll(None if timeout is None else math.ceil(timeout * 1000)):
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
                continue
            handle = self.channels.get(fd)
            if handle is not None:
                self._read(handle, batch)
        if batch and self.last_batch > 1:
            # A signal wakes this poll too; it is handled in the next turn, after this commit.
            for fd, _ in self.poll.poll(GATHER_MS):
                handle = self.channels.get(fd)
                if handle is not None:
                    self._read(handle, batch)
        self.last_batch = len(batch)
        outcomes = self.store.committer.commit(batch) if batch else []
        for job, queue_id, error in outcomes:
            handle, seq = job.ticket
            handle.outbox.append(
                (wire.RESULT, seq, queue_id, None if error is None else wire.error_name(error.reply))
            )
        for handle in self.workers.values():  # _send never adds or removes workers
            if handle.outbox:
                self._send(handle)
        now = time.monotonic()
        self.commit_log.add(outcomes, now)
        self.commit_log.flush_due(now)
        self._handle_signals()
        self._restart_due()
        if now >= self.cert_watch.due:
            self.cert_watch.check()
        if self.stopping and self.workers and time.monotonic() >= self.stop_deadline:
            for pid in self.workers:
                log.error(
                    "worker pid %d did not stop within %g s (limits.stop_timeout): killing it",
                    pid,
                    self.config.limits.stop_timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.stop_deadline = time.monotonic() + 5

    def _read(self, handle: WorkerHandle, batch: list[Job]) -> None:
        channel = handle.channel
        assert channel is not None
        try:
            data = channel.recv(_READ, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except ConnectionResetError:
            # The worker died with our answers unread (killed): an end like EOF, and its death
            # is reported once, by the reaper, not a second time as a channel error.
            data = b""
        except OSError as exc:
            log.error("channel of worker pid %d failed: %s", handle.pid, exc)
            data = b""
        if not data:
            self._drop_channel(handle)
            return
        try:
            records = handle.reader.feed(data)
        except wire.FrameError as exc:
            log.error("worker pid %d sent garbage (%s): stopping it", handle.pid, exc)
            self._drop_channel(handle)
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)
            return
        spool = self.store.spool
        for record in records:
            kind = record[0]
            if kind == wire.COMMIT:
                _, seq, envelope, size, inline, temp_name = record
                body = HandedOverBody(spool, size, inline, temp_name)
                batch.append(Job(body, wire.unpack_envelope(envelope), (handle, seq)))
            elif kind in (wire.AUTH_FAILED, wire.AUTH_OK):
                for other in self.workers.values():
                    if other is not handle and other.channel is not None:
                        other.outbox.append(record)
            elif kind == wire.READY:
                self._ready(handle)

    def _ready(self, handle: WorkerHandle) -> None:
        handle.ready = True
        if handle.reload_due:
            handle.reload_due = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGHUP)
        if (
            not self.announced
            and len(self.workers) == self.count
            and all(w.ready for w in self.workers.values())
        ):
            self.announced = True
            log.info(
                "mailwright ready: hostname %s, queue %s, %d worker processes, %s",
                self.config.hostname,
                self.config.queue.directory,
                self.count,
                build_kind(),
            )

    def _send(self, handle: WorkerHandle) -> None:
        records, handle.outbox = handle.outbox, []
        if handle.channel is None:
            return
        try:
            handle.channel.sendall(wire.encode(records))
        except OSError as exc:
            # A worker that stopped reading for _SEND_TIMEOUT is wedged; one that is gone is gone.
            log.error("cannot answer worker pid %d (%s): stopping it", handle.pid, exc)
            self._drop_channel(handle)
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)

    def watch(self, handle: WorkerHandle) -> None:
        """Read `handle`'s channel from the next turn on."""
        assert handle.channel is not None
        self.poll.register(handle.channel.fileno(), select.POLLIN)
        self.channels[handle.channel.fileno()] = handle

    def _drop_channel(self, handle: WorkerHandle) -> None:
        if handle.channel is not None:
            fd = handle.channel.fileno()
            self.poll.unregister(fd)
            del self.channels[fd]
            handle.channel.close()
            handle.channel = None

    def _announce_certificate(self) -> None:
        """What the workers will serve after a reload, said once here rather than by each of them;
        a file they cannot load is reported by each worker, which keeps its old certificate."""
        try:
            server_context(self.cert, self.key)
            self.cert_watch.announce(self.cert)
        except TLSConfigError:
            pass

    def _handle_signals(self) -> None:
        signals, self.signals = self.signals, []
        for signum in signals:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                log.info("reloading the TLS certificate in every worker")
                self._announce_certificate()
                for handle in self.workers.values():
                    if handle.ready:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(handle.pid, signal.SIGHUP)
                    else:  # still starting: it reloads once it says READY
                        handle.reload_due = True
            elif not self.stopping:
                log.info("shutting down")
                self.stopping = True
                self.stop_deadline = time.monotonic() + self.config.limits.stop_timeout
                self.restarts.clear()
                self._signal_workers(signal.SIGTERM)
            else:
                # An impatient operator: say the signal was seen and what the stop waits for.
                log.info(
                    "already shutting down: waiting for %d worker(s) to answer their sessions"
                    " (killed in %.0f s at the latest)",
                    len(self.workers),
                    max(0.0, self.stop_deadline - time.monotonic()),
                )

    def _signal_workers(self, signum: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            handle = self.workers.pop(pid, None)
            if handle is None:
                continue
            self._drop_channel(handle)
            self.table.clear(handle.slot)
            # Bodies it was still receiving; handed-over ones are renamed or already settled.
            with contextlib.suppress(OSError):
                self.store.spool.remove_temps_of(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code not in (0, -signal.SIGTERM):  # SIGTERM before its loop ran: nothing lost
                    log.warning("worker %d (pid %d) ended with status %d", handle.slot, pid, code)
                continue
            age = time.monotonic() - handle.started
            pause = RESTART_PAUSE if age < YOUNG else 0.0
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            log.error(
                "worker %d (pid %d) %s after %.1f s; starting a new one%s",
                handle.slot,
                pid,
                how,
                age,
                f" in {pause:.0f} s" if pause else "",
            )
            self.restarts[handle.slot] = time.monotonic() + pause

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self.restarts.items()):
            if when <= now and not self.stopping:
                del self.restarts[slot]
                try:
                    self.spawn(slot)
                except OSError as exc:  # out of processes or memory: try again later
                    log.error("cannot start worker %d: %s; trying again in %.0f s", slot, exc, RESTART_PAUSE)
                    self.restarts[slot] = now + RESTART_PAUSE


def run_master(config: Config, workers: int, sockets: list[list[socket.socket]] | None = None) -> int:
    """Start-up errors propagate (the caller turns them into one line with the fix). `sockets`: the
    listeners, when the caller bound them before giving up root (`app.run`)."""
    master = Master(config, workers)
    master.prepare(sockets)
    return master.run()
