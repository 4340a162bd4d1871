"""What an operator is told about the certificate the server serves, before clients find out.

`certificate_problems` looks at the facts of the served certificate (`tls.describe_certificate`)
against the server's hostname and the current time and returns one line per problem, each with
its consequence and the fix:
- expired, or not valid yet: every client that verifies refuses the handshake;
- expiring within `EXPIRY_WARNING` (14 days): a renewal that did not happen (Let's Encrypt's
  clients renew 30 days ahead, so 14 days left means the renewal has failed for two weeks);
- `hostname` not among its names: submission clients connect by that name and verify it, and so
  do MTA-STS and DANE senders for an MX (RFC 6125 6.4: a `*` matches exactly one whole leftmost
  label; an IP address matches only an IP SAN; the subject's CN is not consulted, as browsers
  and Python's `ssl` no longer do);
- self-signed, when it was configured rather than generated (a generated one is announced by
  the caller): no client that verifies trusts it.

The server logs the facts and these lines at start-up and on every reload (SIGHUP), the lines
again when they change or once a day while there are any (`next_check`, `net.cert_watch`), and
`config check` prints them, as `nginx -t` loads the certificates it names.

Not responsible for: loading the files or matching the key (`tls.server_context`, whose errors
name the file), revocation (OCSP/CRL), or the chain's trust anchors (only clients know theirs).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Final

import idna

from mailwright.net.tls import CertificateFacts

EXPIRY_WARNING: Final = dt.timedelta(days=14)
REMINDER: Final = dt.timedelta(days=1)  # how often problems are said again while they last
_PAST: Final = dt.timedelta(seconds=1)  # checks land just past a boundary, never on it


def _matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 6.4.3: a DNS-ID with `*` as its whole leftmost label matches one label."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern == hostname:
        return True
    if not pattern.startswith("*."):
        return False
    first, dot, rest = hostname.partition(".")
    return bool(first and dot) and rest == pattern[2:] and "." in rest


def names_hostname(sans: tuple[str, ...], hostname: str) -> bool:
    """Whether the subject alternative names (as `describe_certificate` writes them) cover
    `hostname`; an internationalized name is compared as its A-labels, as certificates carry it."""
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        address = None
        if not hostname.isascii():
            try:
                hostname = idna.encode(hostname.rstrip("."), uts46=True).decode("ascii")
            except idna.IDNAError:
                return False
    for san in sans:
        kind, _, value = san.partition(":")
        if address is not None:
            if kind == "IP" and ipaddress.ip_address(value) == address:
                return True
        elif kind == "DNS" and _matches(value, hostname):
            return True
    return False


def certificate_problems(
    facts: CertificateFacts, hostname: str, now: dt.datetime, *, generated: bool = False
) -> list[str]:
    """One line per problem with the served certificate, each saying what clients will do."""
    out: list[str] = []
    left = facts.not_after - now
    if left <= dt.timedelta(0):
        out.append(
            f"the TLS certificate expired on {facts.not_after:%Y-%m-%d %H:%M} UTC: every client that "
            "verifies certificates refuses the handshake (fix: renew it, then `kill -HUP` the server)"
        )
    elif facts.not_before > now:
        out.append(
            f"the TLS certificate is not valid before {facts.not_before:%Y-%m-%d %H:%M} UTC: clients "
            "that verify certificates refuse it until then (fix: check this machine's clock)"
        )
    elif left < EXPIRY_WARNING:
        out.append(
            f"the TLS certificate expires on {facts.not_after:%Y-%m-%d %H:%M} UTC, in {left.days} "
            f"day{'s' if left.days != 1 else ''}: its renewal has not happened (fix: renew it, then "
            "`kill -HUP` the server)"
        )
    if not names_hostname(facts.sans, hostname):
        names = ", ".join(facts.sans) or "none"
        out.append(
            f"the TLS certificate does not name this server's hostname {hostname} (its names: "
            f"{names}): clients that connect by that name and verify it refuse the handshake "
            "(fix: a certificate for that name, or set hostname to one it names)"
        )
    if facts.self_signed and not generated:
        out.append(
            "the configured TLS certificate is self-signed: clients that verify certificates "
            "(submission clients by default, MTA-STS senders) refuse it (fix: a certificate "
            "from a CA, e.g. Let's Encrypt)"
        )
    return out


def next_check(facts: CertificateFacts, now: dt.datetime) -> dt.timedelta:
    """How long until the certificate's problems next change (it becomes valid, enters the last
    `EXPIRY_WARNING`, expires), or `REMINDER` if that is sooner: a server that runs for months
    says so when its certificate's renewal has failed, not only when it was last started."""
    moments = (facts.not_before, facts.not_after - EXPIRY_WARNING, facts.not_after)
    return min([REMINDER, *(m - now + _PAST for m in moments if m + _PAST > now)])
