"""The configuration schema: frozen dataclasses whose defaults run out of the box.

Every setting has a default that gives a working server for a first run from the quickstart:
listeners bind 127.0.0.1 only (a configuration file sets the real addresses), a self-signed
certificate is generated under ``state_dir/tls`` when no certificate is configured, and the user
database and queue live under ``state_dir``.  As root the standard ports are used (25, 587, 465,
plus 2525); otherwise unprivileged ports stand in for them (2500, 5870, 4650, 2525) and
`unprivileged_note` gives the start-up log line that says so.

Invariants:
- Instances are immutable; `mailwright.config.loader` is the only place that builds them from
  user input and it validates every value first (ports 1..65535, positive limits, known roles
  and SASL mechanisms, TLS certificate and key given together).
- Paths held here are absolute once they come out of the loader.

RFC sections: RFC 5321 4.5.3.1.8 (at least 100 recipients must be accepted) and 4.5.3.2
(timeouts: 5 minutes per command on the server side, 3 minutes per data block on the client
side) shape the limit defaults; RFC 6409 (submission, port 587) and RFC 8314 (implicit TLS
submission, port 465) give the listener roles.

`check_warnings` lists settings that are valid but probably not what the operator wants
(``config check`` prints them; the server may log them at start-up).

Not responsible for: reading the configuration file or validating user input (the loader
does that), binding sockets, or generating certificates.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ListenerRole = Literal["submission", "submissions", "mx"]
ROLES: tuple[ListenerRole, ...] = ("submission", "submissions", "mx")
STANDARD_PORTS: Mapping[ListenerRole, int] = {"mx": 25, "submission": 587, "submissions": 465}
# PLAIN and LOGIN work over any store; CRAM-MD5 needs a plaintext-equivalent secret per user.
KNOWN_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "CRAM-MD5")
STATE_DIR_ENV = "MAILWRIGHT_STATE_DIR"


def is_ip_address(address: str) -> bool:
    """Whether `address` is an IP address as written, rather than a host name to look up."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ListenerConfig:
    """One listening socket and the role it plays."""

    role: ListenerRole
    address: str = "127.0.0.1"
    port: int = 587
    # Honoured only on loopback addresses: elsewhere AUTH waits for TLS whatever this says.
    allow_plaintext_auth: bool = False

    @property
    def implicit_tls(self) -> bool:
        """True when TLS starts at connect time (RFC 8314) rather than with STARTTLS."""
        return self.role == "submissions"

    @property
    def is_loopback(self) -> bool:
        if self.address == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False

    @property
    def plaintext_auth_allowed(self) -> bool:
        """Whether AUTH may be offered before TLS on this listener."""
        return self.allow_plaintext_auth and self.is_loopback

    def host_port(self) -> str:
        """The address and port as in a URL (RFC 3986), "192.0.2.1:25" or "[2001:db8::1]:25": an
        IPv6 address in brackets, or its last group would read as the port."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def describe(self) -> str:
        tls = "implicit TLS" if self.implicit_tls else "STARTTLS"
        return f"{self.role} {self.host_port()} ({tls})"


@dataclass(frozen=True)
class TLSConfig:
    """Certificate chain and key (PEM).  None for both: a self-signed pair under state_dir/tls."""

    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class AuthConfig:
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    users_db: Path | None = None  # None: state_dir / "users.db" (see Config.users_db)
    # An authenticated user may only use the sender addresses it owns (UserStore.owns_sender).
    sender_must_be_owned: bool = True
    max_failures: int = 5
    failure_window: float = 600.0
    lockout: float = 900.0


@dataclass(frozen=True)
class LimitsConfig:
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    # An IPv6 client is counted under max_connections_per_ip, and locked out after failed AUTH, by
    # its network of this many bits: one host usually holds a whole /64 (limits.connections).
    ipv6_prefix: int = 64
    # Server side idle limit per command: RFC 5321 4.5.3.2.7 asks for at least 5 minutes.
    command_timeout: float = 300.0
    # Idle limit while receiving DATA/BDAT content: a client may pause 3 minutes per block.
    data_timeout: float = 180.0
    # On a stop, how long the master waits for its workers to answer their sessions and exit
    # before it kills the ones left (a worker stuck on a hung disk, or stopped by a debugger).
    stop_timeout: float = 30.0


@dataclass(frozen=True)
class QueueConfig:
    directory: Path
    # Refuse new mail (452 4.3.1) while less than this is free on the queue's file system,
    # like Postfix's queue_minfree: a queue that fills its disk to the last byte cannot
    # even checkpoint its own log.
    min_free: int = 64 * 1024 * 1024


# On a stop, the longest a process waits for its sessions' work in flight (a commit, a password
# check and its failure delay) to be answered before it closes them (app.Server.stop).
BUSY_WAIT = 5.0

MAX_WORKERS = 256
MAX_AUTO_WORKERS = 16  # "one per core" stops here: the single queue writer becomes the limit


@dataclass(frozen=True)
class Config:
    hostname: str
    state_dir: Path
    local_domains: tuple[str, ...]
    listeners: tuple[ListenerConfig, ...]
    queue: QueueConfig
    relay_domains: tuple[str, ...] = ()
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # SMTP worker processes; 0: one per CPU core; 1: a single process (the queue writer is then a
    # thread of it).  With two or more, a master process owns the queue (see prefork.master).
    workers: int = 0
    # The unprivileged account the server runs as once started as root (see `privileges`); None:
    # it stays the user it was started as (as root, with a warning).
    user: str | None = None
    source: Path | None = None

    def worker_count(self, cpus: int | None = None) -> int:
        """The number of worker processes `workers` means on this machine (1: no master)."""
        if self.workers:
            return self.workers
        return max(1, min(cpus if cpus is not None else (os.cpu_count() or 1), MAX_AUTO_WORKERS))

    @property
    def users_db(self) -> Path:
        return self.auth.users_db if self.auth.users_db is not None else self.state_dir / "users.db"

    @property
    def tls_dir(self) -> Path:
        """Where a self-signed certificate is generated when none is configured."""
        return self.state_dir / "tls"


def running_as_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return bool(geteuid is not None and geteuid() == 0)


def default_listeners(is_root: bool) -> tuple[ListenerConfig, ...]:
    """The listeners used when the configuration names none.

    2525 is the de-facto alternative submission port (many networks block 25 and 587 outbound)
    and needs no privilege, so it is in both sets.
    """
    if is_root:
        return (
            ListenerConfig("mx", port=25),
            ListenerConfig("submission", port=587),
            ListenerConfig("submissions", port=465),
            ListenerConfig("submission", port=2525),
        )
    return (
        ListenerConfig("mx", port=2500),
        ListenerConfig("submission", port=5870),
        ListenerConfig("submissions", port=4650),
        ListenerConfig("submission", port=2525),
    )


def default_state_dir(env: Mapping[str, str] = os.environ, *, is_root: bool | None = None) -> Path:
    """MAILWRIGHT_STATE_DIR, else /var/lib/mailwright as root, else the XDG state directory."""
    override = env.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser().absolute()
    if running_as_root() if is_root is None else is_root:
        return Path("/var/lib/mailwright")
    xdg = env.get("XDG_STATE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "mailwright"
    home = env.get("HOME")
    base = Path(home) if home else Path.home()
    return base / ".local" / "state" / "mailwright"


def default_hostname() -> str:
    return socket.getfqdn() or "localhost"


def default_config(env: Mapping[str, str] = os.environ, *, is_root: bool | None = None) -> Config:
    """The configuration used when no file is given."""
    root = running_as_root() if is_root is None else is_root
    state_dir = default_state_dir(env, is_root=root)
    hostname = default_hostname()
    return Config(
        hostname=hostname,
        state_dir=state_dir,
        local_domains=(hostname.lower(),),
        listeners=default_listeners(root),
        queue=QueueConfig(state_dir / "queue"),
        auth=AuthConfig(users_db=state_dir / "users.db"),
    )


def unprivileged_note(config: Config) -> str | None:
    """The start-up log line explaining the stand-in ports, or None when they are not in use."""
    if config.listeners != default_listeners(False):
        return None
    ports = ", ".join(f"{lc.role} {lc.port} (for {STANDARD_PORTS[lc.role]})" for lc in config.listeners[:3])
    return (
        f"not running as root: listening on unprivileged ports {ports} and submission 2525; "
        "to use the standard ports run as root (or grant CAP_NET_BIND_SERVICE) and list them "
        "under [[listeners]] in the configuration file"
    )


def root_note(config: Config, *, is_root: bool | None = None) -> str | None:
    """The warning for a server that stays root while other hosts can reach it, or None.

    Started as root without `user`, every SMTP session runs as root. Listening on loopback only
    (the quickstart's default, the test suite's servers) only this machine's users reach the
    parsers, and the server says so at INFO; a listener on any other address is a WARNING.
    """
    root = running_as_root() if is_root is None else is_root
    if not root or config.user is not None:
        return None
    exposed = [lc.describe() for lc in config.listeners if not lc.is_loopback]
    if not exposed:
        return None
    return (
        f"user is not set: started as root, the server stays root, so its SMTP sessions parse what "
        f"any client sends with every privilege, and other hosts can connect to {', '.join(exposed)} "
        "(fix: create an unprivileged user, e.g. useradd --system --no-create-home --shell "
        '/usr/sbin/nologin mailwright, and set user = "mailwright": the server then binds its ports '
        "as root and runs as that user)"
    )


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip())
    except (OSError, ValueError):
        return 1024


def check_warnings(config: Config, *, is_root: bool | None = None) -> list[str]:
    """Things that are allowed but probably not what the operator wants."""
    root = running_as_root() if is_root is None else is_root
    out: list[str] = []
    if "CRAM-MD5" in config.auth.mechanisms:
        out.append(
            "auth.mechanisms includes CRAM-MD5: the user database must keep a plaintext-equivalent "
            "secret for every CRAM-MD5 user (user add --cram-md5); whoever reads users.db can log in as them"
        )
    note = root_note(config, is_root=root)
    if note:
        out.append(note)
    lowest = _unprivileged_port_start()
    for i, lc in enumerate(config.listeners):
        if lc.allow_plaintext_auth and not lc.is_loopback:
            out.append(
                f"listeners[{i}] ({lc.describe()}): allow_plaintext_auth is ignored because {lc.address} "
                "is not a loopback address; AUTH is offered there only over TLS"
            )
        if not root and lc.port < lowest:
            out.append(
                f"listeners[{i}] ({lc.describe()}): port {lc.port} is privileged and mailwright is not "
                "running as root; binding fails unless it has CAP_NET_BIND_SERVICE"
            )
    if not config.auth.mechanisms and any(lc.role != "mx" for lc in config.listeners):
        out.append("auth.mechanisms is empty: nobody can authenticate on the submission listeners")
    limits = config.limits
    if limits.max_recipients < 100:
        out.append(
            f"limits.max_recipients = {limits.max_recipients}: RFC 5321 4.5.3.1.8 asks servers to "
            "accept at least 100 recipients per message"
        )
    if limits.command_timeout < 300:
        out.append(
            f"limits.command_timeout = {limits.command_timeout}: below the 5 minutes RFC 5321 "
            "4.5.3.2.7 asks of servers; slow clients may be cut off"
        )
    if limits.data_timeout < 180:
        out.append(
            f"limits.data_timeout = {limits.data_timeout}: below the 3 minutes per data block a client "
            "may take (RFC 5321 4.5.3.2.6)"
        )
    if limits.stop_timeout < BUSY_WAIT and config.worker_count() > 1:
        out.append(
            f"limits.stop_timeout = {limits.stop_timeout}: below the {BUSY_WAIT:.0f} s a worker may take "
            "on a stop to answer sessions busy with a commit or a password check; such a worker is killed "
            "before it has answered them, and their clients may send the message again"
        )
    if limits.max_connections_per_ip > limits.max_connections:
        out.append("limits.max_connections_per_ip is larger than limits.max_connections and has no effect")
    note = unprivileged_note(config)
    if note is not None:
        out.append(note)
    return out
