"""Load and validate the TOML configuration file into a `Config`.

Every key is optional; a missing key takes the default from `mailwright.config.schema`.  A full
example (all values shown are the defaults, except where a comment says otherwise)::

    hostname = "mail.example.org"        # default: the machine's fully qualified name
    state_dir = "/var/lib/mailwright"    # default: $MAILWRIGHT_STATE_DIR, else /var/lib/mailwright
                                         # as root, else ~/.local/state/mailwright
    local_domains = ["example.org"]      # final destination; default: [hostname]
    relay_domains = ["example.net"]      # accepted from anyone and relayed onward; default: []
    workers = 0                          # SMTP worker processes: 0 = one per CPU core (at most
                                         # 16), 1 = a single process
    user = "mailwright"                  # started as root: bind the ports, then run as this user
                                         # (must exist; not root); the key must be readable by it.
                                         # Default: none, i.e. stay who started it (as root it says
                                         # so: a WARNING once a listener is not on loopback)

    [[listeners]]                        # default: mx, submission, submissions, submission 2525
    role = "mx"                          # "mx" (port 25), "submission" (587, STARTTLS),
    address = "0.0.0.0"                  # "submissions" (465, implicit TLS); default 127.0.0.1
    port = 25                            # default: the standard port of the role

    [[listeners]]                        # IPv6: a listener of its own ("::" takes IPv6 only,
    role = "mx"                          # so it shares port 25 with "0.0.0.0" above)
    address = "::"
    port = 25

    [[listeners]]
    role = "submission"
    address = "127.0.0.1"
    port = 587
    allow_plaintext_auth = true          # AUTH before STARTTLS; honoured on loopback only

    [tls]                                # both or neither; neither: self-signed under state_dir/tls
    cert = "/etc/mailwright/fullchain.pem"
    key = "/etc/mailwright/privkey.pem"

    [auth]
    mechanisms = ["PLAIN", "LOGIN"]      # "CRAM-MD5" is allowed but needs plaintext-equivalent
                                         # secrets in the user database (user add --cram-md5)
    users_db = "/var/lib/mailwright/users.db"   # default: state_dir/users.db
    sender_must_be_owned = true          # authenticated users send only as addresses they own
    max_failures = 5                     # failed AUTH attempts per client IP within ...
    failure_window = 600.0               # ... this many seconds lock the IP out for ...
    lockout = 900.0                      # ... this many seconds

    [limits]
    max_message_size = 52428800          # bytes (50 MiB), announced with EHLO SIZE
    max_recipients = 100                 # per transaction; RFC 5321 4.5.3.1.8 asks for >= 100
    max_connections = 1000
    max_connections_per_ip = 50
    ipv6_prefix = 64                     # an IPv6 client counts, for max_connections_per_ip and the
                                         # AUTH lock-out, by its network of this many bits (32-128)
    command_timeout = 300.0              # seconds idle per command (RFC 5321 4.5.3.2.7)
    data_timeout = 180.0                 # seconds idle while receiving message content
    stop_timeout = 30.0                  # seconds a stop waits for the workers before killing
                                         # the ones left (no acknowledged message is lost)

    [queue]
    directory = "/var/lib/mailwright/queue"     # default: state_dir/queue
    min_free = 67108864                         # bytes kept free; below it new mail gets 452 4.3.1

The configuration is a file or a pipe (`--config <(...)`) of at most 1 MiB; a directory or a
device is refused before anything is read from it.
Relative paths are relative to the directory of the configuration file; "~" means $HOME.
hostname and the domains follow Postfix's valid_hostname (letters, digits, "-" inside a label, "_";
no IP address, no final dot in hostname) and IDNA 2008 for non-ASCII names; each domain is
matched exactly ("*.example.org" and ".example.org" are refused). tls.cert and tls.key must be
regular files (a FIFO or device would hang the start).
A state_dir, queue.directory or auth.users_db set in the file may be missing (it is created at
start-up), but must not be, or lie under, an existing file; auth.users_db must not be a directory.
$MAILWRIGHT_STATE_DIR replaces the default state directory; a state_dir in the file wins over it.
Two listeners whose binds would fail against each other are a problem here, not at start-up: the
same address and port, a wildcard beside an address of its family, or a host name (looked up only
then, as start-up binds every address it resolves to) beside either.

Invariants: `load` either returns a fully validated `Config` or raises `ConfigError`; every
problem found is reported (not only the first), each as
``file:line: key = value: what is wrong (fix: what to write instead)``, the value as TOML (a date
as 1979-05-27); a key known in another table is told where it belongs, not to be removed.
Line numbers come from scanning the text for ``key =`` lines inside their ``[table]`` /
``[[listeners]]`` entry; best effort, falling back to the enclosing table's line.

Not responsible for: the TOML grammar (tomllib), rendering a Config back to TOML
(`mailwright.cli.config_cmd`), or acting on the settings.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import math
import os
import re
import socket
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from mailwright.config import schema
from mailwright.config.schema import (
    AuthConfig,
    Config,
    LimitsConfig,
    ListenerConfig,
    QueueConfig,
    TLSConfig,
    is_ip_address,
)
from mailwright.privileges import PrivilegeError, RunAs
from mailwright.protocol.address import Address, AddressError, comparable_domain

_MISSING: Any = object()


class ConfigError(Exception):
    """One or more problems in a configuration; `str()` gives one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def toml_value(value: object) -> str:
    """Render a value as TOML (used in messages and by `config show`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04X}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, datetime.date | datetime.time):
        # As the file has it (1979-05-27, 07:32:00), not as Python's repr.
        return value.isoformat()
    return repr(value)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "a whole number",
        float: "a decimal number",
        str: "a string",
        list: "a list",
        dict: "a table",
        datetime.date: "a date",
        datetime.datetime: "a date and time",
        datetime.time: "a time of day",
    }.get(type(value), type(value).__name__)


_HEADER = re.compile(r"^\[(\[)?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(
    r"^((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"))*)\s*="
)


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


def _index_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map key paths such as ("listeners", "1", "port") to 1-based line numbers."""
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    arrays: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header is not None:
            name = _split_key(header.group(2))
            if header.group(1):
                index = arrays.get(name, -1) + 1
                arrays[name] = index
                table = (*name, str(index))
                found.setdefault(name, number)  # "[[listener]]", misspelt, is reported by its name
            else:
                table = name
            found.setdefault(table, number)
            continue
        keyline = _KEYLINE.match(line)
        if keyline is not None:
            found.setdefault((*table, *_split_key(keyline.group(1))), number)
    return found


def where_in_file(path: Path | None, where: tuple[str, ...]) -> str:
    """The ``file:line: key`` start of a message about setting `where` of a loaded configuration
    (for checks made after `load`, such as `config check`'s); the file is read again."""
    if path is None:
        return _dotted(where)
    try:
        lines = _index_lines(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeError):
        lines = {}
    key = where
    while key and key not in lines:
        key = key[:-1]
    return f"{path}:{lines[key]}: {_dotted(where)}" if key else f"{path}: {_dotted(where)}"


class _Reader:
    """Validates values one at a time, recording problems instead of stopping at the first."""

    def __init__(self, path: Path | None, text: str, env: Mapping[str, str]) -> None:
        self.file = path
        self.lines = _index_lines(text)
        self.env = env
        self.base = path.parent if path is not None else Path.cwd()
        self.problems: list[str] = []

    def line_of(self, where: tuple[str, ...]) -> int | None:
        while where:
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return None

    def problem(self, where: tuple[str, ...], message: str, *, value: Any = _MISSING, fix: str) -> None:
        prefix = ""
        if self.file is not None:
            line = self.line_of(where)
            prefix = f"{self.file}:{line}: " if line is not None else f"{self.file}: "
        shown = _dotted(where) if where else "(top level)"
        if value is not _MISSING:
            shown += f" = {toml_value(value)}"
        self.problems.append(f"{prefix}{shown}: {message} (fix: {fix})")

    def table(self, data: Mapping[str, Any], where: tuple[str, ...], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key in allowed:
                continue
            home = _home_of(key)
            if home is not None:
                # A known key in the wrong place: mostly one appended at the end of the file, which
                # TOML puts in the last [table] above it. "Remove it" would lose the setting.
                here = "a top-level key" if not where else f"a key of {_table_name(where)}"
                fix = f"{key} belongs {home}: move it there"
                if where:
                    fix += " (in TOML every key below a [table] header is part of that table)"
                self.problem((*where, key), f"is not {here}", fix=fix)
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            fix = f"did you mean {close[0]!r}?" if close else f"remove it; known keys: {', '.join(allowed)}"
            self.problem((*where, key), "unknown key", fix=fix)

    def sub_table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(
                (key,), f"must be a table, not {_type_name(value)}", value=value, fix=f"write [{key}]"
            )
            return {}
        return value

    def integer(
        self,
        data: Mapping[str, Any],
        where: tuple[str, ...],
        default: int,
        low: int,
        high: int,
        *,
        fix: str | None = None,
    ) -> int:
        value = data.get(where[-1], _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            fix = f"write it without quotes: {where[-1]} = {value.strip()}"
        elif fix is None:
            fix = f"set it to {default}, the default"
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"must be a whole number, not {_type_name(value)}", value=value, fix=fix)
            return default
        if not low <= value <= high:
            # ">= 1" alone would read as wrong for 2**63, which is >= 1 and still too large.
            rng = f">= {low}" if high >= 2**62 and value < low else f"from {low} to {high}"
            self.problem(where, f"must be a whole number {rng}", value=value, fix=fix)
            return default
        return value

    def seconds(
        self, data: Mapping[str, Any], where: tuple[str, ...], default: float, *, zero_ok: bool
    ) -> float:
        value = data.get(where[-1], _MISSING)
        if value is _MISSING:
            return default
        fix = f"set it to {toml_value(default)}, the default"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(where, f"must be a number of seconds, not {_type_name(value)}", value=value, fix=fix)
            return default
        # A year is a generous ceiling; it also keeps huge TOML integers out of float().
        if not (0 <= value <= 366 * 86400 and math.isfinite(value)) or (value == 0 and not zero_ok):
            rng = ">= 0" if zero_ok else "> 0"
            self.problem(where, f"must be a number of seconds {rng} and at most a year", value=value, fix=fix)
            return default
        return float(value)

    def boolean(self, data: Mapping[str, Any], where: tuple[str, ...], default: bool) -> bool:
        value = data.get(where[-1], _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            fix = f"write {where[-1]} = true or {where[-1]} = false (no quotes)"
            self.problem(where, f"must be true or false, not {_type_name(value)}", value=value, fix=fix)
            return default
        return value

    def string(self, data: Mapping[str, Any], where: tuple[str, ...], default: str, example: str) -> str:
        value = data.get(where[-1], _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value.strip():
            what = "an empty string" if isinstance(value, str) else _type_name(value)
            self.problem(where, f"must be a non-empty string, not {what}", value=value, fix=example)
            return default
        return value

    def path(self, data: Mapping[str, Any], where: tuple[str, ...], example: str) -> Path | None:
        value = data.get(where[-1], _MISSING)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            if not isinstance(value, str):
                what = f"not {_type_name(value)}"
            else:
                what = "not an empty string" if not value.strip() else "without NUL characters"
            self.problem(where, f"must be a file system path in quotes, {what}", value=value, fix=example)
            return None
        if value == "~" or value.startswith("~/"):
            home = self.env.get("HOME") or str(Path.home())
            return Path(home) / value[2:]
        p = Path(value)
        return p if p.is_absolute() else (self.base / p).absolute()

    def domains(
        self, data: Mapping[str, Any], where: tuple[str, ...], default: tuple[str, ...]
    ) -> tuple[str, ...]:
        value = data.get(where[-1], _MISSING)
        if value is _MISSING:
            return default
        fix = f'write a list of domain names, e.g. {where[-1]} = ["example.org"]'
        if not isinstance(value, list):
            self.problem(
                where, f"must be a list of domain names, not {_type_name(value)}", value=value, fix=fix
            )
            return default
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or _domain_problem(item) is not None:
                why = _domain_problem(item) if isinstance(item, str) else f"{_type_name(item)} in the list"
                self.problem(where, f"{toml_value(item)} is not a domain name: {why}", value=value, fix=fix)
                continue
            domain = item.lower().rstrip(".")
            if domain not in out:
                out.append(domain)
        return tuple(out)


def _dotted(where: tuple[str, ...]) -> str:
    out = ""
    for part in where:
        if part.isdigit() and out:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")


def _domain_problem(name: str) -> str | None:
    """Why `name` is no host or domain name, or None. The rules are Postfix's valid_hostname
    (letters, digits, hyphens inside a label, underscores; 1 to 63 characters a label, at most 253
    in all; no IP address), plus IDNA 2008 for a name with non-ASCII letters, as recipients'
    domains are read (protocol.address) and the server writes its own name (A-labels)."""
    host = name[:-1] if name.endswith(".") else name
    if not host:
        return "it is empty"
    if host.startswith(("*", ".")):
        return (
            "a wildcard or leading dot (Postfix's way to include subdomains) is not supported: each "
            "domain is matched exactly, so list every subdomain that receives mail"
        )
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in host):
        return "it contains a control character"
    if any(c.isspace() or c in "@/:[]\\\"'<>,;" for c in host):
        return "it contains a character not allowed in a domain name"
    if is_ip_address(host):
        return "it is an IP address, not a name (RFC 5321 2.3.5)"
    try:
        # IDNA2008, as addresses on the wire are read (protocol.address): a name only IDNA 2003
        # takes (full-width letters, symbols) would be a domain no recipient could ever match.
        ascii_form = host if host.isascii() else Address("postmaster", host).ascii_domain
    except AddressError as exc:
        why = exc.reason
        return f"it is not a valid internationalised domain name ({why}); write it in U-labels or A-labels"
    labels = ascii_form.split(".")
    if len(ascii_form) > 253 or any(not 1 <= len(label) <= 63 for label in labels):
        return "labels must be 1 to 63 characters and the whole name at most 253"
    for label in labels:
        if not _LABEL.fullmatch(label):
            if "-" in (label[0], label[-1]):
                return f"the label {label!r} starts or ends with a hyphen"
            return "it contains a character not allowed in a domain name (letters, digits, - and _)"
    if labels[-1].isdigit():
        return "its last label is all digits, which no top-level domain is (RFC 3696 2)"
    return None


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_TABLES = (("tls", TLSConfig), ("auth", AuthConfig), ("limits", LimitsConfig), ("queue", QueueConfig))


def _home_of(key: str) -> str | None:
    """Where a known key belongs, in words ("under [auth]"), or None for a key known nowhere.
    No two tables share a key name, so the answer is unique."""
    for table, cls in _TABLES:
        if key in _field_names(cls):
            return f"under [{table}]"
    if key in _field_names(ListenerConfig):
        return "in a [[listeners]] entry"
    tables = {"listeners", "source", *(name for name, _ in _TABLES)}
    if key in _field_names(Config) and key not in tables:
        return "at the top of the file, above the first [table] header"
    return None


def _table_name(where: tuple[str, ...]) -> str:
    return "a [[listeners]] entry" if where[0] == "listeners" else f"[{'.'.join(where)}]"


def _read_listeners(r: _Reader, data: Mapping[str, Any]) -> tuple[ListenerConfig, ...] | None:
    value = data.get("listeners", _MISSING)
    if value is _MISSING:
        return None
    example = 'write [[listeners]] tables, each with role = "mx", "submission" or "submissions"'
    if not isinstance(value, list) or not value:
        what = "an empty list" if isinstance(value, list) else _type_name(value)
        r.problem(("listeners",), f"must be one or more [[listeners]] tables, not {what}", fix=example)
        return None
    out: list[ListenerConfig] = []
    earlier: list[tuple[int, ListenerConfig]] = []
    resolved: dict[str, frozenset[str]] = {}
    for i, entry in enumerate(value):
        where = ("listeners", str(i))
        if not isinstance(entry, dict):
            r.problem(where, f"must be a table, not {_type_name(entry)}", value=entry, fix=example)
            continue
        r.table(entry, where, _field_names(ListenerConfig))
        role = entry.get("role", _MISSING)
        if role is _MISSING:
            r.problem(where, "has no role", fix='add role = "mx", "submission" or "submissions"')
            continue
        if role not in schema.ROLES:
            r.problem((*where, "role"), "unknown listener role", value=role, fix=_role_fix(role))
            continue
        role = cast(schema.ListenerRole, role)
        address = r.string(entry, (*where, "address"), "127.0.0.1", 'write address = "0.0.0.0" or "::"')
        literal = _unliteral(address)
        mapped = _ipv4_mapped(literal)
        if literal != address and _is_bind_address(literal):
            # URLs' and SMTP's ways of writing an address, "[::1]" or "[IPv6:::1]".
            tagged = ":" in address and address[1:6].lower() == "ipv6:"
            r.problem(
                (*where, "address"),
                "the brackets and the IPv6: tag are not needed" if tagged else "brackets are not needed",
                value=address,
                fix=f"write address = {toml_value(mapped or literal)}",
            )
            address = mapped or literal
        elif mapped is not None:
            # With IPV6_V6ONLY (each IPv6 listener has it) the bind fails: EINVAL at start-up.
            r.problem(
                (*where, "address"),
                "is an IPv4-mapped IPv6 address, which an IPv6 listener cannot bind",
                value=address,
                fix=f"write the IPv4 address: address = {toml_value(mapped)}",
            )
            address = mapped
        elif address.strip().lower() in ("*", "all", "any"):
            # Postfix's inet_interfaces = all, Exim's and nginx's "*": no host has that name.
            r.problem(
                (*where, "address"),
                "is not an address: every address of this machine is written as the wildcard of its family",
                value=address,
                fix='write address = "0.0.0.0" for all of IPv4, and a second listener with "::" for IPv6',
            )
        elif not _is_bind_address(address):
            r.problem(
                (*where, "address"),
                "is not an IP address or host name",
                value=address,
                fix=(
                    'write an IP address of this machine, e.g. address = "0.0.0.0" (all IPv4) or "::"'
                    " (all IPv6)"
                ),
            )
        port = r.integer(entry, (*where, "port"), schema.STANDARD_PORTS[role], 1, 65535)
        listener = ListenerConfig(
            role=role,
            address=address,
            port=port,
            allow_plaintext_auth=r.boolean(entry, (*where, "allow_plaintext_auth"), False),
        )
        clash = _clashing(earlier, listener, resolved)
        if clash is not None:
            index, other, shared = clash
            named = not (is_ip_address(address) and is_ip_address(other.address))
            both = f": both would bind {shared}" if named else ""
            r.problem(
                (*where, "port"),
                f"conflicts with listeners[{index}] on {other.address} port {port}{both}",
                value=port,
                fix="use a different port or address for one of them",
            )
        earlier.append((i, listener))
        out.append(listener)
    return tuple(out)


# Names other servers give these services (Postfix's master.cf: smtp, submission, smtps).
_ROLE_ALIASES: Mapping[str, tuple[str, str]] = {
    "smtp": ("mx", "port 25, mail from other servers"),
    "smtpd": ("mx", "port 25, mail from other servers"),
    "smtps": ("submissions", "port 465, implicit TLS, RFC 8314"),
    "ssl": ("submissions", "port 465, implicit TLS, RFC 8314"),
    "tls": ("submissions", "port 465, implicit TLS, RFC 8314"),
    "msa": ("submission", "port 587, STARTTLS, RFC 6409"),
    "starttls": ("submission", "port 587, STARTTLS, RFC 6409"),
}


def _role_fix(role: object) -> str:
    if not isinstance(role, str):
        return 'write role = "mx", "submission" or "submissions", in quotes'
    word = role.strip().lower()
    if word in schema.ROLES:
        return f"write it in lower case: role = {toml_value(word)}"
    if word in _ROLE_ALIASES:
        name, what = _ROLE_ALIASES[word]
        return f"write role = {toml_value(name)} ({what})"
    close = difflib.get_close_matches(word, schema.ROLES, n=1)
    return f"did you mean {close[0]!r}?" if close else 'use "mx", "submission" or "submissions"'


def _unliteral(address: str) -> str:
    """`address` without the brackets, and the IPv6: tag, of an address literal."""
    if not (address.startswith("[") and address.endswith("]")):
        return address
    inner = address[1:-1]
    if inner[:5].lower() != "ipv6:":
        return inner
    try:
        return str(ipaddress.IPv6Address(inner[5:]))
    except ValueError:
        return address


def _ipv4_mapped(address: str) -> str | None:
    """The IPv4 address an IPv4-mapped IPv6 address ("::ffff:127.0.0.1") stands for, else None."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped) if mapped is not None else None


def _is_bind_address(address: str) -> bool:
    if is_ip_address(address):
        return True
    # "999.1.1.1" or "10.0.0" is a mistyped IP address, not a host name: no top-level domain
    # is all digits (RFC 3696 section 2), and the resolver would fail only at start-up.
    if address.rstrip(".").rpartition(".")[2].isdigit():
        return False
    return _domain_problem(address) is None


def _norm_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower()


def _bind_addresses(address: str, resolved: dict[str, frozenset[str]]) -> frozenset[str]:
    """The addresses a listener on `address` binds: a host name's, as start-up resolves it
    (`prefork.master.bind_listener`: every address, so "localhost" may be 127.0.0.1 and ::1)."""
    if is_ip_address(address):
        return frozenset((_norm_address(address),))
    if address not in resolved:
        try:
            infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            found = frozenset(_norm_address(str(info[4][0])) for info in infos)
        except (OSError, UnicodeError):
            found = frozenset()  # start-up says it does not resolve
        resolved[address] = found or frozenset((address.lower(),))
    return resolved[address]


def _clashing(
    earlier: list[tuple[int, ListenerConfig]], listener: ListenerConfig, resolved: dict[str, frozenset[str]]
) -> tuple[int, ListenerConfig, str] | None:
    """An earlier listener whose bind would fail against this one: its index, it, and the address
    both would bind. Host names are looked up only beside a listener on the same port."""
    mine: frozenset[str] | None = None
    for index, other in earlier:
        if other.port != listener.port:
            continue
        if mine is None:
            mine = _bind_addresses(listener.address, resolved)
        for theirs in sorted(_bind_addresses(other.address, resolved)):
            for address in sorted(mine):
                if _overlap(address, theirs):
                    return index, other, theirs if address in ("0.0.0.0", "::") else address
    return None


def _overlap(one: str, other: str) -> bool:
    """Whether binding both addresses on one port fails: a wildcard takes every address of its family."""
    if one == other:
        return True
    if "0.0.0.0" in (one, other):
        return ":" not in one + other
    return "::" in (one, other) and ":" in one and ":" in other


def blocking_file(path: Path) -> Path | None:
    """The first existing part of `path` that is not a directory: creating `path` would fail.

    Also used by `mailwright user` to say why a database path cannot be opened.
    """
    for part in (*reversed(path.parents), path):
        if not part.exists():
            return None
        if not part.is_dir():
            return part
    return None


def _check_directory(
    r: _Reader, where: tuple[str, ...], raw: Any, path: Path | None, *, is_file: bool = False
) -> None:
    """Report a setting whose directory (`path`, or its parent when `is_file`) cannot be created
    because it is, or lies under, something that is not a directory."""
    if path is None:
        return
    blocker = blocking_file(path.parent if is_file else path)
    if blocker is None:
        return
    what = "is a file, not a directory" if blocker == path else f"{blocker} is a file, not a directory"
    r.problem(
        where,
        what,
        value=raw,
        fix="name a directory, which mailwright creates when missing, or move that file out of the way",
    )


def _read_tls(r: _Reader, data: Mapping[str, Any]) -> TLSConfig:
    table = r.sub_table(data, "tls")
    r.table(table, ("tls",), _field_names(TLSConfig))
    cert = r.path(table, ("tls", "cert"), 'write cert = "/etc/mailwright/fullchain.pem"')
    key = r.path(table, ("tls", "key"), 'write key = "/etc/mailwright/privkey.pem"')
    if (cert is None) != (key is None):
        have, missing = ("cert", "key") if key is None else ("key", "cert")
        r.problem(
            ("tls", have),
            f"tls.{have} is set but tls.{missing} is not",
            fix=(
                f'add {missing} = "..." under [tls], or remove {have} '
                "to use a generated self-signed certificate"
            ),
        )
    for name, p in (("cert", cert), ("key", key)):
        if p is None:
            continue
        try:
            # stat before open: opening a FIFO waits for a writer, and reading a device
            # (/dev/zero, /dev/stdin) never ends: both would hang the check and the start.
            if not stat.S_ISREG(p.stat().st_mode):
                what = "a directory" if p.is_dir() else "a device, FIFO or socket"
                r.problem(
                    ("tls", name),
                    f"is {what}, not a PEM file",
                    value=str(p),
                    fix="name the file itself: Let's Encrypt's fullchain.pem for cert, privkey.pem for key",
                )
                continue
            with open(p, "rb") as f:
                f.read(1)
        except OSError as exc:
            r.problem(
                ("tls", name),
                f"cannot read it: {exc.strerror or exc}",
                value=str(p),
                fix="check the path and that the mailwright user may read the file",
            )
    return TLSConfig(cert=cert, key=key)


def _read_user(r: _Reader, data: Mapping[str, Any]) -> str | None:
    if "user" not in data:
        return None
    name = r.string(data, ("user",), "", 'write user = "mailwright"')
    if not name:
        return None
    try:
        RunAs.lookup(name)
    except PrivilegeError as exc:
        r.problem(("user",), exc.problem, value=name, fix=exc.fix)
        return None
    return name


def _read_auth(r: _Reader, data: Mapping[str, Any]) -> AuthConfig:
    d = AuthConfig()
    table = r.sub_table(data, "auth")
    r.table(table, ("auth",), _field_names(AuthConfig))
    mechanisms = d.mechanisms
    raw = table.get("mechanisms", _MISSING)
    where = ("auth", "mechanisms")
    if raw is not _MISSING:
        known = ", ".join(f'"{m}"' for m in schema.KNOWN_MECHANISMS)
        if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
            r.problem(where, "must be a list of SASL mechanism names", value=raw, fix=f"choose from {known}")
        else:
            names: list[str] = []
            for m in raw:
                name = m.strip().upper()
                if name not in schema.KNOWN_MECHANISMS:
                    r.problem(where, f"unknown SASL mechanism {m!r}", value=raw, fix=f"choose from {known}")
                elif name in names:
                    r.problem(where, f"{name} is listed twice", value=raw, fix="list each mechanism once")
                else:
                    names.append(name)
            mechanisms = tuple(names)
    return AuthConfig(
        mechanisms=mechanisms,
        users_db=r.path(table, ("auth", "users_db"), 'write users_db = "/var/lib/mailwright/users.db"'),
        sender_must_be_owned=r.boolean(table, ("auth", "sender_must_be_owned"), d.sender_must_be_owned),
        max_failures=r.integer(table, ("auth", "max_failures"), d.max_failures, 1, 1_000_000),
        failure_window=r.seconds(table, ("auth", "failure_window"), d.failure_window, zero_ok=False),
        lockout=r.seconds(table, ("auth", "lockout"), d.lockout, zero_ok=True),
    )


def _read_limits(r: _Reader, data: Mapping[str, Any]) -> LimitsConfig:
    d = LimitsConfig()
    table = r.sub_table(data, "limits")
    r.table(table, ("limits",), _field_names(LimitsConfig))
    big = 2**63 - 1

    def count(key: str, default: int) -> int:
        return r.integer(table, ("limits", key), default, 1, big)

    return LimitsConfig(
        max_message_size=count("max_message_size", d.max_message_size),
        max_recipients=count("max_recipients", d.max_recipients),
        max_connections=count("max_connections", d.max_connections),
        max_connections_per_ip=count("max_connections_per_ip", d.max_connections_per_ip),
        ipv6_prefix=r.integer(
            table,
            ("limits", "ipv6_prefix"),
            d.ipv6_prefix,
            32,
            128,
            fix=(
                f"set it to {d.ipv6_prefix}, the default: the /64 one host is usually given; "
                "128 counts each IPv6 address on its own, 48 a whole site"
            ),
        ),
        command_timeout=r.seconds(table, ("limits", "command_timeout"), d.command_timeout, zero_ok=False),
        data_timeout=r.seconds(table, ("limits", "data_timeout"), d.data_timeout, zero_ok=False),
        stop_timeout=r.seconds(table, ("limits", "stop_timeout"), d.stop_timeout, zero_ok=False),
    )


# What to do about tomllib's complaints, by the start of its message; the rest get the general fix.
_TOML_FIXES: tuple[tuple[str, str], ...] = (
    (
        "Invalid value",
        'strings need double quotes, e.g. hostname = "mail.example.org"; true and false are lower case',
    ),
    (
        "Illegal character '\\n'",
        'close the string with its quote on the same line, e.g. hostname = "mail.example.org"',
    ),
    ("Unterminated string", "close the string with its quotes"),
    ('Expected "\'"', "close the string with its quote on the same line"),
    ("Expected '=' after a key", "write key = value (TOML uses =, not :)"),
    ("Unclosed array", 'close the list with ], e.g. local_domains = ["example.org"]'),
    ("Unclosed inline table", "close the table with }"),
    ("Expected ']' at the end of a table", "close the header: [limits], or [[listeners]] for a listener"),
    (
        "Expected newline or end of document",
        "one key = value per line; numbers have no leading zeros or units",
    ),
    ("Cannot overwrite a value", "set each key once, and give no key the name of a table"),
    ("Cannot declare", "write each [table] header once, with all its keys below it"),
    ("Duplicate inline table key", "set each key once"),
)


def _parse(text: str, path: Path | None) -> dict[str, Any]:
    where = str(path or "<config>")
    if text.startswith("\ufeff"):
        # Notepad's UTF-8 byte order mark: TOML has no place for it, and tomllib says only
        # "Invalid statement (at line 1, column 1)".
        raise ConfigError(
            [
                f"{where}:1: the file starts with a byte order mark (U+FEFF), which TOML does not allow "
                "(fix: save it as UTF-8 without BOM, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE)"
            ]
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"line (\d+)", message)
        line = int(m.group(1)) if m else None
        at = f"{where}:{line}" if path is not None and line is not None else where
        twice = _defined_twice(text, line) if line is not None else None
        if twice is not None and ("overwrite" in message or "twice" in message):
            name, first, table = twice
            fix = (
                f"merge the two {name} sections into one"
                if table
                else "keep one of them: a key may be set once in its table"
            )
            problem = f"{name} appears twice, first on line {first}"
            raise ConfigError([f"{at}: TOML: {problem} (fix: {fix})"]) from None
        fix = next(
            (fix for start, fix in _TOML_FIXES if message.startswith(start)),
            "correct the syntax on that line",
        )
        raise ConfigError([f"{at}: TOML syntax error: {message} (fix: {fix})"]) from None


def _defined_twice(text: str, line: int) -> tuple[str, int, bool] | None:
    """For a key or [table] on `line` that an earlier line already defines: how it is written,
    that earlier line, and whether it is a table header; else None."""
    seen: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines()[:line], start=1):
        stripped = raw.strip()
        header = _HEADER.match(stripped)
        if header is not None:
            table = _split_key(header.group(2))
            if header.group(1):  # [[x]]: a new entry each time; only its keys can repeat
                seen = {k: v for k, v in seen.items() if k[: len(table)] != table}
                continue
            if number == line and table in seen:
                return f"[{'.'.join(table)}]", seen[table], True
            seen.setdefault(table, number)
            continue
        keyline = _KEYLINE.match(stripped)
        if keyline is not None:
            key = (*table, *_split_key(keyline.group(1)))
            if number == line and key in seen:
                return ".".join(_split_key(keyline.group(1))), seen[key], False
            seen.setdefault(key, number)
    return None


class _NotAFile(Exception):
    """The configuration path names something that is not a configuration file (message and fix)."""


# A configuration is a few KiB; this bounds what `--config /dev/zero` (or a log given by mistake)
# makes us read and hold.
MAX_CONFIG_BYTES = 1024 * 1024


def _read_file(path: Path) -> bytes:
    # stat before open: a device would be read without end.  A pipe is fine (--config <(...)).
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        example = path / "mailwright.toml"
        raise _NotAFile(f"is a directory (fix: name the file in it, e.g. --config {example})")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise _NotAFile(
            "is a device or socket (fix: give --config or MAILWRIGHT_CONFIG the path of a TOML file)"
        )
    with path.open("rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise _NotAFile(
            "is larger than 1 MiB, which no configuration is "
            "(fix: check that --config or MAILWRIGHT_CONFIG names the configuration file)"
        )
    return data


def load(
    path: Path | None,
    *,
    env: Mapping[str, str] = os.environ,
    is_root: bool | None = None,
) -> Config:
    """Read `path` (None: all defaults) into a validated Config; raise ConfigError otherwise."""
    root = schema.running_as_root() if is_root is None else is_root
    if path is None:
        return schema.default_config(env, is_root=root)
    try:
        text = _read_file(path).decode("utf-8")
    except _NotAFile as exc:
        raise ConfigError([f"{path}: the configuration file {exc}"]) from None
    except OSError as exc:
        raise ConfigError(
            [
                f"{path}: cannot read the configuration file: {exc.strerror or exc} "
                "(fix: check the path given with --config or MAILWRIGHT_CONFIG, and its permissions)"
            ]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte {exc.start}) (fix: save the file as UTF-8, as TOML requires)"]
        ) from None
    data = _parse(text, path)
    r = _Reader(path, text, env)
    r.table(data, (), tuple(n for n in _field_names(Config) if n != "source"))

    hostname = r.string(data, ("hostname",), schema.default_hostname(), 'write hostname = "mail.example.org"')
    if "hostname" in data and isinstance(data["hostname"], str) and _domain_problem(hostname):
        r.problem(
            ("hostname",),
            f"is not a host name: {_domain_problem(hostname)}",
            value=hostname,
            fix='write the public name of this server, e.g. hostname = "mail.example.org"',
        )
    elif "hostname" in data and hostname.endswith("."):
        # The greeting and EHLO carry it as written, and RFC 5321's Domain has no final dot.
        r.problem(
            ("hostname",),
            "ends with a dot, which the name in the greeting and EHLO may not have (RFC 5321 4.1.2)",
            value=hostname,
            fix=f"write hostname = {toml_value(hostname.rstrip('.'))}",
        )
    state_dir = r.path(data, ("state_dir",), 'write state_dir = "/var/lib/mailwright"')
    _check_directory(r, ("state_dir",), data.get("state_dir"), state_dir)
    if state_dir is None:
        state_dir = schema.default_state_dir(env, is_root=root)
    local = r.domains(data, ("local_domains",), (hostname.lower().rstrip("."),))
    relay = r.domains(data, ("relay_domains",), ())
    # Compared as relay policy compares them: "bücher.example" is "xn--bcher-kva.example".
    local_keys = {comparable_domain(d) for d in local}
    for domain in sorted(d for d in relay if comparable_domain(d) in local_keys):
        r.problem(
            ("relay_domains",),
            f"{domain} is also in local_domains",
            value=list(relay),
            fix="a domain is either delivered here (local_domains) or relayed (relay_domains)",
        )
    listeners = _read_listeners(r, data)
    tls = _read_tls(r, data)
    auth = _read_auth(r, data)
    if auth.users_db is not None and auth.users_db.is_dir():
        r.problem(
            ("auth", "users_db"),
            "is a directory",
            value=data["auth"]["users_db"],
            fix=f"name the database file, e.g. users_db = {toml_value(auth.users_db / 'users.db')}",
        )
    elif auth.users_db is not None:
        _check_directory(r, ("auth", "users_db"), data["auth"]["users_db"], auth.users_db, is_file=True)
    if auth.users_db is None:
        auth = dataclasses.replace(auth, users_db=state_dir / "users.db")
    limits = _read_limits(r, data)
    queue_table = r.sub_table(data, "queue")
    r.table(queue_table, ("queue",), _field_names(QueueConfig))
    queue_dir = r.path(queue_table, ("queue", "directory"), 'write directory = "/var/lib/mailwright/queue"')
    _check_directory(r, ("queue", "directory"), queue_table.get("directory"), queue_dir)
    min_free = r.integer(queue_table, ("queue", "min_free"), QueueConfig.min_free, 0, 2**63 - 1)
    workers = r.integer(data, ("workers",), 0, 0, schema.MAX_WORKERS)
    user = _read_user(r, data)
    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        hostname=hostname,
        state_dir=state_dir,
        local_domains=local,
        relay_domains=relay,
        listeners=listeners if listeners is not None else schema.default_listeners(root),
        tls=tls,
        auth=auth,
        limits=limits,
        queue=QueueConfig(queue_dir if queue_dir is not None else state_dir / "queue", min_free=min_free),
        workers=workers,
        user=user,
        source=path.absolute(),
    )
