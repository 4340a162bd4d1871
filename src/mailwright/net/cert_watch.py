"""Keeps an eye on the certificate the server serves: says what it is, and what is wrong with it.

`CertificateWatch.announce` is called when a certificate starts being served (start-up, and each
reload that succeeded): one INFO line with its facts and a WARNING for each problem
(`net.cert_checks.certificate_problems`). `check` repeats the warnings alone; the owner calls it
once `due` (a `time.monotonic()` value) has passed: just after the problems change (the
certificate becomes valid, enters its last 14 days, expires) and once a day while it has any,
so that a renewal that failed on a server running for months is seen before clients refuse it.

Invariants: one watch per server (the single process, or the prefork master), so each line is
logged once, not once per worker; the facts are those of the certificate last loaded, not of
whatever the file holds now (a file replaced without a reload is not what clients see).

Not responsible for: loading or reloading the certificate (`net.tls`), or scheduling (the owner's
event loop or poll loop waits until `due`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from pathlib import Path

from mailwright.net.cert_checks import certificate_problems, next_check
from mailwright.net.tls import CertificateFacts, TLSConfigError, describe_certificate

log = logging.getLogger("mailwright")


class CertificateWatch:
    def __init__(self, hostname: str, *, generated: bool) -> None:
        self.hostname = hostname
        self.generated = generated  # made by the server: its being self-signed is no news
        self.facts: CertificateFacts | None = None
        self.due = math.inf  # nothing to look at until a certificate is announced

    def announce(self, cert: Path) -> None:
        """`cert` is served from now on (its loader has accepted it)."""
        try:
            self.facts = describe_certificate(cert)
        except TLSConfigError as exc:  # replaced again since it was loaded: say so, serve on
            log.warning("the TLS certificate now served cannot be described: %s", exc)
            self.facts, self.due = None, math.inf
            return
        log.info("TLS certificate: %s", self.facts)
        self.check()

    def check(self) -> None:
        """Log the current problems, and when to look again."""
        if self.facts is None:
            return
        now = dt.datetime.now(dt.UTC)
        for problem in certificate_problems(self.facts, self.hostname, now, generated=self.generated):
            log.warning("%s", problem)
        self.due = time.monotonic() + next_check(self.facts, now).total_seconds()
