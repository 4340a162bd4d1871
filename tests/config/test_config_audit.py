"""Audit of the configuration's error paths, through `mailwright config check` as a real process.

The standard (tests/cli_run.py): a bad configuration exits 2 with one line per problem,
``file:line: key = value: what is wrong (fix: ...)``, the value as the file has it, nothing on
standard output, never a traceback, never a hang. `config check` reads the file with the loader
`serve` uses (tests/e2e/test_serve_cli.py shows `serve` refusing the same way), and also loads the
certificate and key and tries each listener's address, as start-up would.

The cases:
- the type matrix: every documented key (loader's docstring) set to every kind of TOML value
  (string, numbers in and out of range, 2**63, booleans, lists, tables, dates, times, nan, inf,
  empty and blank strings), all keys at once per kind: each key the loader must refuse names
  its own line, and no key it takes is reported;
- unknown, misspelt and misplaced keys, listener roles other servers' words, TOML syntax errors
  (duplicate keys and tables, BOM, unclosed strings) with their line numbers;
- host and domain names, side by side with Postfix's valid_hostname (`postmap` reads main.cf
  and refuses a bad myhostname; the differences are the DELIBERATE mapping below);
- listener addresses (the wildcard words, an address this machine does not have, a name that
  does not resolve), files that are no configuration, paths that are no files, TLS material
  that is no PEM, swapped, DER, of a weak key, expired.

Not covered here: the CLI subcommands and a real `serve`'s start-up (tests/test_cli_audit.py),
the loader's in-process behaviour (test_config_loader.py).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import subprocess
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from cli_run import Done, mailwright, refused

YEAR = 366 * 86400
BIG = 2**63 - 1

# TOML as an operator might write it, by kind. Each renders in messages as written here.
VALUES = {
    "string": '"abc"',
    "int": "7",
    "bool": "true",
    "list": "[1, 2]",
    "table": "{ a = 1 }",
    "float": "1.5",
    "date": "1979-05-27",
    "datetime": "1979-05-27T07:32:00+00:00",
    "time": "07:32:00",
    "zero": "0",
    "negative": "-1",
    "max": str(BIG),
    "2**63": str(2**63),
    "empty": '""',
    "blank": '"  "',
    "nan": "nan",
    "inf": "inf",
    "-inf": "-inf",
}


def _int(low: int, high: int) -> Callable[[object], bool]:
    return lambda v: type(v) is int and low <= v <= high


def _seconds(zero_ok: bool) -> Callable[[object], bool]:
    def ok(v: object) -> bool:
        if type(v) not in (int, float):
            return False
        value = float(v)  # type: ignore[arg-type]
        return math.isfinite(value) and 0 <= value <= YEAR and (zero_ok or value > 0)

    return ok


def _path(v: object) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _never(v: object) -> bool:
    return False


def _is_bool(v: object) -> bool:
    return type(v) is bool


# (table, key, what the loader takes). "abc" is a valid host name and a valid relative path; no
# kind above is a list of domain names or mechanisms, an existing user or a readable PEM file.
KEYS: list[tuple[str, str, Callable[[object], bool]]] = [
    ("", "hostname", _path),
    ("", "state_dir", _path),
    ("", "local_domains", _never),
    ("", "relay_domains", _never),
    ("", "workers", _int(0, 256)),
    ("", "user", _never),
    ("tls", "cert", _never),
    ("tls", "key", _never),
    ("auth", "mechanisms", _never),
    ("auth", "users_db", _path),
    ("auth", "sender_must_be_owned", _is_bool),
    ("auth", "max_failures", _int(1, 1_000_000)),
    ("auth", "failure_window", _seconds(zero_ok=False)),
    ("auth", "lockout", _seconds(zero_ok=True)),
    ("limits", "max_message_size", _int(1, BIG)),
    ("limits", "max_recipients", _int(1, BIG)),
    ("limits", "max_connections", _int(1, BIG)),
    ("limits", "max_connections_per_ip", _int(1, BIG)),
    ("limits", "ipv6_prefix", _int(32, 128)),
    ("limits", "command_timeout", _seconds(zero_ok=False)),
    ("limits", "data_timeout", _seconds(zero_ok=False)),
    ("limits", "stop_timeout", _seconds(zero_ok=False)),
    ("queue", "directory", _path),
    ("queue", "min_free", _int(0, BIG)),
]
# One listener per key, so that a bad role (which ends the entry's checks) hides nothing else.
LISTENER_KEYS: list[tuple[str, str, Callable[[object], bool]]] = [
    ("role", "", _never),
    ("address", 'role = "mx"\nport = 2501', _path),
    ("port", 'role = "mx"\naddress = "127.0.0.1"', _int(1, 65535)),
    ("allow_plaintext_auth", 'role = "mx"\naddress = "127.0.0.1"\nport = 2503', _is_bool),
]
# Messages that show the path resolved, or no value, rather than the value as written.
NO_ECHO = {"tls.cert", "tls.key"}


def matrix_file(literal: str) -> tuple[str, dict[str, int]]:
    """A configuration with every key set to `literal`, and the line of each key."""
    lines: list[str] = []
    at: dict[str, int] = {}

    def key(name: str, dotted: str) -> None:
        lines.append(f"{name} = {literal}")
        at[dotted] = len(lines)

    for table, name, _ in KEYS:
        if not table:
            key(name, name)
    for i, (name, others, _) in enumerate(LISTENER_KEYS):
        lines.append("[[listeners]]")
        lines.extend(others.splitlines() if others else [])
        key(name, f"listeners[{i}].{name}")
    for table in ("tls", "auth", "limits", "queue"):
        lines.append(f"[{table}]")
        for t, name, _ in KEYS:
            if t == table:
                key(name, f"{table}.{name}")
    return "\n".join(lines) + "\n", at


def lines_about(err: str, path: Path, dotted: str) -> list[str]:
    out = []
    for line in err.splitlines():
        rest = line.split(": ", 1)[1] if line.startswith(f"{path}:") else line
        if rest.startswith((f"{dotted} = ", f"{dotted}: ")):
            out.append(line)
    return out


def check(tmp_path: Path, text: str | bytes, *argv: str, name: str = "mailwright.toml") -> tuple[Done, Path]:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return mailwright("--config", path, *(argv or ("config", "check")), home=tmp_path), path


@pytest.mark.parametrize("kind", list(VALUES))
def test_every_key_with_every_kind_of_value(tmp_path: Path, kind: str) -> None:
    literal = VALUES[kind]
    value = tomllib.loads(f"v = {literal}")["v"]
    text, at = matrix_file(literal)
    done, path = check(tmp_path, text)
    # Before: a date was shown as "datetime.date(1979, 5, 27)" and called "date"; 2**63 was
    # "must be a whole number >= 1"; a path of the wrong type "must be a path in quotes, a list".
    err = refused(done, 2)
    assert "datetime." not in err and "in quotes, a " not in err
    if kind == "2**63":
        assert "whole number >= " not in err, err
    judged = [(t, n, f"{t}.{n}" if t else n, ok) for t, n, ok in KEYS]
    judged += [("listeners", n, f"listeners[{i}].{n}", ok) for i, (n, _, ok) in enumerate(LISTENER_KEYS)]
    for _, _, dotted, takes in judged:
        about = lines_about(err, path, dotted)
        if takes(value):
            assert about == [], f"{dotted} = {literal} is valid, yet: {about}"
            continue
        assert about, f"{dotted} = {literal}: nothing said about it in:\n{err}"
        for line in about:
            assert line.startswith(f"{path}:{at[dotted]}: "), (at[dotted], line)
            assert "(fix: " in line and line.endswith(")"), line
        if dotted not in NO_ECHO:
            assert any(f"{dotted} = {literal}" in line for line in about), about
    # Every problem is one line, and each is about one of the keys above.
    assert len(err.splitlines()) == sum(len(lines_about(err, path, d)) for *_, d, _ in judged), err


@pytest.mark.parametrize("kind", ["string", "int", "list", "table", "date", "empty"])
def test_every_table_given_as_a_value(tmp_path: Path, kind: str) -> None:
    literal = VALUES[kind]
    text = "".join(f"{name} = {literal}\n" for name in ("tls", "auth", "limits", "queue", "listeners"))
    done, path = check(tmp_path, text)
    err = refused(done, 2)
    for line_number, name in enumerate(("tls", "auth", "limits", "queue", "listeners"), start=1):
        about = [line for line in err.splitlines() if line.startswith(f"{path}:{line_number}: {name}")]
        assert about and all("(fix: " in line for line in about), err


# (what is written, the line, what the message must say). Before, for the misplaced keys: "remove
# it; known keys: ...", which loses the setting; for [[listener]]: no line number.
MISTAKES = [
    ('hostnme = "mail.example.org"\n', 1, "hostnme: unknown key (fix: did you mean 'hostname'?)"),
    ('local_domain = ["example.org"]\n', 1, "did you mean 'local_domains'?"),
    ("[limit]\nmax_recipients = 5\n", 1, "limit: unknown key (fix: did you mean 'limits'?)"),
    ('[[listener]]\nrole = "mx"\n', 1, "listener: unknown key (fix: did you mean 'listeners'?)"),
    ("[limits]\nmax_recipient = 500\n", 2, "did you mean 'max_recipients'?"),
    (
        '[[listeners]]\nrole = "mx"\nprot = 2525\n',
        3,
        "listeners[0].prot: unknown key (fix: did you mean 'port'?)",
    ),
    ('[ssl]\ncert = "x.pem"\n', 1, "ssl: unknown key (fix: remove it; known keys: "),
    (
        "[limits]\nmax_recipients = 500\nworkers = 2\n",
        3,
        "limits.workers: is not a key of [limits] (fix: workers belongs at the top of the file, above "
        "the first [table] header: move it there (in TOML every key below a [table] header is part of "
        "that table))",
    ),
    (
        "[limits]\nmax_failures = 3\n",
        2,
        "limits.max_failures: is not a key of [limits] (fix: max_failures belongs under [auth]: move it "
        "there",
    ),
    (
        "max_recipients = 500\n",
        1,
        "max_recipients: is not a top-level key (fix: max_recipients belongs under [limits]",
    ),
    (
        "port = 2525\n",
        1,
        "port: is not a top-level key (fix: port belongs in a [[listeners]] entry: move it there)",
    ),
    (
        '[[listeners]]\nrole = "mx"\nport = 2525\nuser = "mailwright"\n',
        4,
        "listeners[0].user: is not a key of a [[listeners]] entry (fix: user belongs at the top of the file",
    ),
    (
        '[[listeners]]\nrole = "MX"\n',
        2,
        'listeners[0].role = "MX": unknown listener role (fix: write it in lower case: role = "mx")',
    ),
    (
        '[[listeners]]\nrole = "smtp"\n',
        2,
        'unknown listener role (fix: write role = "mx" (port 25, mail from other servers))',
    ),
    (
        '[[listeners]]\nrole = "smtps"\n',
        2,
        'unknown listener role (fix: write role = "submissions" (port 465',
    ),
    ('[[listeners]]\nrole = "submision"\n', 2, "unknown listener role (fix: did you mean 'submission'?)"),
    ("[[listeners]]\nport = 2525\n", 1, 'listeners[0]: has no role (fix: add role = "mx"'),
    ('[auth]\nmechanisms = ["CRAM_MD5"]\n', 2, "unknown SASL mechanism 'CRAM_MD5' (fix: choose from"),
    ('[auth]\nmechanisms = "PLAIN LOGIN"\n', 2, "must be a list of SASL mechanism names"),
    ('[[tls]]\ncert = "x.pem"\n', 1, "tls = [{ cert = "),
]


@pytest.mark.parametrize(("text", "line", "says"), MISTAKES, ids=[m[0][:30] for m in MISTAKES])
def test_unknown_misspelt_and_misplaced_keys(tmp_path: Path, text: str, line: int, says: str) -> None:
    done, path = check(tmp_path, text)
    refused(done, 2, f"{path}:{line}: ", says)


TOML_ERRORS = [
    (
        'hostname = "a.example"\nhostname = "b.example"\n',
        2,
        "hostname appears twice, first on line 1 (fix: keep one",
    ),
    (
        "[limits]\nmax_recipients = 5\n[auth]\n[limits]\n",
        4,
        "[limits] appears twice, first on line 1 (fix: merge",
    ),
    ('[[listeners]]\nrole = "mx"\nrole = "mx"\n', 3, "role appears twice, first on line 2"),
    ('hostname = "mail.example.org\n', 1, "close the string with its quote on the same line"),
    ("hostname = mail.example.org\n", 1, 'strings need double quotes, e.g. hostname = "mail.example.org"'),
    ("[auth]\nsender_must_be_owned = True\n", 2, "true and false are lower case"),
    ('hostname: "mail.example.org"\n', 1, "write key = value (TOML uses =, not :)"),
    ("[limits\nmax_recipients = 5\n", 1, "close the header: [limits]"),
    ("[limits]\nmax_message_size = 50M\n", 2, "numbers have no leading zeros or units"),
    ('local_domains = ["example.org"\n', None, "close the list with ]"),
    ('\ufeffhostname = "mail.example.org"\n', 1, "the file starts with a byte order mark (U+FEFF)"),
    ('hostname = "a\x00b"\n', 1, "TOML syntax error: Illegal character"),
    ('hostname = "mail.example.org"\r\n[limits]\r\nmax_recipients = 0\r\n', 3, "limits.max_recipients = 0"),
]


@pytest.mark.parametrize(("text", "line", "says"), TOML_ERRORS, ids=[e[0][:30] for e in TOML_ERRORS])
def test_toml_errors_name_the_line_and_the_fix(
    tmp_path: Path, text: str, line: int | None, says: str
) -> None:
    # Before: a duplicate key's fix was "strings need double quotes", and a BOM "Invalid statement".
    done, path = check(tmp_path, text)
    refused(done, 2, f"{path}:{line}: " if line else f"{path}: ", says)


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    done, path = check(tmp_path, b'hostname = "caf\xe9.example"\n')
    refused(done, 2, f"{path}: not UTF-8 text (byte 15) (fix: save the file as UTF-8")


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    done, path = check(tmp_path, "# nothing yet\n")
    assert done.code == 0 and done.out.startswith(f"OK: {path}: "), done


# Postfix's valid_hostname, as main.cf's myhostname meets it, against mailwright's hostname. True:
# taken. Where the two differ the reason is in DELIBERATE.
HOSTNAMES: dict[str, bool] = {
    "mail.example.org": True,
    "mail": True,
    "mail_1.example.org": True,
    "xn--bcher-kva.example": True,
    "-mail.example.org": False,
    "mail-.example.org": False,
    "mail..example.org": False,
    "192.0.2.1": False,
    "mail.123": False,
    "a\tb.example.org": False,
    "a\u0007b.example.org": False,
    "a" * 64 + ".example.org": False,
    "mail.example.org.": False,
    "bücher.example": True,
    "💌.example.org": False,
}
DELIBERATE = {
    "bücher.example": "taken as an internationalised name (IDNA 2008), written as its A-label in the "
    "greeting and headers; Postfix refuses any non-ASCII myhostname",
}


def postfix_takes(etc: Path, name: str) -> bool:
    """Whether Postfix's programs start with myhostname = `name`: postmap reads main.cf as every
    one of them does, and refuses a bad myhostname ("bad parameter value")."""
    etc.mkdir()
    main_cf = etc / "main.cf"
    main_cf.write_text(f"myhostname = {name}\ncompatibility_level = 3.6\n", encoding="utf-8")
    # Postfix waits for a main.cf changed in the last seconds to settle: make it an old one.
    os.utime(main_cf, (0, 0))
    done = subprocess.run(
        [POSTMAP, "-c", str(etc), "-q", "x", "inline:{x=y}"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 or "bad parameter value" in done.stderr, done.stderr
    return done.returncode == 0


POSTMAP = "/usr/sbin/postmap"


@pytest.fixture(scope="module")
def postfix_verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bool]:
    """Postfix's verdict on every name in HOSTNAMES, asked all at once (a refusal costs Postfix's
    fatal-error delay, a second)."""
    if not os.access(POSTMAP, os.X_OK):
        pytest.skip("no Postfix here (scripts/test installs it)")
    root = tmp_path_factory.mktemp("postfix")
    with ThreadPoolExecutor(len(HOSTNAMES)) as pool:
        verdicts = pool.map(lambda item: postfix_takes(root / str(item[0]), item[1]), enumerate(HOSTNAMES))
        return dict(zip(HOSTNAMES, verdicts, strict=True))


@pytest.mark.parametrize("name", list(HOSTNAMES))
def test_hostname_beside_postfix(tmp_path: Path, name: str, postfix_verdicts: dict[str, bool]) -> None:
    # Before: a control character, a leading hyphen, an IP address, a final dot, a numeric top-level
    # label and an emoji (which only a self-signed certificate then refused, at start-up) were taken.
    done, path = check(tmp_path, f"hostname = {tomllib_string(name)}\n", "config", "show")
    takes = HOSTNAMES[name]
    if takes:
        assert done.code == 0, done.err
    else:
        refused(done, 2, f"{path}:1: hostname = ", 'hostname = "mail.example.org"')
    assert (postfix_verdicts[name] == takes) != (name in DELIBERATE), (name, postfix_verdicts[name], takes)


def tomllib_string(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04X}" for c in text)
    return f'"{escaped}"'


DOMAINS = [
    ('local_domains = ["*.example.org"]\n', "wildcard or leading dot"),
    ('relay_domains = [".example.net"]\n', "each domain is matched exactly"),
    ('local_domains = ["@example.org"]\n', "not allowed in a domain name"),
    ('local_domains = ["192.0.2.1"]\n', "it is an IP address"),
    (
        'local_domains = ["example.org"]\nrelay_domains = ["Example.ORG"]\n',
        "example.org is also in local_domains",
    ),
]


@pytest.mark.parametrize(("text", "says"), DOMAINS, ids=[d[1] for d in DOMAINS])
def test_domain_lists(tmp_path: Path, text: str, says: str) -> None:
    # Before: "*.example.org" was taken, and matched no recipient ever.
    done, path = check(tmp_path, text)
    refused(done, 2, f"{path}:", says, "(fix: ")


LISTENERS = [
    ('address = "*"', 3, "is not an address: every address of this machine is written as the wildcard"),
    ('address = "all"', 3, 'write address = "0.0.0.0" for all of IPv4, and a second listener with "::"'),
    ('address = "127.0.0.1:25"', 3, "is not an IP address or host name"),
    ('address = "[::1]"', 3, 'brackets are not needed (fix: write address = "::1")'),
    ('address = "::ffff:127.0.0.1"', 3, "is an IPv4-mapped IPv6 address"),
    ('address = "127.0.0.0/8"', 3, "is not an IP address or host name"),
    ('address = "999.1.1.1"', 3, "is not an IP address or host name"),
    ('address = "192.0.2.1"', 3, "192.0.2.1 is not an address of this machine"),
    ('address = "host.invalid"', 3, "does not resolve here"),
    ('port = "25"', 4, "must be a whole number, not a string (fix: write it without quotes: port = 25)"),
    ("port = 0", 4, "must be a whole number from 1 to 65535"),
    ("port = 65536", 4, "must be a whole number from 1 to 65535"),
]


@pytest.mark.parametrize(("line", "at", "says"), LISTENERS, ids=[c[0] for c in LISTENERS])
def test_listener_addresses_and_ports(tmp_path: Path, line: str, at: int, says: str) -> None:
    # Before: "*" and "all" passed as host names, and "192.0.2.1" or a name that does not resolve
    # passed `config check` to fail `serve` ("cannot assign requested address", no fix).
    key = line.split(" ")[0]
    other = 'address = "127.0.0.1"' if key == "port" else "port = 2525"
    first, second = (other, line) if key == "port" else (line, other)
    done, path = check(tmp_path, f'[[listeners]]\nrole = "mx"\n{first}\n{second}\n')
    refused(done, 2, f"{path}:{at}: listeners[0].{key} = ", says)


def test_listeners_that_would_clash(tmp_path: Path) -> None:
    text = (
        '[[listeners]]\nrole = "mx"\naddress = "::"\nport = 2525\n'
        '[[listeners]]\nrole = "submission"\naddress = "::1"\nport = 2525\n'
    )
    done, path = check(tmp_path, text)
    refused(done, 2, f"{path}:8: listeners[1].port = 2525: conflicts with listeners[0] on :: port 2525")


def test_config_files_that_are_not_files(tmp_path: Path) -> None:
    for given, says in [
        (tmp_path / "absent.toml", "cannot read the configuration file: No such file or directory"),
        (tmp_path, "the configuration file is a directory (fix: name the file in it"),
        (Path("/dev/zero"), "the configuration file is a device or socket"),
        (b"/tmp/\xff/mailwright.toml", "cannot read the configuration file"),
        (tmp_path / "big.toml", "is larger than 1 MiB"),
    ]:
        if given == tmp_path / "big.toml":
            given.write_text("# x\n" * 300_000)
        done = mailwright("--config", given, "config", "check", home=tmp_path)
        refused(done, 2, says)


# Paths in the file: what the loader can tell before anything is made.
PATHS = [
    ('state_dir = "/etc/passwd"', "is a file, not a directory"),
    ('state_dir = "/etc/passwd/mailwright"', "/etc/passwd is a file, not a directory"),
    ('[queue]\ndirectory = "cert.pem"', "is a file, not a directory"),
    (
        '[auth]\nusers_db = "/tmp"',
        'is a directory (fix: name the database file, e.g. users_db = "/tmp/users.db")',
    ),
    (
        '[tls]\ncert = "/nonexistent/a.pem"\nkey = "/nonexistent/b.pem"',
        "cannot read it: No such file or directory",
    ),
    ('[tls]\ncert = "/tmp"\nkey = "/tmp"', "is a directory, not a PEM file"),
    ('[tls]\ncert = "/dev/zero"\nkey = "/dev/zero"', "is a device, FIFO or socket, not a PEM file"),
    ('[tls]\ncert = "FIFO"\nkey = "FIFO"', "is a device, FIFO or socket, not a PEM file"),
    ('[tls]\ncert = "cert.pem"', "tls.cert is set but tls.key is not"),
    ('user = "root"', "user 'root' is root (uid 0): it gives up nothing (fix: name another user)"),
    ('user = "no-such-user-here"', "useradd --system --no-create-home"),
]


@pytest.mark.parametrize(("text", "says"), PATHS, ids=[p[0] for p in PATHS])
def test_paths_and_accounts(tmp_path: Path, text: str, says: str) -> None:
    # Before: a FIFO or /dev/zero as a certificate hung `config check` and `serve` for good.
    (tmp_path / "cert.pem").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    done, path = check(tmp_path, text.replace("FIFO", str(tmp_path / "fifo")) + "\n")
    refused(done, 2, f"{path}:", says)


def _pem_pair(tmp_path: Path, name: str, cert: bytes, key: bytes) -> str:
    (tmp_path / f"{name}.crt").write_bytes(cert)
    (tmp_path / f"{name}.key").write_bytes(key)
    return f'hostname = "mail.example.org"\n[tls]\ncert = "{name}.crt"\nkey = "{name}.key"\n'


def _tls_cases(tmp_path: Path) -> dict[str, tuple[str, int, str]]:
    ca = trustme.CA()
    leaf = ca.issue_cert("mail.example.org")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    key = leaf.private_key_pem.bytes()
    now = dt.datetime.now(dt.UTC)
    old = ca.issue_cert(
        "mail.example.org", not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=1)
    )
    loaded = serialization.load_pem_private_key(key, None)
    der_key = loaded.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    weak = rsa.generate_private_key(65537, 1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.org")])
    weak_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(weak.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(weak, hashes.SHA256())
    )
    der_cert = x509.load_pem_x509_certificate(chain).public_bytes(serialization.Encoding.DER)
    enc = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    pem = serialization.Encoding.PEM
    return {
        # (configuration, exit status, what it says)
        "swapped": (
            _pem_pair(tmp_path, "swapped", key, chain),
            2,
            "holds a private key, not a certificate: are cert and key the other way round?",
        ),
        "empty": (
            _pem_pair(tmp_path, "empty", b"", key),
            2,
            "is empty (fix: cert names the certificate chain in PEM",
        ),
        "not PEM": (
            _pem_pair(tmp_path, "junk", b"hello\n", key),
            2,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----) (fix: ",
        ),
        "DER cert": (
            _pem_pair(tmp_path, "der", der_cert, key),
            2,
            "holds a DER certificate, not PEM (fix: convert it, openssl x509 -inform der",
        ),
        "DER key": (
            _pem_pair(tmp_path, "derkey", chain, der_key),
            2,
            "holds a DER key, not PEM (fix: convert it, openssl pkey -inform der",
        ),
        "key is a cert": (
            _pem_pair(tmp_path, "keycert", chain, chain),
            2,
            "holds a certificate, not a private key",
        ),
        "other key": (
            _pem_pair(tmp_path, "other", chain, ca.issue_cert("mail.example.org").private_key_pem.bytes()),
            2,
            "does not match certificate file",
        ),
        "CA first": (
            _pem_pair(tmp_path, "cafirst", ca.cert_pem.bytes() + chain, key),
            2,
            "the first certificate in cafirst.crt must be the server's own",
        ),
        "encrypted key": (
            _pem_pair(tmp_path, "enc", chain, enc),
            2,
            "is encrypted, and the server cannot ask for its passphrase (fix: decrypt it",
        ),
        "1024-bit RSA": (
            _pem_pair(
                tmp_path,
                "weak",
                weak_cert.public_bytes(pem),
                weak.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            ),
            2,
            "ee key too small (_ssl.c:",
        ),
        "expired": (
            _pem_pair(
                tmp_path, "old", b"".join(b.bytes() for b in old.cert_chain_pems), old.private_key_pem.bytes()
            ),
            0,
            "warning: the TLS certificate expired on ",
        ),
    }


TLS_CASES = [
    "swapped",
    "empty",
    "not PEM",
    "DER cert",
    "DER key",
    "key is a cert",
    "other key",
    "CA first",
    "encrypted key",
    "1024-bit RSA",
    "expired",
]


@pytest.mark.parametrize("case", TLS_CASES)
def test_certificate_and_key_are_loaded_as_the_server_loads_them(tmp_path: Path, case: str) -> None:
    # Before: swapped files, an empty file and any junk were all "a DER file converts with: ..."; a
    # key OpenSSL finds too weak said why but not what to do.
    text, code, says = _tls_cases(tmp_path)[case]
    done, path = check(tmp_path, text)
    if code == 0:
        assert done.code == 0 and "Traceback" not in done.err, done
        assert says in done.out and "(fix: renew it" in done.out, done.out
        return
    if case == "1024-bit RSA" and done.code == 0:
        pytest.skip("this machine's OpenSSL takes 1024-bit RSA keys")
    err = refused(done, 2, f"{path}: [tls]: ", says)
    assert len(err.splitlines()) == 1, err
    if case == "1024-bit RSA":
        assert "(fix: the key is too small for OpenSSL's security level" in err


def test_a_taken_port_does_not_fail_the_check(tmp_path: Path) -> None:
    """`config check` tries each address on port 0: a running server (or anything else) on the
    configured port is no problem of the configuration."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done, path = check(tmp_path, f'[[listeners]]\nrole = "mx"\naddress = "127.0.0.1"\nport = {port}\n')
    assert done.code == 0 and done.out.startswith(f"OK: {path}: mx 127.0.0.1:{port}"), done


def test_limits_no_machine_can_meet_are_warned_of_with_a_fix_that_works(tmp_path: Path) -> None:
    """Valid, but the server would refuse every message (min_free larger than the disk) or could
    never get the files it needs. Before: no word of the first; for the second, the fix "ulimit -n
    9223372036854775936", which no kernel allows."""
    text = f"[limits]\nmax_connections = {BIG}\n[queue]\nmin_free = {BIG}\n"
    done, path = check(tmp_path, text)
    assert done.code == 0 and done.out.startswith(f"OK: {path}: "), done
    warnings = [line for line in done.out.splitlines() if line.startswith("warning: ")]
    (room,) = [line for line in warnings if "queue.min_free" in line]
    assert f"queue.min_free = {BIG} is more than the file system of " in room
    assert "every message gets 452 4.3.1 (fix: set it to what must stay free" in room
    (files,) = [line for line in warnings if "limits.max_connections" in line]
    assert "ulimit -n 9" not in files, files
    if os.path.exists("/proc/sys/fs/nr_open"):
        assert "(fix: lower limits.max_connections: this system lets no process open more than " in files
