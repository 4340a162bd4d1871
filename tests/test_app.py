"""Wiring: what each listener role offers, and how `run` reports a listener it cannot start."""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path

import pytest

from mailwright import app
from mailwright.app import listener_settings
from mailwright.config.schema import ListenerConfig, default_config
from mailwright.prefork import master


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return dataclasses.replace(
        default_config({"MAILWRIGHT_STATE_DIR": str(tmp_path)}, is_root=False), hostname="mx.test"
    )


def test_roles(config) -> None:  # type: ignore[no-untyped-def]
    mx = listener_settings(config, ListenerConfig("mx", port=25), tls=True)
    assert (mx.tls_available, mx.tls_active, mx.auth_mechanisms, mx.auth_required) == (True, False, (), False)
    sub = listener_settings(config, ListenerConfig("submission", port=587), tls=True)
    assert sub.tls_available and not sub.tls_active and sub.auth_required and "PLAIN" in sub.auth_mechanisms
    subs = listener_settings(config, ListenerConfig("submissions", port=465), tls=True)
    assert subs.tls_active and not subs.tls_available and subs.auth_required


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.0.2.1", False),
    ],
)
def test_plaintext_auth_only_on_loopback(config, address: str, allowed: bool) -> None:  # type: ignore[no-untyped-def]
    lc = ListenerConfig("submission", address=address, port=587, allow_plaintext_auth=True)
    assert listener_settings(config, lc, tls=True).allow_plaintext_auth is allowed
    lc = ListenerConfig("submission", address=address, port=587)
    assert listener_settings(config, lc, tls=True).allow_plaintext_auth is False


def test_an_unresolvable_listener_address_is_named_with_a_fix(
    config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    # Before: "cannot start: [Errno -2] Name or service not known", naming no listener.  The
    # resolver's answer is stood in for: a real lookup of an unknown name would leave loopback.
    listeners = (
        ListenerConfig("mx", "127.0.0.1", 2525),
        ListenerConfig("submission", "mail.example.test", 2587),
    )
    cfg = dataclasses.replace(config, listeners=listeners, workers=2)

    def no_such_name(config: object, workers: int, sockets: object = None) -> int:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(master, "run_master", no_such_name)
    with caplog.at_level(logging.ERROR, logger="mailwright"):
        assert app.run(cfg) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "cannot start: cannot resolve the listener address 'mail.example.test': Name or service not"
        ' known (fix: write an IP address of this machine, e.g. address = "0.0.0.0", or a host name'
        " that resolves to one)"
    ]
