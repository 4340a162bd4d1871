"""net.cert_checks: what an operator is told about the served certificate (real certificates from trustme)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from pathlib import Path

import pytest
import trustme

from mailwright.net.cert_checks import certificate_problems, names_hostname, next_check
from mailwright.net.cert_watch import CertificateWatch
from mailwright.net.tls import CertificateFacts, describe_certificate, ensure_self_signed

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def facts_of(tmp_path: Path, *names: str, days: tuple[float, float] = (-30, 60)) -> CertificateFacts:
    """A CA-issued leaf for `names`, valid from NOW + days[0] to NOW + days[1]."""
    leaf = trustme.CA().issue_cert(
        *names, not_before=NOW + dt.timedelta(days=days[0]), not_after=NOW + dt.timedelta(days=days[1])
    )
    path = tmp_path / "leaf.pem"
    path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return describe_certificate(path)


def test_a_good_certificate_has_nothing_to_say(tmp_path: Path) -> None:
    assert certificate_problems(facts_of(tmp_path, "mx.example.test"), "mx.example.test", NOW) == []


@pytest.mark.parametrize(
    ("days", "start"),
    [
        ((-90, -1), "the TLS certificate expired on "),
        ((-90, 0), "the TLS certificate expired on "),  # its last second has passed
        ((2, 90), "the TLS certificate is not valid before "),
        ((-80, 13.5), "the TLS certificate expires on "),
        ((-80, 1.5), "the TLS certificate expires on "),
    ],
)
def test_validity_problems_are_named_with_the_fix(
    tmp_path: Path, days: tuple[float, float], start: str
) -> None:
    (line,) = certificate_problems(facts_of(tmp_path, "mx.example.test", days=days), "mx.example.test", NOW)
    assert line.startswith(start), line
    assert "fix: " in line


def test_expiry_counts_whole_days_left(tmp_path: Path) -> None:
    (line,) = certificate_problems(
        facts_of(tmp_path, "mx.example.test", days=(-80, 13.5)), "mx.example.test", NOW
    )
    assert "in 13 days: its renewal has not happened" in line
    (line,) = certificate_problems(
        facts_of(tmp_path, "mx.example.test", days=(-80, 1.5)), "mx.example.test", NOW
    )
    assert "in 1 day: " in line
    assert (
        certificate_problems(facts_of(tmp_path, "mx.example.test", days=(-80, 14.01)), "mx.example.test", NOW)
        == []
    )


@pytest.mark.parametrize(
    ("sans", "hostname", "named"),
    [
        (("DNS:mx.example.test",), "mx.example.test", True),
        (("DNS:MX.Example.TEST",), "mx.example.test.", True),
        (("DNS:*.example.test",), "mx.example.test", True),
        (("DNS:*.example.test",), "example.test", False),  # the wildcard needs its one label
        (("DNS:*.example.test",), "a.mx.example.test", False),  # and only one
        (("DNS:*.test",), "example.test", False),  # no wildcard over a bare top-level domain
        (("DNS:m*.example.test",), "mx.example.test", False),  # partial wildcards are not honoured
        (("DNS:other.example.test", "DNS:mx.example.test"), "mx.example.test", True),
        (("IP:127.0.0.2",), "127.0.0.2", True),
        (("DNS:127.0.0.2",), "127.0.0.2", False),  # an address is matched by IP SANs only
        (("IP:::1",), "0:0::1", True),
        ((), "mx.example.test", False),
        (("DNS:xn--bcher-kva.example",), "bücher.example", True),  # an IDN, as its A-labels
        (("DNS:*.xn--bcher-kva.example",), "MX.Bücher.example", True),
    ],
)
def test_hostname_matching_follows_rfc_6125(sans: tuple[str, ...], hostname: str, named: bool) -> None:
    assert names_hostname(sans, hostname) is named


def test_a_name_mismatch_lists_the_names_it_has(tmp_path: Path) -> None:
    (line,) = certificate_problems(
        facts_of(tmp_path, "www.example.test", "127.0.0.1"), "mx.example.test", NOW
    )
    assert line.startswith("the TLS certificate does not name this server's hostname mx.example.test")
    assert "(its names: DNS:www.example.test, IP:127.0.0.1)" in line


def test_self_signed_is_a_problem_only_when_configured(tmp_path: Path) -> None:
    cert, _ = ensure_self_signed(tmp_path / "tls", "mx.example.test")
    facts = describe_certificate(cert)
    now = facts.not_before + dt.timedelta(days=1)
    assert certificate_problems(facts, "mx.example.test", now, generated=True) == []
    (line,) = certificate_problems(facts, "mx.example.test", now)
    assert line.startswith("the configured TLS certificate is self-signed"), line


def test_several_problems_each_get_a_line(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, "www.example.test", days=(-90, -1))
    lines = certificate_problems(facts, "mx.example.test", NOW)
    assert len(lines) == 2, lines
    assert lines[0].startswith("the TLS certificate expired on 2026-12-06 12:00 UTC: "), lines[0]
    assert lines[1].startswith("the TLS certificate does not name this server's hostname "), lines[1]


@pytest.mark.parametrize(
    ("days", "wait"),
    [
        ((-30, 60), dt.timedelta(days=1)),  # nothing changes soon: the daily look
        ((-30, 14.5), dt.timedelta(hours=12, seconds=1)),  # it enters its last 14 days
        ((-30, 3), dt.timedelta(days=1)),  # inside them: said again daily
        ((-30, 0.25), dt.timedelta(hours=6, seconds=1)),  # until it expires
        ((0.5, 90), dt.timedelta(hours=12, seconds=1)),  # it becomes valid
        ((-90, -2), dt.timedelta(days=1)),  # expired: daily
    ],
)
def test_the_next_check_comes_just_after_the_problems_change(
    tmp_path: Path, days: tuple[float, float], wait: dt.timedelta
) -> None:
    assert next_check(facts_of(tmp_path, "mx.example.test", days=days), NOW) == wait


def test_a_watch_says_what_it_cannot_describe_and_waits_for_the_next_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file was replaced again after it was loaded: the server serves on, says so, and
    schedules nothing until a certificate it can describe is announced."""
    watch = CertificateWatch("mx.example.test", generated=False)
    broken = tmp_path / "cert.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    with caplog.at_level(logging.INFO, logger="mailwright"):
        watch.announce(broken)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert (
        "cannot be described" in caplog.records[0].getMessage()
        and "cert.pem" in caplog.records[0].getMessage()
    )
    assert watch.due == math.inf
    caplog.clear()
    leaf = trustme.CA().issue_cert("mx.example.test")
    leaf.cert_chain_pems[0].write_to_path(str(broken))
    with caplog.at_level(logging.INFO, logger="mailwright"):
        watch.announce(broken)
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert 0 < watch.due - time.monotonic() <= 86_401
