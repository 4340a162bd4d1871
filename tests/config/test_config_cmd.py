"""Tests for `mailwright config check|show` handlers (mailwright.cli.config_cmd)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

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
