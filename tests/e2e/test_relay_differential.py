"""No open relay and sender ownership, side by side: mailwright against a private Postfix+Dovecot.

`CASES` is a table of the envelopes an attacker or a confused client tries. Unauthenticated, on the
MX listener: recipients that route elsewhere through one of our domains (the percent hack, UUCP bang
paths, "@" in a quoted local part, source routes), near misses of our names (case, trailing dot,
subdomains, look-alikes, IDNA U-labels and A-labels, full-width and decomposed forms, address
literals of loopback), the postmaster forms of RFC 5321 4.5.1 with and without routing characters,
local_domains against relay_domains, and empty, long, 8-bit and SMTPUTF8 addresses. Authenticated
(STARTTLS, then AUTH PLAIN, on the submission listener): the same tricks must relay, and the sender
must be owned (`sender_must_be_owned`): other users' addresses, case variants, `--address @domain`
wildcards, the null sender, the AUTH= parameter, subaddresses, IDNA forms of owned domains.

- Always: a real `mailwright serve` must give each case the replies written in the table (RFC 5321
  3.6 and 4.5.1, RFC 6409 6.1, RFC 6531 3.3/3.4, RFC 3463 codes; the rules in policy/relay.py and
  users/store.py). Where all is accepted, the message is sent and the queue must hold exactly the
  sender and recipient written in the case (nothing rewritten into another domain) and the user
  that authenticated; where something is refused, DATA is refused and nothing is queued. And,
  whatever the table says, an unauthenticated recipient that reached the queue must be in one of
  our domains without routing characters, or postmaster at our host name.
- As root with Postfix and Dovecot installed: a private Postfix, configured as an operator would to
  match mailwright's documented rules (`REFERENCE`), gets the same cases, and the two must agree on
  the class of each reply but for `DELIBERATE`, where mailwright is stricter on purpose, each with
  its reason. That list is exact: a case on it that no longer differs fails too.

Not responsible for: the syntax of paths and parameters as such (test_envelope_differential.py),
AUTH dialogues (test_auth_differential.py), from which client address a rule holds (no address is
trusted: tests/interop/test_relay.py tries two).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import idna
import pytest

import spawn

from .differential import (
    Disagreements,
    Got,
    Wire,
    assert_table_ids,
    private_dovecot,
    private_postfix,
    reply_class,
)

HOSTNAME = "smtp.host.test"  # not one of the local domains: postmaster@ it is accepted by itself
# "bücher.test" written as a U-label and "faß.test" as its A-label in the configuration: either
# form must be the same domain on the wire. "fass.test" is what IDNA 2003 made of "faß.test".
LOCAL_DOMAINS = ("mx.test", "b\u00fccher.test", "xn--fa-hia.test")
RELAY_DOMAINS = ("relay.test",)
OURS = frozenset({"mx.test", "xn--bcher-kva.test", "xn--fa-hia.test", "relay.test"})

# user -> (password, the sender addresses it owns; () for the store's default, its own name).
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    spawn.USER: (spawn.PASSWORD, ()),
    "bob@mx.test": ("bob's password", ()),
    "carol": ("carol's password", ("carol@mx.test", "@relay.test")),
    "dave": ("dave's password", ("@b\u00fccher.test",)),
    "erin": ("erin's password", ("@fa\u00df.test",)),
    "frank": ("frank's password", ("@fass.test",)),
}

# Postfix 3.7 as mailwright's documented rules say (README, policy/relay.py): mail for our domains
# from anyone, relaying only after AUTH, no trusted network (loopback included), no routing through
# relay_domains, postmaster at the host name accepted (RFC 5321 4.5.1), relay_domains without
# their subdomains, and the owner map of the user store for authenticated senders. Both IDNA forms
# of our domains are listed, but for "faß.test": Postfix folds the case of UTF-8 table keys fully,
# "ß" to "ss", so listing "faß.test" would make "fass.test" ours too (tried: it accepts
# u@fass.test then, and gives frank "@faß.test").
REFERENCE: dict[str, str] = {
    "myhostname": HOSTNAME,
    "mydestination": "mx.test, xn--bcher-kva.test, b\u00fccher.test, xn--fa-hia.test",
    "relay_domains": "relay.test",
    "parent_domain_matches_subdomains": "debug_peer_list, fast_flush_domains, mynetworks, "
    "permit_mx_backup_networks, qmqpd_authorized_clients, smtpd_access_maps",
    "mynetworks": "",
    "allow_untrusted_routing": "no",
    "smtpd_sasl_auth_enable": "yes",
    "smtpd_sasl_type": "dovecot",
    "smtpd_tls_auth_only": "yes",
    # Sender restrictions answered at MAIL, as mailwright's ownership check.
    "smtpd_delay_reject": "no",
    "smtpd_sender_login_maps": "inline:{ alice@mx.test=alice@mx.test, bob@mx.test=bob@mx.test, "
    "carol@mx.test=carol, @relay.test=carol, @xn--bcher-kva.test=dave, @b\u00fccher.test=dave, "
    "@xn--fa-hia.test=erin, @fass.test=frank }",
    "smtpd_sender_restrictions": "reject_authenticated_sender_login_mismatch",
    "smtpd_relay_restrictions": "permit_sasl_authenticated, "
    f"check_recipient_access inline:{{ postmaster@{HOSTNAME}=OK }}, reject_unauth_destination",
}

SENDER = "<s@client.test>"
FOREIGN = "<u@evil.test>"
OK_MAIL = "250 2.1.0"
OK_RCPT = "250 2.1.5"
RELAY_DENIED = "554 5.7.1"  # RFC 5321 3.6.2, RFC 3463 5.7.1: delivery not authorized
BAD_RCPT = "501 5.1.3"  # RFC 3463 5.1.3: bad destination mailbox address syntax
BAD_SENDER = "501 5.1.7"  # RFC 3463 5.1.7: bad sender's mailbox address syntax
NEEDS_UTF8 = "553 5.6.7"  # RFC 6531 3.4: non-ASCII address without SMTPUTF8
NOT_OWNED = "553 5.7.1"  # RFC 6409 6.1: sender not authorized for this user


@dataclass(frozen=True)
class Case:
    """`user`: None for an unauthenticated session on the MX listener, else the user that AUTHs on
    submission. `expect`: mailwright's replies to MAIL and then RCPT (RCPT only when MAIL got
    250). `stored`: for a case accepted whole, the (sender, recipient) the queue must hold."""

    id: str
    user: str | None
    mail: bytes
    rcpt: bytes
    expect: tuple[str, ...]
    stored: tuple[str, str] | None


CASES: list[Case] = []


def _inside(path: str) -> str:
    """The mailbox of a plain path as written ("<u@mx.test> NOTIFY=NEVER" gives "u@mx.test"); a
    path with quotes, a route or no domain must say what is stored, so none is guessed."""
    text = path[1 : path.index(">")] if path.startswith("<") else ""
    assert text == "" or ("@" in text and '"' not in text and not text.startswith("@")), path
    return text


def _add(
    id: str,
    user: str | None,
    mail: str,
    rcpt: str | bytes,
    expect: tuple[str, ...],
    stored: str | None,
    sender: str | None = None,
) -> None:
    stored_pair = None
    if expect == (OK_MAIL, OK_RCPT):
        assert isinstance(rcpt, str)
        stored_pair = (
            sender if sender is not None else _inside(mail),
            stored if stored is not None else _inside(rcpt),
        )
    raw_rcpt = rcpt if isinstance(rcpt, bytes) else rcpt.encode()
    CASES.append(Case(id, user, mail.encode(), raw_rcpt, expect, stored_pair))


def mx(id: str, rcpt: str | bytes, expect: str, stored: str | None = None, mail: str = SENDER) -> None:
    """An unauthenticated recipient on the MX listener: MAIL must pass, RCPT gets `expect`."""
    _add(id, None, mail, rcpt, (OK_MAIL, expect), stored)


def sub(
    id: str,
    user: str,
    mail: str,
    expect: str,
    rcpt: str = FOREIGN,
    stored: str | None = None,
    sender: str | None = None,
) -> None:
    """An authenticated session: "250 2.1.0 / 250 2.1.5" or the one refusal of MAIL or RCPT;
    `stored` and `sender` where the queue holds other than the paths' text."""
    _add(id, user, mail, rcpt, tuple(expect.split(" / ")), stored, sender)


U = " SMTPUTF8"
SENDER8 = SENDER + U
ALICE = "<alice@mx.test>"
ACCEPTED = f"{OK_MAIL} / {OK_RCPT}"
LONG_LABEL = "d" * 63

# -- our domains and the plainly foreign ones ---------------------------------------------------
mx("local", "<u@mx.test>", OK_RCPT)
mx("local-upper-domain", "<u@MX.TEST>", OK_RCPT)
mx("local-mixed-case", "<U@Mx.Test>", OK_RCPT)
mx("local-quoted", '<"u"@mx.test>', OK_RCPT, stored="u@mx.test")
mx("local-quoted-space", '<"u v"@mx.test>', OK_RCPT, stored='"u v"@mx.test')
mx("local-subaddress", "<u+tag@mx.test>", OK_RCPT)
mx("local-notify", "<u@mx.test> NOTIFY=NEVER", OK_RCPT)
# An original recipient elsewhere (RFC 3461 4.2) is a note for DSNs; it routes nothing.
mx("local-orcpt-foreign", "<u@mx.test> ORCPT=rfc822;u@evil.test", OK_RCPT)
mx("local-utf8-local-part", "<\u00fc@mx.test>", OK_RCPT, mail=SENDER8)
mx("local-null-sender", "<u@mx.test>", OK_RCPT, mail="<>")
mx("local-our-own-sender", "<u@mx.test>", OK_RCPT, mail=ALICE)
mx("relay", "<u@relay.test>", OK_RCPT)
mx("relay-upper", "<u@RELAY.TEST>", OK_RCPT)
mx("foreign", FOREIGN, RELAY_DENIED)
mx("foreign-upper", "<U@EVIL.TEST>", RELAY_DENIED)
mx("foreign-notify", "<u@evil.test> NOTIFY=NEVER", RELAY_DENIED)
# Neither a sender in our own domain nor the null sender buys relaying.
mx("foreign-our-own-sender", FOREIGN, RELAY_DENIED, mail=ALICE)
mx("foreign-null-sender", FOREIGN, RELAY_DENIED, mail="<>")
mx("foreign-utf8", "<u@\u4f8b\u5b50.\u5e7f\u544a>", RELAY_DENIED, mail=SENDER8)
mx("foreign-utf8-no-smtputf8", "<u@\u4f8b\u5b50.\u5e7f\u544a>", NEEDS_UTF8)
mx("foreign-dotless", "<u@evil>", RELAY_DENIED)
mx("hostname-not-local", f"<u@{HOSTNAME}>", RELAY_DENIED)

# -- the percent hack: "u%elsewhere@ours" is mail for elsewhere at a downstream MTA ------------
mx("pct-foreign", "<u%evil.test@mx.test>", RELAY_DENIED)
mx("pct-foreign-upper", "<u%EVIL.TEST@MX.TEST>", RELAY_DENIED)
mx("pct-foreign-via-relay-domain", "<u%evil.test@relay.test>", RELAY_DENIED)
mx("pct-foreign-via-hostname", f"<u%evil.test@{HOSTNAME}>", RELAY_DENIED)
mx("pct-twice", "<u%evil.test%mx.test@mx.test>", RELAY_DENIED)
mx("pct-to-local", "<u%mx.test@mx.test>", RELAY_DENIED)
mx("pct-to-relay-domain", "<u%relay.test@mx.test>", RELAY_DENIED)
mx("pct-local-via-relay-domain", "<u%mx.test@relay.test>", RELAY_DENIED)
mx("pct-quoted", '<"u%evil.test"@mx.test>', RELAY_DENIED)
mx("pct-quoted-pair", '<"u\\%evil.test"@mx.test>', RELAY_DENIED)
mx("pct-literal", '<"u%[192.0.2.1]"@mx.test>', RELAY_DENIED)
mx("pct-empty-domain", "<u%@mx.test>", RELAY_DENIED)
mx("pct-via-literal", "<u%evil.test@[127.0.0.1]>", RELAY_DENIED)
mx("pct-with-notify", "<u%evil.test@mx.test> NOTIFY=NEVER", RELAY_DENIED)
mx("pct-null-sender", "<u%evil.test@mx.test>", RELAY_DENIED, mail="<>")

# -- UUCP bang paths ----------------------------------------------------------------------------
mx("bang-foreign", "<evil.test!u@mx.test>", RELAY_DENIED)
mx("bang-to-local", "<mx.test!u@mx.test>", RELAY_DENIED)
mx("bang-two-hops", "<a.test!evil.test!u@mx.test>", RELAY_DENIED)
mx("bang-via-relay-domain", "<evil.test!u@relay.test>", RELAY_DENIED)
mx("bang-local-via-relay-domain", "<mx.test!u@relay.test>", RELAY_DENIED)
mx("bang-quoted", '<"evil.test!u"@mx.test>', RELAY_DENIED)
mx("bang-and-pct", "<evil.test!u%other.test@mx.test>", RELAY_DENIED)
mx("bang-trailing", "<u!@mx.test>", RELAY_DENIED)

# -- "@" inside a quoted local part ------------------------------------------------------------
mx("qat-foreign", '<"u@evil.test"@mx.test>', RELAY_DENIED)
mx("qat-to-local", '<"u@mx.test"@mx.test>', RELAY_DENIED)
mx("qat-via-relay-domain", '<"u@evil.test"@relay.test>', RELAY_DENIED)
mx("qat-local-via-relay-domain", '<"u@mx.test"@relay.test>', RELAY_DENIED)
mx("qat-quoted-pair", '<"u\\@evil.test"@mx.test>', RELAY_DENIED)
mx("qat-route", '<"@evil.test:u"@mx.test>', RELAY_DENIED)
mx("qat-two", '<"u@evil.test@other.test"@mx.test>', RELAY_DENIED)
mx("qat-hostname", f'<"u@evil.test"@{HOSTNAME}>', RELAY_DENIED)
# Unquoted, a second "@" or an escaped one is no path at all (RFC 5321 4.1.2).
mx("two-at", "<u@evil.test@mx.test>", BAD_RCPT)
mx("escaped-at-unquoted", "<u\\@evil.test@mx.test>", BAD_RCPT)

# -- source routes: ignored (RFC 5321 3.6.1, appendix C), so the last mailbox decides -----------
mx("route-to-foreign", "<@mx.test:u@evil.test>", RELAY_DENIED)
mx("route-two-hops-to-foreign", "<@mx.test,@relay.test:u@evil.test>", RELAY_DENIED)
mx("route-via-foreign-to-local", "<@evil.test:u@mx.test>", OK_RCPT, stored="u@mx.test")
mx("route-two-hops-to-local", "<@evil.test,@other.test:u@mx.test>", OK_RCPT, stored="u@mx.test")
mx("route-to-relay-domain", "<@evil.test:u@relay.test>", OK_RCPT, stored="u@relay.test")
mx("route-to-pct", "<@mx.test:u%evil.test@mx.test>", RELAY_DENIED)
mx("route-to-literal", "<@mx.test:u@[127.0.0.1]>", RELAY_DENIED)
mx("route-literal-hop", "<@[192.0.2.1]:u@mx.test>", BAD_RCPT)
mx("route-to-postmaster", f"<@evil.test:postmaster@{HOSTNAME}>", OK_RCPT, stored=f"postmaster@{HOSTNAME}")
mx("route-postmaster-to-foreign", f"<@{HOSTNAME}:postmaster@evil.test>", RELAY_DENIED)
mx("route-no-mailbox", "<@mx.test:>", BAD_RCPT)

# -- near misses of our names --------------------------------------------------------------------
mx("trailing-dot-local", "<u@mx.test.>", BAD_RCPT)
mx("trailing-dot-relay", "<u@relay.test.>", BAD_RCPT)
mx("trailing-dot-foreign", "<u@evil.test.>", BAD_RCPT)
mx("two-trailing-dots", "<u@mx.test..>", BAD_RCPT)
mx("leading-dot", "<u@.mx.test>", BAD_RCPT)
mx("subdomain-of-local", "<u@sub.mx.test>", RELAY_DENIED)
mx("subdomain-of-relay", "<u@sub.relay.test>", RELAY_DENIED)
mx("local-then-foreign", "<u@mx.test.evil.test>", RELAY_DENIED)
mx("relay-then-foreign", "<u@relay.test.evil.test>", RELAY_DENIED)
mx("local-under-relay", "<u@mx.test.relay.test>", RELAY_DENIED)
mx("prefix-glued", "<u@evilmx.test>", RELAY_DENIED)
mx("prefix-hyphen", "<u@evil-mx.test>", RELAY_DENIED)
mx("suffix-glued", "<u@mx.testevil>", RELAY_DENIED)
mx("first-label-only", "<u@mx>", RELAY_DENIED)
mx("tld-only", "<u@test>", RELAY_DENIED)
mx("shorter", "<u@x.test>", RELAY_DENIED)
mx("rn-for-m", "<u@rnx.test>", RELAY_DENIED)
mx("digit-for-letter", "<u@mx.te5t>", RELAY_DENIED)
mx("localhost", "<u@localhost>", RELAY_DENIED)
mx("localhost-localdomain", "<u@localhost.localdomain>", RELAY_DENIED)
mx("hostname-parent", "<u@host.test>", RELAY_DENIED)
mx("underscore-label", "<u@mx_test.test>", BAD_RCPT)
mx("space-in-domain", "<u@mx .test>", BAD_RCPT)

# -- IDNA: U-labels and A-labels name one domain; nothing else does ------------------------------
mx("idn-ulabel", "<u@b\u00fccher.test>", OK_RCPT, mail=SENDER8)
mx("idn-ulabel-upper", "<u@B\u00dcCHER.TEST>", OK_RCPT, mail=SENDER8)
mx("idn-alabel", "<u@xn--bcher-kva.test>", OK_RCPT)
mx("idn-alabel-upper", "<u@XN--BCHER-KVA.TEST>", OK_RCPT)
mx("idn-ulabel-no-smtputf8", "<u@b\u00fccher.test>", NEEDS_UTF8)
mx("idn-subdomain", "<u@sub.b\u00fccher.test>", RELAY_DENIED, mail=SENDER8)
mx("sharp-s-ulabel", "<u@fa\u00df.test>", OK_RCPT, mail=SENDER8)
mx("sharp-s-alabel", "<u@xn--fa-hia.test>", OK_RCPT)
mx("sharp-s-as-idna2003", "<u@fass.test>", RELAY_DENIED)
# UTS 46 maps these onto our "bücher.test"; none is a U-label (RFC 5890 2.3.2.1, RFC 6531 3.3).
mx("fullwidth-letters-and-umlaut", "<u@\uff42\u00fc\uff43\uff48\uff45\uff52.test>", BAD_RCPT, mail=SENDER8)
mx(
    "fullwidth-alabel",
    "<u@\uff58\uff4e\uff0d\uff0d\uff42\uff43\uff48\uff45\uff52\uff0d\uff4b\uff56\uff41.test>",
    BAD_RCPT,
    mail=SENDER8,
)
mx("decomposed-umlaut", "<u@bu\u0308cher.test>", BAD_RCPT, mail=SENDER8)
mx("ideographic-full-stop", "<u@b\u00fccher\u3002test>", BAD_RCPT, mail=SENDER8)
mx("fullwidth-ascii", "<u@\uff4d\uff58.test>", BAD_RCPT, mail=SENDER8)
mx("cyrillic-ha-for-x", "<u@m\u0445.test>", RELAY_DENIED, mail=SENDER8)
mx("cyrillic-ha-alabel", "<u@xn--m-gub.test>", RELAY_DENIED)
mx("cyrillic-es-in-relay", "<u@relay.t\u0435st>", RELAY_DENIED, mail=SENDER8)
mx("bogus-alabel", "<u@xn--zz.test>", RELAY_DENIED)
# Routing characters of other scripts are letters of a local part, not routes, to every MTA.
mx("fullwidth-percent", "<u\uff05evil.test@mx.test>", OK_RCPT, mail=SENDER8)
mx("fullwidth-at", "<u\uff20evil.test@mx.test>", OK_RCPT, mail=SENDER8)

# -- address literals are not our domains (policy/relay.py), loopback included -------------------
mx("literal-loopback", "<u@[127.0.0.1]>", RELAY_DENIED)
mx("literal-loopback-other", "<u@[127.0.0.2]>", RELAY_DENIED)
mx("literal-any", "<u@[0.0.0.0]>", RELAY_DENIED)
mx("literal-documentation", "<u@[192.0.2.1]>", RELAY_DENIED)
mx("literal-v6-loopback", "<u@[IPv6:::1]>", RELAY_DENIED)
mx("literal-v6-loopback-lower-tag", "<u@[ipv6:::1]>", RELAY_DENIED)
mx("literal-v6-loopback-long", "<u@[IPv6:0:0:0:0:0:0:0:1]>", RELAY_DENIED)
mx("literal-v4-mapped-loopback", "<u@[IPv6:::ffff:127.0.0.1]>", RELAY_DENIED)
mx("literal-postmaster", "<postmaster@[127.0.0.1]>", RELAY_DENIED)
mx("ip-without-brackets", "<u@127.0.0.1>", BAD_RCPT)
mx("literal-general", "<u@[x-tag:ours]>", BAD_RCPT)

# -- postmaster (RFC 5321 4.5.1): at our host name and domains, and "<Postmaster>" ----------------
PM = f"postmaster@{HOSTNAME}"
mx("pm-bare", "<postmaster>", OK_RCPT, stored=PM)
mx("pm-bare-upper", "<POSTMASTER>", OK_RCPT, stored=PM)
mx("pm-bare-mixed", "<PostMaster>", OK_RCPT, stored=PM)
mx("pm-bare-notify", "<postmaster> NOTIFY=NEVER", OK_RCPT, stored=PM)
mx("pm-bare-null-sender", "<postmaster>", OK_RCPT, stored=PM, mail="<>")
mx("pm-hostname", f"<{PM}>", OK_RCPT)
mx("pm-hostname-upper", "<Postmaster@SMTP.Host.Test>", OK_RCPT)
mx("pm-quoted-hostname", f'<"postmaster"@{HOSTNAME}>', OK_RCPT, stored=PM)
mx("pm-local", "<postmaster@mx.test>", OK_RCPT)
mx("pm-relay", "<postmaster@relay.test>", OK_RCPT)
mx("pm-foreign", "<postmaster@evil.test>", RELAY_DENIED)
mx("pm-localhost", "<postmaster@localhost>", RELAY_DENIED)
mx("pm-hostname-parent", "<postmaster@host.test>", RELAY_DENIED)
mx("pm-hostname-sub", f"<postmaster@sub.{HOSTNAME}>", RELAY_DENIED)
mx("pm-hostname-trailing-dot", f"<{PM}.>", BAD_RCPT)
mx("pm-pct", f"<postmaster%evil.test@{HOSTNAME}>", RELAY_DENIED)
mx("pm-pct-local", "<postmaster%evil.test@mx.test>", RELAY_DENIED)
mx("pm-bang", f"<evil.test!postmaster@{HOSTNAME}>", RELAY_DENIED)
mx("pm-qat", f'<"postmaster@evil.test"@{HOSTNAME}>', RELAY_DENIED)
mx("pm-subaddress", f"<postmaster+x@{HOSTNAME}>", RELAY_DENIED)
mx("pm-dotted", f"<post.master@{HOSTNAME}>", RELAY_DENIED)
mx("pm-longer", f"<postmasterx@{HOSTNAME}>", RELAY_DENIED)
mx("pm-long-s", f"<po\u017ftmaster@{HOSTNAME}>", RELAY_DENIED, mail=SENDER8)
mx("pm-bare-quoted", '<"postmaster">', BAD_RCPT)
mx("pm-bare-route", "<@evil.test:postmaster>", BAD_RCPT)
mx("pm-bare-text-after", "<postmaster>x", BAD_RCPT)

# -- empty, long, 8-bit -------------------------------------------------------------------------
mx("null-recipient", "<>", BAD_RCPT)
mx("empty-domain", "<u@>", BAD_RCPT)
mx("empty-local", "<@mx.test>", BAD_RCPT)
mx("no-domain", "<u>", BAD_RCPT)
mx("no-brackets-local", "u@mx.test", BAD_RCPT)
mx("no-brackets-foreign", "u@evil.test", BAD_RCPT)
mx("local-part-64", "<" + "a" * 64 + "@mx.test>", OK_RCPT)
mx("local-part-65", "<" + "a" * 65 + "@mx.test>", BAD_RCPT)
mx("local-part-65-foreign", "<" + "a" * 65 + "@evil.test>", BAD_RCPT)
mx("long-foreign-domain", f"<u@{LONG_LABEL}.{LONG_LABEL}.{LONG_LABEL}.evil.test>", RELAY_DENIED)
mx("long-subdomain-of-local", f"<u@{LONG_LABEL}.{LONG_LABEL}.{LONG_LABEL}.mx.test>", RELAY_DENIED)
mx("label-64-under-local", "<u@" + "d" * 64 + ".mx.test>", BAD_RCPT)
# Octets that are no UTF-8 make no command at all (RFC 5321 2.4 is 7-bit, RFC 6531 3.3 UTF-8).
NOT_UTF8 = "501 5.5.2"
mx("latin1-octet-in-domain", b"<u@mx\xe9.test>", NOT_UTF8)
mx("latin1-octet-in-local", b"<u\xe9@mx.test>", NOT_UTF8)
mx("invalid-utf8-in-domain", b"<u@mx\xc3.test>", NOT_UTF8, mail=SENDER8)

# -- authenticated: anywhere, the same tricks included, and the queue holds them as written --------
sub("auth-foreign", spawn.USER, ALICE, ACCEPTED)
sub("auth-foreign-upper", spawn.USER, ALICE, ACCEPTED, rcpt="<U@EVIL.TEST>")
sub("auth-local", spawn.USER, ALICE, ACCEPTED, rcpt="<bob@mx.test>")
sub("auth-pct", spawn.USER, ALICE, ACCEPTED, rcpt="<u%evil.test@mx.test>")
sub("auth-bang", spawn.USER, ALICE, ACCEPTED, rcpt="<evil.test!u@mx.test>")
sub(
    "auth-qat",
    spawn.USER,
    ALICE,
    ACCEPTED,
    rcpt='<"u@evil.test"@mx.test>',
    stored='"u@evil.test"@mx.test',
)
sub("auth-route", spawn.USER, ALICE, ACCEPTED, rcpt="<@mx.test:u@evil.test>", stored="u@evil.test")
sub("auth-literal", spawn.USER, ALICE, ACCEPTED, rcpt="<u@[192.0.2.1]>")
sub("auth-literal-v6", spawn.USER, ALICE, ACCEPTED, rcpt="<u@[IPv6:2001:db8::1]>")
sub("auth-postmaster", spawn.USER, ALICE, ACCEPTED, rcpt="<postmaster>", stored=PM)
sub("auth-idn-foreign", spawn.USER, ALICE + U, ACCEPTED, rcpt="<u@\u4f8b\u5b50.\u5e7f\u544a>")
sub(
    "auth-idn-no-smtputf8",
    spawn.USER,
    ALICE,
    f"{OK_MAIL} / {NEEDS_UTF8}",
    rcpt="<u@\u4f8b\u5b50.\u5e7f\u544a>",
)
sub("auth-sharp-s-as-idna2003", spawn.USER, ALICE, ACCEPTED, rcpt="<u@fass.test>")
sub("auth-trailing-dot", spawn.USER, ALICE, f"{OK_MAIL} / {BAD_RCPT}", rcpt="<u@evil.test.>")
sub(
    "auth-fullwidth",
    spawn.USER,
    ALICE + U,
    f"{OK_MAIL} / {BAD_RCPT}",
    rcpt="<u@\uff42\u00fc\uff43\uff48\uff45\uff52.test>",
)

# -- authenticated senders: only what the user owns (RFC 6409 6.1, users/store.py) ----------------
sub("own", spawn.USER, ALICE, ACCEPTED)
sub("own-domain-upper", spawn.USER, "<alice@MX.TEST>", ACCEPTED)
sub("own-quoted", spawn.USER, '<"alice"@mx.test>', ACCEPTED, sender="alice@mx.test")
sub("own-route", spawn.USER, "<@evil.test:alice@mx.test>", ACCEPTED, sender="alice@mx.test")
sub("own-null", spawn.USER, "<>", ACCEPTED)
sub("own-size", spawn.USER, "<alice@mx.test> SIZE=100", ACCEPTED)
# AUTH= (RFC 4954 5) says who submitted a message before; it lends no one's address here.
sub("own-auth-param-null", spawn.USER, "<alice@mx.test> AUTH=<>", ACCEPTED)
sub("own-auth-param-other", spawn.USER, "<alice@mx.test> AUTH=bob@mx.test", ACCEPTED)
sub("other-auth-param-self", spawn.USER, "<bob@mx.test> AUTH=alice@mx.test", NOT_OWNED)
sub("local-part-capitalised", spawn.USER, "<Alice@mx.test>", NOT_OWNED)
sub("all-capitals", spawn.USER, "<ALICE@MX.TEST>", NOT_OWNED)
sub("other-user", spawn.USER, "<bob@mx.test>", NOT_OWNED)
sub("other-user-owned-address", spawn.USER, "<carol@mx.test>", NOT_OWNED)
sub("other-user-wildcard-domain", spawn.USER, "<x@relay.test>", NOT_OWNED)
sub("own-local-part-foreign-domain", spawn.USER, "<alice@evil.test>", NOT_OWNED)
sub("own-local-part-subdomain", spawn.USER, "<alice@sub.mx.test>", NOT_OWNED)
sub("own-local-part-hostname", spawn.USER, f"<alice@{HOSTNAME}>", NOT_OWNED)
sub("own-local-part-literal", spawn.USER, "<alice@[127.0.0.1]>", NOT_OWNED)
sub("subaddress-plus", spawn.USER, "<alice+tag@mx.test>", NOT_OWNED)
sub("subaddress-hyphen", spawn.USER, "<alice-tag@mx.test>", NOT_OWNED)
sub("pct-own", spawn.USER, "<alice%mx.test@mx.test>", NOT_OWNED)
sub("pct-other", spawn.USER, "<bob%evil.test@mx.test>", NOT_OWNED)
sub("bang-own", spawn.USER, "<evil.test!alice@mx.test>", NOT_OWNED)
sub("qat-own-at-foreign", spawn.USER, '<"alice@mx.test"@evil.test>', NOT_OWNED)
sub("postmaster-sender", spawn.USER, "<postmaster@mx.test>", NOT_OWNED)
sub("cyrillic-a-lookalike", spawn.USER, "<\u0430lice@mx.test> SMTPUTF8", NOT_OWNED)
sub("own-trailing-dot", spawn.USER, "<alice@mx.test.>", BAD_SENDER)
sub("bob-own", "bob@mx.test", "<bob@mx.test>", ACCEPTED)
sub("bob-as-alice", "bob@mx.test", ALICE, NOT_OWNED)
sub("bob-null", "bob@mx.test", "<>", ACCEPTED)
sub("carol-listed-address", "carol", "<carol@mx.test>", ACCEPTED)
sub("carol-wildcard", "carol", "<anyone@relay.test>", ACCEPTED)
sub("carol-wildcard-case", "carol", "<Anyone@RELAY.TEST>", ACCEPTED)
sub("carol-wildcard-pct", "carol", "<alice%mx.test@relay.test>", ACCEPTED)
sub("carol-wildcard-subdomain", "carol", "<x@sub.relay.test>", NOT_OWNED)
sub("carol-wildcard-lookalike", "carol", "<x@relay.test.evil.test>", NOT_OWNED)
sub("carol-wildcard-trailing-dot", "carol", "<x@relay.test.>", BAD_SENDER)
sub("carol-other-local", "carol", ALICE, NOT_OWNED)
sub("carol-login-name", "carol", "<carol>", BAD_SENDER)
sub("dave-alabel", "dave", "<x@xn--bcher-kva.test>", ACCEPTED)
sub("dave-ulabel", "dave", "<x@b\u00fccher.test> SMTPUTF8", ACCEPTED)
sub("dave-ulabel-upper", "dave", "<x@B\u00dcCHER.TEST> SMTPUTF8", ACCEPTED)
sub("dave-ulabel-no-smtputf8", "dave", "<x@b\u00fccher.test>", NEEDS_UTF8)
sub("dave-fullwidth", "dave", "<x@\uff42\u00fc\uff43\uff48\uff45\uff52.test> SMTPUTF8", BAD_SENDER)
sub("dave-decomposed", "dave", "<x@bu\u0308cher.test> SMTPUTF8", BAD_SENDER)
sub("dave-subdomain", "dave", "<x@sub.b\u00fccher.test> SMTPUTF8", NOT_OWNED)
# "faß.test" and "fass.test" are two domains (IDNA2008); the user store once made one of them.
sub("erin-alabel", "erin", "<x@xn--fa-hia.test>", ACCEPTED)
sub("erin-ulabel", "erin", "<x@fa\u00df.test> SMTPUTF8", ACCEPTED)
sub("erin-ulabel-upper", "erin", "<x@FA\u00df.TEST> SMTPUTF8", ACCEPTED)
sub("erin-as-idna2003", "erin", "<x@fass.test>", NOT_OWNED)
sub("frank-own", "frank", "<x@fass.test>", ACCEPTED)
sub("frank-as-sharp-s", "frank", "<x@fa\u00df.test> SMTPUTF8", NOT_OWNED)
sub("frank-as-sharp-s-alabel", "frank", "<x@xn--fa-hia.test>", NOT_OWNED)


# Where Postfix (3.7, configured as REFERENCE) answers with another class, and why mailwright's
# answer is kept. In every one mailwright refuses what Postfix takes.
_ROUTING = (
    "routing characters ('%', '!', a quoted '@') are refused from unauthenticated clients toward "
    "our own domains too (policy/relay.py); Postfix takes them when the route ends at home"
)
_LITERAL = "address literals are never our domains (policy/relay.py); Postfix's own interface is"
_TRAILING_DOT = "RFC 5321 4.1.2: a Domain has no trailing dot; Postfix strips it"
_NO_DOMAIN = "only '<Postmaster>' may go without a domain (RFC 5321 4.1.1.3); Postfix appends $myorigin"
_CASE = (
    "local parts are case-sensitive (RFC 5321 2.4): a user owns the address as written "
    "(users/store.py); Postfix folds table keys to lower case"
)
_SHARP_S = (
    "the U-label of an owned or local domain is that domain (IDNA2008); Postfix would need "
    "'fa\u00df.test' listed too, and folds it to 'fass.test', another domain (see REFERENCE)"
)
DELIBERATE: dict[str, str] = {
    "pct-to-local": _ROUTING,
    "qat-route": _ROUTING + " (there, a source route inside the quotes)",
    "space-in-domain": "RFC 5321 4.1.2: no white space in a Domain; Postfix's RFC 822 tokenizer drops it",
    "empty-local": "RFC 5321 4.1.2: a Mailbox has a Local-part; Postfix takes an empty one",
    "pm-long-s": "postmaster is matched case-insensitively in ASCII (RFC 5321 4.5.1, 2.4); Postfix "
    "folds case in full Unicode, so 'po\u017ftmaster' (long s) is postmaster there",
    "pct-to-relay-domain": _ROUTING,
    "bang-to-local": _ROUTING,
    "qat-to-local": _ROUTING,
    "route-to-literal": _LITERAL,
    "route-literal-hop": "RFC 5321 4.1.2: a source route's hops are domains (At-domain), not literals",
    "trailing-dot-local": _TRAILING_DOT,
    "trailing-dot-relay": _TRAILING_DOT,
    "pm-hostname-trailing-dot": _TRAILING_DOT,
    "own-trailing-dot": _TRAILING_DOT,
    "carol-wildcard-trailing-dot": _TRAILING_DOT,
    "auth-trailing-dot": _TRAILING_DOT,
    "literal-loopback": _LITERAL,
    "literal-v4-mapped-loopback": _LITERAL + " (an IPv4-mapped IPv6 form of it)",
    "literal-postmaster": _LITERAL,
    "pm-bare-quoted": _NO_DOMAIN,
    "pm-bare-route": _NO_DOMAIN,
    "no-brackets-local": "RFC 5321 4.1.2: a Path needs its angle brackets; Postfix has "
    "strict_rfc821_envelopes = no",
    "local-part-65": "RFC 5321 4.5.3.1.1: 64 octets",
    "sharp-s-ulabel": _SHARP_S,
    "erin-ulabel": _SHARP_S,
    "erin-ulabel-upper": _SHARP_S,
    "frank-as-sharp-s": _SHARP_S,
    "local-part-capitalised": _CASE,
    "all-capitals": _CASE,
    "pct-own": "the sender is the address as written, and 'alice%mx.test' is not 'alice' (RFC 5321 "
    "4.1.2); Postfix strips the percent hack before it looks the owner up",
    "auth-fullwidth": "RFC 6531 3.3: domains in U-labels; Postfix does not check them",
}


# -- the wire ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A server under test: its MX and submission ports, and how to trust its certificate."""

    mx: int
    submission: int
    tls: ssl.SSLContext
    tls_name: str


def _password(user: str) -> str:
    return USERS[user][0]


@contextlib.contextmanager
def session(target: Target, user: str | None) -> Iterator[Wire]:
    """A greeted, EHLO'd session: on the MX port, or on submission after STARTTLS and AUTH PLAIN."""
    port = target.mx if user is None else target.submission
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        wire = Wire(sock, timeout=10)
        assert wire.reply().code == "220"
        assert wire.command(b"EHLO client.test").code == "250"
        if user is not None:
            got = wire.command(b"STARTTLS")
            assert got.code == "220", got
            wire.sock = target.tls.wrap_socket(sock, server_hostname=target.tls_name)
            assert wire.command(b"EHLO client.test").code == "250"
            token = base64.b64encode(f"\0{user}\0{_password(user)}".encode())
            got = wire.command(b"AUTH PLAIN " + token)
            assert got.code == "235", f"AUTH as {user}: {got}"
        try:
            yield wire
        finally:
            with contextlib.suppress(OSError):
                wire.send(b"QUIT\r\n")
            wire.sock.close()


def run_case(target: Target, case: Case, *, data: bool) -> tuple[list[Got], Got | None]:
    """The replies to the case's MAIL and (when MAIL got 250) RCPT; with `data`, then the reply to
    DATA and, if that was 354, to a short message: (replies, final reply to the message)."""
    with session(target, case.user) as wire:
        got = [wire.command(b"MAIL FROM:" + case.mail)]
        if got[0].code == "250":
            got.append(wire.command(b"RCPT TO:" + case.rcpt))
        if not data:
            return got, None
        end = wire.command(b"DATA")
        if end.code == "354":
            wire.send(f"Subject: {case.id}\r\n\r\nrelay audit\r\n.\r\n".encode())
            end = wire.reply()
        return got, end


def _is_ours(address: str) -> bool:
    """Independently of mailwright's code: a mailbox an unauthenticated client may send to."""
    local, _, domain = address.rpartition("@")
    local = local[1:-1] if local.startswith('"') else local
    if any(c in local for c in "%!@") or domain.startswith("["):
        return False
    alabels = idna.encode(domain, uts46=True).decode("ascii").lower()
    return alabels in OURS or (local.lower() == "postmaster" and alabels == HOSTNAME)


# -- tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spawn.SpawnedServer]:
    with spawn.running_server(
        tmp_path_factory.mktemp("relaydiff"),
        workers=1,
        hostname=HOSTNAME,
        local_domains=LOCAL_DOMAINS,
        relay_domains=RELAY_DOMAINS,
    ) as srv:
        for user, (password, owned) in USERS.items():
            if user == spawn.USER:
                continue
            args = [arg for address in owned for arg in ("--address", address)]
            res = srv.cli("user", "add", user, *args, "--password-stdin", stdin=password + "\n")
            assert res.returncode == 0, res.stderr
        yield srv


@pytest.fixture(scope="module")
def mw_target(mw: spawn.SpawnedServer) -> Target:
    tls = ssl.create_default_context(cafile=str(mw.ca_file))
    return Target(mw.ports["mx"], mw.ports["submission"], tls, spawn.LOCAL_DOMAIN)


def test_the_table_is_well_formed() -> None:
    assert_table_ids([case.id for case in CASES], DELIBERATE, 150)
    assert all(case.user is None or case.user in USERS for case in CASES)
    # Both sides of the audit are there in number: refusals and acceptances, with and without AUTH.
    for user_side in (True, False):
        side = [c for c in CASES if (c.user is not None) == user_side]
        assert sum(c.stored is not None for c in side) >= 10 and sum(c.stored is None for c in side) >= 10


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_mailwright_keeps_the_relay_and_ownership_rules(
    mw: spawn.SpawnedServer, mw_target: Target, case: Case
) -> None:
    before = mw.envelopes()
    got, end = run_case(mw_target, case, data=True)
    shown = " / ".join(map(str, got))
    assert tuple(g.shape() for g in got) == case.expect, f"{case.mail!r} {case.rcpt!r}: {shown}"
    assert end is not None
    new = {qid: env for qid, env in mw.envelopes().items() if qid not in before}
    if case.stored is None:
        # Nothing accepted, so DATA has no recipient (554 5.5.1) or no transaction (503 5.5.1).
        assert end.code in ("503", "554") and not new, (str(end), new)
        return
    assert end.shape() == "250 2.0.0" and len(new) == 1, (str(end), new)
    (env,) = new.values()
    assert (env.sender, env.recipients) == (case.stored[0], (case.stored[1],))
    assert env.auth_user == case.user
    if case.user is None:
        assert _is_ours(env.recipients[0]), f"relayed without AUTH: {env}"


def test_postfix_agrees_on_the_class_but_where_this_project_chose_otherwise(mw_target: Target) -> None:
    passwords = {user: password for user, (password, _) in USERS.items()}
    with (
        private_dovecot(passwords) as sasl_path,
        private_postfix({**REFERENCE, "smtpd_sasl_path": str(sasl_path)}, tls=True) as pf,
    ):
        # The private instance's own trustme certificate; loopback only, nothing to authenticate.
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        target = Target(pf.port, pf.port, tls, "postfix.bench.test")
        disagreements = Disagreements(DELIBERATE)
        for case in CASES:
            ours, _ = run_case(mw_target, case, data=False)
            theirs, _ = run_case(target, case, data=False)
            assert all(g.code != "hung" for g in theirs), f"Postfix did not answer {case.id}"
            differs = [reply_class(g.code) for g in ours] != [reply_class(g.code) for g in theirs]
            shown = (
                f"{case.id}: mailwright {' / '.join(map(str, ours))} | Postfix {' / '.join(map(str, theirs))}"
            )
            disagreements.note(case.id, differs, shown)
        disagreements.check()
