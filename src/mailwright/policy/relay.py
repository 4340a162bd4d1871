"""Who may send where: the no-open-relay rule and sender ownership (RFC 5321 3.6, RFC 6409 6.1).

Rules:
- A client that has not authenticated may only send to domains this server accepts mail
  for (`local_domains` and `relay_domains`); anything else gets 554 5.7.1 "Relay access
  denied".  No IP address is trusted for relaying, loopback included, so the relay hole a
  trusted network can hide does not exist here.
- Routing tricks are refused for unauthenticated clients even toward our own domains:
  '%' (the percent hack), '!' (UUCP bang paths) and '@' inside a quoted local part, as
  Postfix's `allow_untrusted_routing = no`.  A downstream MTA could otherwise turn
  "user%elsewhere@our.domain" into mail for elsewhere.  Source routes never reach here:
  the address parser drops them (RFC 5321 C).  Address literals are not our domains.
- postmaster at our own hostname is always accepted (RFC 5321 4.5.1).
- An authenticated user may send anywhere, but only from the sender addresses it owns
  when `sender_must_be_owned` is set (553 5.7.1 otherwise).  The null sender is allowed.

Not responsible for: authentication itself, rate limits, recipient existence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from mailwright.protocol.address import Address, comparable_domain
from mailwright.protocol.reply import R, Reply

_ROUTING: Final = ("%", "!", "@")


class RelayPolicy:
    def __init__(
        self, local_domains: Iterable[str], relay_domains: Iterable[str] = (), *, hostname: str = ""
    ) -> None:
        self.local_domains = frozenset(comparable_domain(d) for d in local_domains)
        self.relay_domains = frozenset(comparable_domain(d) for d in relay_domains)
        self.hostname = comparable_domain(hostname) if hostname else ""

    def accepts_domain(self, address: Address) -> bool:
        if address.is_literal:
            return False
        domain = address.ascii_domain
        return domain in self.local_domains or domain in self.relay_domains

    def _is_hostname(self, address: Address) -> bool:
        return not address.is_literal and address.ascii_domain == self.hostname

    def check_recipient(self, rcpt: Address, *, authenticated: bool) -> Reply | None:
        if authenticated:
            return None
        # RFC 5321 4.5.1: postmaster at this host is always accepted ("<Postmaster>" too).
        if self.hostname and rcpt.local.lower() == "postmaster" and self._is_hostname(rcpt):
            return None
        if not self.accepts_domain(rcpt) or any(c in rcpt.local for c in _ROUTING):
            return R.RELAY_DENIED
        return None


def check_sender(
    sender: Address | None,
    user: str | None,
    *,
    must_be_owned: bool,
    owns: Callable[[str, str], bool],
) -> Reply | None:
    if user is None or sender is None or not must_be_owned:
        return None
    if owns(user, str(sender)):
        return None
    return R.SENDER_NOT_OWNED
