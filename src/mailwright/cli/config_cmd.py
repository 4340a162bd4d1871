"""`mailwright config check` and `mailwright config show`.

``config check [--config PATH]`` validates a configuration file (or the built-in defaults), binds
each listener's address on port 0 (a name that does not resolve, or an address this machine does
not have, fails start-up; the configured port is left alone, a running server may hold it), and
prints ``OK: <listeners>``, the served certificate, and any warnings (exit 0), among them the
certificate's problems (`net.cert_checks`) and an open-file limit that the server could not raise
to what ``limits.max_connections`` needs; or every problem as
``file:line: key = value: what is wrong (fix: ...)``, or a certificate and key that do not load
(exit 2).  ``config show`` prints the effective configuration, defaults filled in, as TOML that
`load` reads back unchanged.

Invariants: handlers return an exit code and never let a traceback reach the user for a
configuration problem; output for people goes to stdout, problems to stderr.

Not responsible for: parsing and validation (`mailwright.config.loader`), or the top-level
argument parser and its global options (`mailwright.cli.main`).
"""

from __future__ import annotations

import argparse
import datetime
import errno
import os
import socket
import sys
from pathlib import Path

from mailwright.config.loader import ConfigError, load, toml_value, where_in_file
from mailwright.config.schema import Config, QueueConfig, check_warnings, running_as_root
from mailwright.limits.open_files import fit_open_files
from mailwright.net.cert_checks import certificate_problems
from mailwright.net.tls import TLSConfigError, describe_certificate, server_context
from mailwright.privileges import RunAs, code_directories, drop

EXIT_OK = 0
EXIT_CONFIG = 2


def render(config: Config) -> str:
    """The configuration as TOML, every value explicit."""
    out = [
        f"# effective configuration{f' from {config.source}' if config.source else ' (built-in defaults)'}",
        f"hostname = {toml_value(config.hostname)}",
        f"state_dir = {toml_value(config.state_dir)}",
        f"local_domains = {toml_value(config.local_domains)}",
        f"relay_domains = {toml_value(config.relay_domains)}",
        f"workers = {config.workers}",
    ]
    if config.user is not None:
        out.append(f"user = {toml_value(config.user)}")
    for lc in config.listeners:
        out += [
            "",
            "[[listeners]]",
            f"role = {toml_value(lc.role)}",
            f"address = {toml_value(lc.address)}",
            f"port = {lc.port}",
            f"allow_plaintext_auth = {toml_value(lc.allow_plaintext_auth)}",
        ]
    out += ["", "[tls]"]
    if config.tls.cert is None or config.tls.key is None:
        out.append(f"# no cert/key: a self-signed certificate is generated under {config.tls_dir}")
    else:
        out += [f"cert = {toml_value(config.tls.cert)}", f"key = {toml_value(config.tls.key)}"]
    auth = config.auth
    out += [
        "",
        "[auth]",
        f"mechanisms = {toml_value(auth.mechanisms)}",
        f"users_db = {toml_value(config.users_db)}",
        f"sender_must_be_owned = {toml_value(auth.sender_must_be_owned)}",
        f"max_failures = {auth.max_failures}",
        f"failure_window = {toml_value(auth.failure_window)}",
        f"lockout = {toml_value(auth.lockout)}",
    ]
    limits = config.limits
    out += [
        "",
        "[limits]",
        f"max_message_size = {limits.max_message_size}",
        f"max_recipients = {limits.max_recipients}",
        f"max_connections = {limits.max_connections}",
        f"max_connections_per_ip = {limits.max_connections_per_ip}",
        f"ipv6_prefix = {limits.ipv6_prefix}",
        f"command_timeout = {toml_value(limits.command_timeout)}",
        f"data_timeout = {toml_value(limits.data_timeout)}",
        f"stop_timeout = {toml_value(limits.stop_timeout)}",
        "",
        "[queue]",
        f"directory = {toml_value(config.queue.directory)}",
        f"min_free = {config.queue.min_free}",
    ]
    return "\n".join(out) + "\n"


def _load(args: argparse.Namespace) -> Config | None:
    path: Path | None = getattr(args, "config", None)
    try:
        return load(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _check_as(user: str, cert: Path | None, key: Path | None) -> None:
    """What the server does right after giving up root for `user`, in a child process that gives
    it up the same way (`privileges.drop`), so file permissions, groups and ACLs all count: reach
    its own code, and load the certificate and key. Raises what the server would stop with."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        said = ""
        try:
            os.close(read_end)
            drop(RunAs.lookup(user), code_directories())
            if cert is not None and key is not None:
                server_context(cert, key)
        except TLSConfigError as exc:
            said = f"tls\t{exc}"
        except BaseException as exc:  # the child must never return into the parent's code
            said = f"user\t{exc}"
        finally:
            os.write(write_end, said.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        kind, _, said = f.read().decode(errors="replace").partition("\t")
    os.waitpid(pid, 0)
    if kind == "tls":
        raise TLSConfigError(said)
    if kind:
        raise ConfigError([f"user = {toml_value(user)}: {said}"])


def _address_problems(config: Config) -> list[str]:
    """Listener addresses the server could not bind on this machine: a host name that does not
    resolve, or an address no interface has (EADDRNOTAVAIL at start-up). Each address is bound
    on port 0, which finds that without touching the configured port (a running server may hold it)."""
    out: list[str] = []
    for i, lc in enumerate(config.listeners):
        where = where_in_file(config.source, ("listeners", str(i), "address"))
        shown = f"{where} = {toml_value(lc.address)}"
        try:
            infos = socket.getaddrinfo(lc.address, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            out.append(
                f"{shown}: does not resolve here ({reason}), and start-up binds what it resolves to "
                '(fix: write an IP address of this machine, e.g. address = "0.0.0.0", or a host name that '
                "resolves to one)"
            )
            continue
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            with socket.socket(family, kind, proto) as sock:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(addr)
                except OSError as exc:
                    if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                        continue
                    out.append(
                        f"{shown}: {addr[0]} is not an address of this machine ({exc.strerror}), so "
                        "the server cannot listen on it (fix: write an address it has, which ip -brief "
                        'address lists, or "0.0.0.0" or "::" for every address)'
                    )
    return out


def run_check(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    problems = _address_problems(config)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    origin = str(config.source) if config.source else "built-in defaults"
    # The certificate and key are loaded as the server will load them (as `nginx -t` does), so a
    # key of another certificate or a file that is no PEM is found before a start fails on it.
    # Started as root with `user` set, the server reads them as that user: so does the check.
    tls, facts = config.tls, None
    try:
        if config.user is not None and running_as_root():
            _check_as(config.user, tls.cert, tls.key)
        if tls.cert is not None and tls.key is not None:
            server_context(tls.cert, tls.key)
            facts = describe_certificate(tls.cert)
    except TLSConfigError as exc:
        print(f"{origin}: [tls]: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"{origin}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    listeners = ", ".join(lc.describe() for lc in config.listeners)
    print(f"OK: {origin}: {listeners}")
    if facts is not None:
        print(f"TLS certificate: {facts}")
        now = datetime.datetime.now(datetime.UTC)
        for problem in certificate_problems(facts, config.hostname, now):
            print(f"warning: {problem}")
    else:
        print(
            "warning: no [tls] cert and key: the server serves a self-signed certificate it makes "
            f"under {config.state_dir / 'tls'}, which clients that verify certificates (submission "
            "clients by default) refuse (fix: set [tls] cert and key, e.g. to Let's Encrypt's "
            "fullchain.pem and privkey.pem)"
        )
    for warning in check_warnings(config):
        print(f"warning: {warning}")
    # What the server does at start-up, here in the check's own process: it inherits the shell's
    # limits, as a server started from this shell would (a service manager sets its own).
    budget = fit_open_files(config.limits.max_connections, config.worker_count())
    if not budget.fits:
        who = "a server started from this shell"
        print(f"warning: {budget.shortfall(config.limits.max_connections, who)}")
    room = _queue_room(config)
    if room is not None:
        print(f"warning: {room}")
    return EXIT_OK


def _queue_room(config: Config) -> str | None:
    """A queue.min_free that refuses mail at once: more than the queue's file system has free now
    (452 4.3.1 until space is freed) or holds at all (for ever)."""
    place = config.queue.directory
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        fs = os.statvfs(place)
    except OSError:
        return None
    size, free, want = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize, config.queue.min_free
    if want >= size:
        return (
            f"queue.min_free = {want} is more than the file system of {place} holds ({size} bytes): every "
            f"message gets 452 4.3.1 (fix: set it to what must stay free, e.g. {QueueConfig.min_free}, "
            "the default)"
        )
    if want > free:
        return (
            f"queue.min_free = {want} is more than is free on the file system of {place} now ({free} "
            "bytes): new mail gets 452 4.3.1 until that much is free (fix: free space, or lower min_free)"
        )
    return None


def run_show(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    sys.stdout.write(render(config))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="check or show the configuration")
    commands = parser.add_subparsers(dest="config_command", metavar="{check,show}")

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG

    parser.set_defaults(func=usage)
    check = commands.add_parser("check", help="validate the configuration file and print a summary")
    show = commands.add_parser("show", help="print the effective configuration as TOML")
    for sub, handler in ((check, run_check), (show, run_show)):
        sub.add_argument(
            "--config", type=Path, default=None, metavar="PATH", help="configuration file (TOML)"
        )
        sub.set_defaults(func=handler)
