"""Tests for mailwright.config.loader and schema: defaults, the documented example, and errors."""

from __future__ import annotations

import os
import socket
import textwrap
import threading
from pathlib import Path

import pytest

from mailwright.config import loader, schema
from mailwright.config.loader import ConfigError, load
from mailwright.config.schema import ListenerConfig, check_warnings, default_listeners, unprivileged_note


def write(tmp_path: Path, text: str, name: str = "mailwright.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, env={"HOME": str(path.parent)}, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_defaults_non_root(tmp_path: Path) -> None:
    config = load(None, env={"MAILWRIGHT_STATE_DIR": str(tmp_path)}, is_root=False)
    assert config.state_dir == tmp_path
    assert config.listeners == default_listeners(False)
    assert [(lc.role, lc.port) for lc in config.listeners] == [
        ("mx", 2500),
        ("submission", 5870),
        ("submissions", 4650),
        ("submission", 2525),
    ]
    assert all(lc.address == "127.0.0.1" for lc in config.listeners)
    assert config.queue.directory == tmp_path / "queue"
    assert config.users_db == tmp_path / "users.db"
    assert config.tls_dir == tmp_path / "tls"
    assert config.local_domains == (config.hostname.lower(),)
    assert config.auth.mechanisms == ("PLAIN", "LOGIN")
    assert config.limits.max_recipients == 100 and config.limits.command_timeout == 300.0
    note = unprivileged_note(config)
    assert note is not None and "2500" in note and "root" in note


def test_defaults_root_and_state_dir_choices(tmp_path: Path) -> None:
    config = load(None, env={}, is_root=True)
    assert config.state_dir == Path("/var/lib/mailwright")
    assert [(lc.role, lc.port) for lc in config.listeners] == [
        ("mx", 25),
        ("submission", 587),
        ("submissions", 465),
        ("submission", 2525),
    ]
    assert unprivileged_note(config) is None
    home = load(None, env={"HOME": str(tmp_path)}, is_root=False)
    assert home.state_dir == tmp_path / ".local" / "state" / "mailwright"


def _docstring_example() -> str:
    doc = loader.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


def test_documented_example_loads(tmp_path: Path) -> None:
    (tmp_path / "fullchain.pem").write_text("cert")
    (tmp_path / "privkey.pem").write_text("key")
    text = _docstring_example().replace("/etc/mailwright/", f"{tmp_path}/")
    assert "[[listeners]]" in text and "[limits]" in text
    # The account must exist where the file is loaded; nobody is on every Debian system.
    assert 'user = "mailwright"' in text
    text = text.replace('user = "mailwright"', 'user = "nobody"')
    config = load(write(tmp_path, text), env={}, is_root=True)
    assert config.user == "nobody"
    assert config.hostname == "mail.example.org"
    assert config.local_domains == ("example.org",) and config.relay_domains == ("example.net",)
    assert config.listeners == (
        ListenerConfig("mx", "0.0.0.0", 25),
        ListenerConfig("mx", "::", 25),
        ListenerConfig("submission", "127.0.0.1", 587, allow_plaintext_auth=True),
    )
    assert config.listeners[2].plaintext_auth_allowed
    assert config.tls.cert == tmp_path / "fullchain.pem" and config.tls.key == tmp_path / "privkey.pem"
    assert config.users_db == Path("/var/lib/mailwright/users.db")
    assert config.limits.max_message_size == 52428800
    assert config.limits.ipv6_prefix == 64
    assert config.queue.directory == Path("/var/lib/mailwright/queue")
    assert config.source == tmp_path / "mailwright.toml"


def test_listener_port_defaults_to_role_and_paths_are_relative_to_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        hostname = "mx.example.org"
        state_dir = "state"
        [[listeners]]
        role = "submissions"
        [queue]
        directory = "~/spool"
    """,
    )
    config = load(path, env={"HOME": "/home/op", "MAILWRIGHT_STATE_DIR": "/elsewhere"}, is_root=False)
    assert config.listeners == (ListenerConfig("submissions", "127.0.0.1", 465),)
    assert config.state_dir == tmp_path / "state"  # the file wins over the environment
    assert config.queue.directory == Path("/home/op/spool")
    assert config.users_db == tmp_path / "state" / "users.db"
    assert config.local_domains == ("mx.example.org",)


def test_range_error_names_line_key_and_fix(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        hostname = "mail.example.org"

        [limits]
        max_connections = 10
        max_recipients = -3
    """,
    )
    assert error_of(path) == (
        f"{path}:5: limits.max_recipients = -3: must be a whole number >= 1 (fix: set it to 100, the default)"
    )


def test_type_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [limits]
        max_recipients = "100"
        command_timeout = true
        [auth]
        sender_must_be_owned = "yes"
    """,
    )
    message = error_of(path)
    assert f'{path}:2: limits.max_recipients = "100": must be a whole number, not a string' in message
    assert "(fix: write it without quotes: max_recipients = 100)" in message
    assert f"{path}:3: limits.command_timeout = true: must be a number of seconds, not a boolean" in message
    assert f'{path}:5: auth.sender_must_be_owned = "yes": must be true or false' in message
    assert len(message.splitlines()) == 3  # every problem reported, one line each


def test_unknown_keys_suggest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        hostname = "mail.example.org"
        [limit]
        max_recipients = 5
        [auth]
        max_failure = 3
        [[listeners]]
        role = "mx"
        adress = "0.0.0.0"
    """,
    )
    message = error_of(path)
    assert f"{path}:2: limit: unknown key (fix: did you mean 'limits'?)" in message
    assert f"{path}:5: auth.max_failure: unknown key (fix: did you mean 'max_failures'?)" in message
    assert f"{path}:8: listeners[0].adress: unknown key (fix: did you mean 'address'?)" in message


def test_listener_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[listeners]]
        role = "submision"

        [[listeners]]
        role = "mx"
        port = 70000

        [[listeners]]
        port = 2525

        [[listeners]]
        role = "mx"
        address = "[::1]"
    """,
    )
    message = error_of(path)
    assert (
        f'{path}:2: listeners[0].role = "submision": unknown listener role '
        "(fix: did you mean 'submission'?)" in message
    )
    assert f"{path}:6: listeners[1].port = 70000: must be a whole number from 1 to 65535" in message
    assert f"{path}:8: listeners[2]: has no role (fix: add role = " in message
    assert (
        f'{path}:13: listeners[3].address = "[::1]": brackets are not needed (fix: write address = "::1")'
        in message
    )


def test_duplicate_and_wildcard_listeners(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[listeners]]
        role = "mx"
        address = "0.0.0.0"
        port = 2500
        [[listeners]]
        role = "submission"
        address = "127.0.0.1"
        port = 2500
        [[listeners]]
        role = "submission"
        address = "::1"
        port = 2500
        [[listeners]]
        role = "submissions"
        address = "::1"
        port = 2500
    """,
    )
    message = error_of(path)
    assert f"{path}:8: listeners[1].port = 2500: conflicts with listeners[0] on 0.0.0.0 port 2500" in message
    assert f"{path}:16: listeners[3].port = 2500: conflicts with listeners[2] on ::1 port 2500" in message
    # ::1 does not clash with the IPv4 wildcard, so listeners[2] itself is fine.
    assert len(message.splitlines()) == 2


def localhost_addresses() -> set[str]:
    return {str(i[4][0]) for i in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)}


@pytest.mark.parametrize("other", ["127.0.0.1", "0.0.0.0", "localhost", "::1", "::"])
def test_a_host_name_listener_clashes_by_what_it_resolves_to(tmp_path: Path, other: str) -> None:
    """Start-up binds every address a name resolves to (prefork.master.bind_listener): a clash
    the loader passed failed there with EADDRINUSE and a fix blaming "another server"."""
    bound = localhost_addresses()
    clash = {
        "127.0.0.1": "127.0.0.1" in bound,
        "0.0.0.0": any(":" not in a for a in bound),
        "localhost": True,
        "::1": "::1" in bound,
        "::": any(":" in a for a in bound),
    }[other]
    for first, second in (("localhost", other), (other, "localhost")):
        path = write(
            tmp_path,
            f'[[listeners]]\nrole = "mx"\naddress = "{first}"\nport = 2525\n'
            f'[[listeners]]\nrole = "submission"\naddress = "{second}"\nport = 2525\n'
            '[[listeners]]\nrole = "submissions"\naddress = "localhost"\nport = 4650\n',
        )
        if not clash:
            assert len(load(path, env={}).listeners) == 3
            continue
        shared = other if other in bound else sorted(a for a in bound if (":" in a) == (":" in other))[0]
        assert error_of(path).splitlines() == [
            f"{path}:8: listeners[1].port = 2525: conflicts with listeners[0] on {first} port 2525: both"
            f" would bind {shared} (fix: use a different port or address for one of them)"
        ]


def test_tls_pairs_and_unreadable_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    only_cert = write(tmp_path, f'[tls]\ncert = "{cert}"\n')
    assert f"{only_cert}:2: tls.cert: tls.cert is set but tls.key is not (fix: add key = " in error_of(
        only_cert
    )
    only_key = write(tmp_path, f'[tls]\nkey = "{cert}"\n', "b.toml")
    assert "tls.key is set but tls.cert is not (fix: add cert = " in error_of(only_key)
    missing = write(tmp_path, f'[tls]\ncert = "{cert}"\nkey = "missing.pem"\n', "c.toml")
    message = error_of(missing)
    assert f'{missing}:3: tls.key = "{tmp_path / "missing.pem"}": cannot read it: No such file' in message
    assert "(fix: check the path" in message


def test_mechanisms(tmp_path: Path) -> None:
    bad = write(tmp_path, '[auth]\nmechanisms = ["PLAIN", "DIGEST-MD5", "plain"]\n')
    message = error_of(bad)
    assert (
        "unknown SASL mechanism 'DIGEST-MD5'" in message
        and '(fix: choose from "PLAIN", "LOGIN", "CRAM-MD5")' in message
    )
    assert "PLAIN is listed twice" in message
    good = write(tmp_path, '[auth]\nmechanisms = ["plain", "CRAM-MD5"]\n', "good.toml")
    config = load(good, env={}, is_root=True)
    assert config.auth.mechanisms == ("PLAIN", "CRAM-MD5")
    assert any("CRAM-MD5" in w and "plaintext-equivalent" in w for w in check_warnings(config, is_root=True))


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'hostname = "a.example"\n\n[limits]\nmax_recipients = = 3\n')
    message = error_of(path)
    assert message.startswith(f"{path}:4: TOML syntax error:") and "(fix:" in message


def test_unreadable_and_non_utf8_file(tmp_path: Path) -> None:
    assert "cannot read the configuration file" in error_of(tmp_path / "nope.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'hostname = "caf\xe9.example"\n')
    assert "not UTF-8" in error_of(path)


def test_domains_and_hostname(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        hostname = "bad host"
        local_domains = ["Example.ORG", "ex@mple.org"]
        relay_domains = ["example.org"]
    """,
    )
    message = error_of(path)
    assert f'{path}:1: hostname = "bad host": is not a host name' in message
    assert (
        f'{path}:2: local_domains = ["Example.ORG", "ex@mple.org"]: "ex@mple.org" is not a domain name'
        in message
    )
    assert f'{path}:3: relay_domains = ["example.org"]: example.org is also in local_domains' in message


def test_idn_domains_are_read_as_idna2008(tmp_path: Path) -> None:
    """A name only IDNA 2003 takes could never match a recipient (protocol.address reads IDNA2008):
    it is refused with the fix; a U-label and its A-label are one domain."""
    path = write(
        tmp_path,
        """
        local_domains = ["b\u00fccher.example", "\uff42\u00fc\uff43\uff48\uff45\uff52.example"]
        relay_domains = ["xn--bcher-kva.example", "\u2603.example"]
    """,
    )
    message = error_of(path)
    fullwidth = "\uff42\u00fc\uff43\uff48\uff45\uff52.example"
    assert f'{fullwidth}" is not a domain name: it is not a valid internationalised' in message
    assert '\u2603.example" is not a domain name: it is not a valid internationalised' in message
    assert "xn--bcher-kva.example is also in local_domains" in message
    assert "write it in U-labels or A-labels" in message


def test_empty_listeners_and_bad_table_type(tmp_path: Path) -> None:
    path = write(tmp_path, "listeners = []\nlimits = 3\n")
    message = error_of(path)
    assert f"{path}:1: listeners: must be one or more [[listeners]] tables, not an empty list" in message
    assert f"{path}:2: limits = 3: must be a table, not a whole number" in message


def test_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[listeners]]
        role = "submission"
        address = "0.0.0.0"
        port = 587
        allow_plaintext_auth = true
        [limits]
        max_recipients = 10
        command_timeout = 30
    """,
    )
    config = load(path, env={}, is_root=False)
    assert not config.listeners[0].plaintext_auth_allowed
    warnings = "\n".join(check_warnings(config, is_root=False))
    assert "allow_plaintext_auth is ignored because 0.0.0.0 is not a loopback address" in warnings
    assert "port 587 is privileged" in warnings
    assert "RFC 5321 4.5.3.1.8" in warnings and "4.5.3.2.7" in warnings
    assert config.limits.command_timeout == 30.0 and isinstance(config.limits.command_timeout, float)
    assert "is privileged" not in "\n".join(check_warnings(config, is_root=True))


def test_stop_timeout_is_read_checked_and_warned_about(tmp_path: Path) -> None:
    assert load(None, env={}, is_root=False).limits.stop_timeout == 30.0
    config = load(write(tmp_path, "workers = 2\n[limits]\nstop_timeout = 2\n"), env={}, is_root=False)
    assert config.limits.stop_timeout == 2.0
    warnings = "\n".join(check_warnings(config, is_root=False))
    assert "limits.stop_timeout = 2.0: below the 5 s a worker may take on a stop" in warnings
    # One process kills nothing: the setting only shortens its own wait, so no warning.
    alone = load(write(tmp_path, "workers = 1\n[limits]\nstop_timeout = 2\n"), env={}, is_root=False)
    assert "stop_timeout" not in "\n".join(check_warnings(alone, is_root=False))
    path = write(tmp_path, "[limits]\nstop_timeout = 0\n")
    assert f"{path}:2: limits.stop_timeout = 0: must be a number of seconds > 0" in error_of(path)


def test_schema_listener_helpers() -> None:
    assert ListenerConfig("submission", "localhost", allow_plaintext_auth=True).plaintext_auth_allowed
    assert ListenerConfig("submission", "::1", allow_plaintext_auth=True).plaintext_auth_allowed
    assert not ListenerConfig("submission", "::1").plaintext_auth_allowed
    assert ListenerConfig("submissions", "::1", 465).describe() == "submissions [::1]:465 (implicit TLS)"
    assert schema.STANDARD_PORTS["mx"] == 25


def test_huge_and_infinite_numbers_are_errors_not_crashes(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\ncommand_timeout = 1" + "0" * 400 + "\n[auth]\nlockout = inf\n")
    message = error_of(path)
    assert f"{path}:2: limits.command_timeout = 1000" in message
    assert f"{path}:4: auth.lockout = inf: must be a number of seconds >= 0 and at most a year" in message


def test_clash_reported_against_the_right_entry_after_a_bad_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[listeners]]
        role = "bogus"
        [[listeners]]
        role = "mx"
        address = "127.0.0.2"
        port = 2500
        [[listeners]]
        role = "mx"
        address = "127.0.0.2"
        port = 2500
    """,
    )
    assert (
        f"{path}:10: listeners[2].port = 2500: conflicts with listeners[1] on 127.0.0.2 port 2500"
        in error_of(path)
    )


def test_workers_setting(tmp_path: Path) -> None:
    path = write(tmp_path, 'hostname = "mail.example.org"\nworkers = 3\n')
    config = load(path, env={"HOME": str(tmp_path)})
    assert config.workers == 3 and config.worker_count(cpus=64) == 3
    auto = load(write(tmp_path, 'hostname = "mail.example.org"\n', "auto.toml"), env={"HOME": str(tmp_path)})
    assert auto.workers == 0
    assert [auto.worker_count(cpus=n) for n in (1, 2, 8, 64)] == [1, 2, 8, schema.MAX_AUTO_WORKERS]
    bad = write(tmp_path, 'hostname = "mail.example.org"\nworkers = 300\n', "bad.toml")
    assert error_of(bad) == (
        f"{bad}:2: workers = 300: must be a whole number from 0 to 256 (fix: set it to 0, the default)"
    )
    quoted = write(tmp_path, 'workers = "2"\n', "quoted.toml")
    assert "(fix: write it without quotes: workers = 2)" in error_of(quoted)


def test_directories_that_cannot_be_created_are_errors(tmp_path: Path) -> None:
    # Before: `config check` said OK and `serve` failed with "[Errno 17] File exists".
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    path = write(
        tmp_path,
        """
        state_dir = "afile"

        [queue]
        directory = "afile/queue"

        [auth]
        users_db = "adir"
    """,
    )
    message = error_of(path)
    assert (
        f'{path}:1: state_dir = "afile": is a file, not a directory '
        "(fix: name a directory, which mailwright creates when missing, or move that file out of the way)"
    ) in message
    assert f'{path}:4: queue.directory = "afile/queue": {tmp_path / "afile"} is a file, not a directory' in (
        message
    )
    assert (
        f'{path}:7: auth.users_db = "adir": is a directory '
        f'(fix: name the database file, e.g. users_db = "{tmp_path / "adir" / "users.db"}")'
    ) in message
    under_file = write(tmp_path, '[auth]\nusers_db = "afile/users.db"\n', "b.toml")
    assert f'{under_file}:2: auth.users_db = "afile/users.db": {tmp_path / "afile"} is a file' in error_of(
        under_file
    )
    fine = write(tmp_path, 'state_dir = "new/state"\n[auth]\nusers_db = "adir/users.db"\n', "c.toml")
    config = load(fine, env={})
    assert config.state_dir == tmp_path / "new" / "state" and not config.state_dir.exists()


@pytest.mark.parametrize("address", ["999.1.1.1", "10.0.0", "192.168.1.300."])
def test_listener_address_that_is_a_mistyped_ip_is_an_error(tmp_path: Path, address: str) -> None:
    # Before: accepted as a host name; `serve` then failed with "Name or service not known".
    path = write(tmp_path, f'[[listeners]]\nrole = "mx"\naddress = "{address}"\nport = 2525\n')
    assert (
        f'{path}:3: listeners[0].address = "{address}": is not an IP address or host name (fix: '
        in error_of(path)
    )


def test_listener_host_names_with_digits_are_still_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[listeners]]\nrole = "mx"\naddress = "localhost"\nport = 2525\n'
        '[[listeners]]\nrole = "mx"\naddress = "1.example"\nport = 2526\n',
    )
    assert [lc.address for lc in load(path, env={}).listeners] == ["localhost", "1.example"]


def test_unreadable_file_fix_names_both_ways_of_giving_it(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.toml")
    assert message.endswith(
        "(fix: check the path given with --config or MAILWRIGHT_CONFIG, and its permissions)"
    )


def test_a_config_path_that_is_no_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # Before: /dev/zero was read until memory ran out; a directory gave "Is a directory" and a fix
    # that did not say what to do.
    assert error_of(Path("/dev/zero")) == (
        "/dev/zero: the configuration file is a device or socket "
        "(fix: give --config or MAILWRIGHT_CONFIG the path of a TOML file)"
    )
    assert error_of(tmp_path) == (
        f"{tmp_path}: the configuration file is a directory "
        f"(fix: name the file in it, e.g. --config {tmp_path / 'mailwright.toml'})"
    )
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    assert error_of(big).startswith(f"{big}: the configuration file is larger than 1 MiB")
    at_limit = tmp_path / "at-limit.toml"
    at_limit.write_bytes(b'hostname = "mx.example.org"\n' + b"#" * (1024 * 1024 - 29) + b"\n")
    assert at_limit.stat().st_size == 1024 * 1024
    assert load(at_limit, env={}).hostname == "mx.example.org"


def test_a_config_from_a_pipe_is_read(tmp_path: Path) -> None:
    # `--config <(envsubst < template)` hands over a pipe, not a file.
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=('hostname = "mx.example.org"\n',))
    writer.start()
    try:
        assert load(fifo, env={}).hostname == "mx.example.org"
    finally:
        writer.join(5)


def test_user_names_an_existing_unprivileged_account(tmp_path: Path) -> None:
    path = write(tmp_path, 'user = "nobody"\n')
    config = load(path, env={"HOME": str(tmp_path)})
    assert config.user == "nobody"
    assert load(write(tmp_path, "workers = 1\n", "none.toml"), env={}).user is None
    unknown = error_of(write(tmp_path, 'workers = 1\nuser = "no-such-user-here"\n', "unknown.toml"))
    assert (
        f"{tmp_path / 'unknown.toml'}:2: user = \"no-such-user-here\": user 'no-such-user-here' does not"
        in unknown
    )
    assert "useradd --system --no-create-home --shell /usr/sbin/nologin no-such-user-here" in unknown
    root = error_of(write(tmp_path, 'user = "root"\n', "root.toml"))
    assert "root.toml:1: user = \"root\": user 'root' is root (uid 0): it gives up nothing" in root
    assert "must be a non-empty string" in error_of(write(tmp_path, "user = 65534\n", "number.toml"))


def test_running_as_root_without_user_is_a_warning_once_other_hosts_can_connect(tmp_path: Path) -> None:
    exposed = '[[listeners]]\nrole = "mx"\naddress = "0.0.0.0"\n[[listeners]]\nrole = "submission"\n'
    config = load(write(tmp_path, exposed), env={})
    (warning,) = [w for w in check_warnings(config, is_root=True) if "user is not set" in w]
    assert warning.startswith("user is not set: started as root, the server stays root")
    assert "other hosts can connect to mx 0.0.0.0:25 (STARTTLS) (fix: create an unprivileged user" in warning
    assert not any("user is not set" in w for w in check_warnings(config, is_root=False))
    with_user = load(write(tmp_path, 'user = "nobody"\n' + exposed, "user.toml"), env={})
    assert not any("user is not set" in w for w in check_warnings(with_user, is_root=True))
    loopback = load(write(tmp_path, "workers = 1\n", "loopback.toml"), env={})
    assert not any("user is not set" in w for w in check_warnings(loopback, is_root=True))


def test_ipv6_listener_addresses_written_other_ways_get_the_address_to_write(tmp_path: Path) -> None:
    # "::ffff:127.0.0.1" passed the check and failed at start-up with EINVAL: an IPv6 listener has
    # IPV6_V6ONLY, which cannot bind an IPv4-mapped address. An SMTP address literal got the fix
    # 'write address = "IPv6:::1"', itself refused.
    path = write(
        tmp_path,
        """
        [[listeners]]
        role = "mx"
        address = "::ffff:127.0.0.1"

        [[listeners]]
        role = "submission"
        address = "[IPv6:::1]"

        [[listeners]]
        role = "submissions"
        address = "[::ffff:127.0.0.2]"

        [[listeners]]
        role = "mx"
        address = "[IPv6:nonsense]"
        port = 2500
    """,
    )
    assert error_of(path).splitlines() == [
        f'{path}:3: listeners[0].address = "::ffff:127.0.0.1": is an IPv4-mapped IPv6 address, which an'
        ' IPv6 listener cannot bind (fix: write the IPv4 address: address = "127.0.0.1")',
        f'{path}:7: listeners[1].address = "[IPv6:::1]": the brackets and the IPv6: tag are not needed'
        ' (fix: write address = "::1")',
        f'{path}:11: listeners[2].address = "[::ffff:127.0.0.2]": brackets are not needed'
        ' (fix: write address = "127.0.0.2")',
        f'{path}:15: listeners[3].address = "[IPv6:nonsense]": is not an IP address or host name'
        ' (fix: write an IP address of this machine, e.g. address = "0.0.0.0" (all IPv4) or "::" (all IPv6))',
    ]


def test_ipv6_wildcard_and_ipv4_wildcard_share_a_port_but_not_with_ipv6_addresses(tmp_path: Path) -> None:
    # Each IPv6 listener is IPv6-only, so "::" and "0.0.0.0" bind the same port side by side (tested
    # for real in tests/e2e/test_ipv6.py); "::" and "::1" cannot, in either order.
    ok = write(
        tmp_path,
        """
        [[listeners]]
        role = "mx"
        address = "::"
        port = 2500
        [[listeners]]
        role = "mx"
        address = "0.0.0.0"
        port = 2500
        [[listeners]]
        role = "submission"
        address = "::1"
        port = 5870
        [[listeners]]
        role = "submission"
        address = "127.0.0.1"
        port = 5870
    """,
    )
    assert len(load(ok, env={}).listeners) == 4
    clash = write(
        tmp_path,
        """
        [[listeners]]
        role = "mx"
        address = "::1"
        port = 2500
        [[listeners]]
        role = "mx"
        address = "::"
        port = 2500
        [[listeners]]
        role = "submission"
        address = "::"
        port = 5870
        [[listeners]]
        role = "submission"
        address = "0:0:0:0:0:0:0:1"
        port = 5870
    """,
        name="clash.toml",
    )
    assert error_of(clash).splitlines() == [
        f"{clash}:8: listeners[1].port = 2500: conflicts with listeners[0] on ::1 port 2500"
        " (fix: use a different port or address for one of them)",
        f"{clash}:16: listeners[3].port = 5870: conflicts with listeners[2] on :: port 5870"
        " (fix: use a different port or address for one of them)",
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("16", "must be a whole number from 32 to 128"),
        ("129", "must be a whole number from 32 to 128"),
        ('"64"', "must be a whole number, not a string"),
    ],
)
def test_ipv6_prefix_is_checked(tmp_path: Path, value: str, problem: str) -> None:
    path = write(tmp_path, f"[limits]\nmax_connections = 10\nipv6_prefix = {value}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: limits.ipv6_prefix = {value}: {problem} (fix: "), message
    if value != '"64"':
        assert "set it to 64, the default: the /64 one host is usually given" in message
    else:
        assert "write it without quotes: ipv6_prefix = 64" in message
    assert load(write(tmp_path, "[limits]\nipv6_prefix = 128\n", "ok.toml"), env={}).limits.ipv6_prefix == 128
