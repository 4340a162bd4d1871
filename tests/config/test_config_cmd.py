"""Tests for `mailwright config check|show` handlers (mailwright.cli.config_cmd)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path

import pytest
import trustme

from mailwright.cli import config_cmd
from mailwright.config.loader import load


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailwright")
    config_cmd.register(p.add_subparsers())
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


GOOD = """
hostname = "mail.example.org"
state_dir = "state"
local_domains = ["example.org"]

[[listeners]]
role = "mx"
address = "0.0.0.0"
port = 2500

[[listeners]]
role = "submission"
address = "127.0.0.1"
port = 5870
allow_plaintext_auth = true

[auth]
mechanisms = ["PLAIN", "CRAM-MD5"]

[limits]
max_message_size = 1000000
data_timeout = 200
stop_timeout = 12
"""


def test_check_ok_prints_summary_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text(GOOD)
    assert run(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    first, *rest = out.splitlines()
    assert first == (f"OK: {path}: mx 0.0.0.0:2500 (STARTTLS), submission 127.0.0.1:5870 (STARTTLS)")
    assert any(line.startswith("warning: auth.mechanisms includes CRAM-MD5") for line in rest)


def test_check_error_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text('[limits]\nmax_recipients = 0\n[[listeners]]\nrole = "mxx"\n')
    assert run(["config", "check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}:2: limits.max_recipients = 0: must be a whole number >= 1" in captured.err
    assert (
        f"{path}:4: listeners[0].role = \"mxx\": unknown listener role (fix: did you mean 'mx'?)"
        in captured.err
    )
    assert "Traceback" not in captured.err


def with_certificate(
    tmp_path: Path, names: tuple[str, ...], days: float = 90, other_key: bool = False
) -> Path:
    """GOOD with [tls] naming a CA-issued certificate for `names`, valid for `days` more days (and
    the key of another certificate with `other_key`)."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*names, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=days))
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    (ca.issue_cert(*names) if other_key else leaf).private_key_pem.write_to_path(str(key))
    path = tmp_path / "mailwright.toml"
    path.write_text(GOOD.replace("[auth]", f'[tls]\ncert = "{cert}"\nkey = "{key}"\n\n[auth]'))
    return path


def test_check_loads_the_certificate_and_names_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = with_certificate(tmp_path, ("www.example.org",), days=3.5)
    assert run(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    (facts,) = [line for line in out if line.startswith("TLS certificate: ")]
    assert "(DNS:www.example.org), issued by " in facts
    warnings = [line for line in out if "TLS certificate" in line and line.startswith("warning: ")]
    assert len(warnings) == 2, out
    assert "expires on " in warnings[0] and ", in 3 days: its renewal has not happened" in warnings[0]
    assert (
        "does not name this server's hostname mail.example.org (its names: DNS:www.example.org)"
        in warnings[1]
    )
    assert not any("self-signed" in line for line in out)


def test_check_of_a_good_certificate_says_only_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = with_certificate(tmp_path, ("mail.example.org",))
    assert run(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TLS certificate: " in out and "TLS certificate" not in "".join(
        line for line in out.splitlines() if line.startswith("warning: ")
    )


def test_check_refuses_a_key_of_another_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = with_certificate(tmp_path, ("mail.example.org",), other_key=True)
    assert run(["config", "check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"{path}: [tls]: ") and "privkey.pem" in line, line
    assert "Traceback" not in captured.err


def test_check_without_a_certificate_says_a_self_signed_one_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text(GOOD)
    assert run(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: no [tls] cert and key: the server serves a self-signed certificate it makes under " in out
    )
    assert "TLS certificate: " not in out


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "check", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read the configuration file" in capsys.readouterr().err


def test_show_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text(GOOD)
    original = load(path)
    assert run(["config", "show", "--config", str(path)]) == 0
    shown = tmp_path / "shown.toml"
    shown.write_text(capsys.readouterr().out)
    again = load(shown)
    assert dataclasses.replace(again, source=None) == dataclasses.replace(original, source=None)
    assert again.state_dir == tmp_path / "state"


def test_show_round_trips_the_user(tmp_path: Path) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text('user = "nobody"\n')
    text = config_cmd.render(load(path))
    assert 'user = "nobody"' in text
    shown = tmp_path / "shown.toml"
    shown.write_text(text)
    assert load(shown).user == "nobody"


def test_show_renders_tls_and_escapes(tmp_path: Path) -> None:
    (tmp_path / 'we"ird.pem').write_text("x")
    (tmp_path / "key.pem").write_text("x")
    path = tmp_path / "mailwright.toml"
    path.write_text('[tls]\ncert = "we\\"ird.pem"\nkey = "key.pem"\n')
    config = load(path)
    text = config_cmd.render(config)
    assert f'cert = "{tmp_path}/we\\"ird.pem"' in text
    shown = tmp_path / "shown.toml"
    shown.write_text(text)
    assert load(shown).tls == config.tls


def test_config_without_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config"]) == 2
    assert "check" in capsys.readouterr().err
