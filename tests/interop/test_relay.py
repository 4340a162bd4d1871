"""No open relay: routing tricks against the mx and unauthenticated submission listeners.

Every refusal is checked from two client addresses, 127.0.0.1 and 127.0.0.2, because no
address (loopback included) may be trusted for relaying.  For each trick the test checks
the exact reply (554 5.7.1 for relaying, 501 5.1.3 for syntax), that DATA is not opened
afterwards, and that nothing reached the queue database.
RFCs: 5321 3.6 (relaying), 3.6.1 and appendix C (source routes are ignored), 4.1.3
(address literals), 4.5.1 (Postmaster), 2.3.5 (no trailing dot in domains), 6531 (SMTPUTF8
for non-ASCII addresses), 4954 5 (the AUTH= parameter grants nothing by itself).
Not responsible for: authentication mechanics (test_smtplib.py).
"""

from __future__ import annotations

import base64
import smtplib

import pytest

from .conftest import HOST, OTHER_HOST, PASSWORD, USER, QueueWatch, enhanced, spawn, submission, tls_context

SOURCES = [HOST, OTHER_HOST]

# Recipients that would take the message somewhere else: 554 5.7.1 for an unauthenticated client.
FOREIGN = [
    "<user@example.org>",
    "<user@example.org> NOTIFY=NEVER",
    "<user%example.org@mx.test>",  # percent hack
    "<user%example.org@relay.test>",
    "<example.org!user@mx.test>",  # UUCP bang path
    '<"user@example.org"@mx.test>',  # quoted "@"
    '<"user%example.org"@mx.test>',
    "<@mx.test:user@example.org>",  # source route: ignored, so this is user@example.org
    "<@mx.test,@relay.test:user@example.org>",
    "<user@[127.0.0.1]>",  # address literals are not our domains
    "<user@[IPv6:::1]>",
    "<user@sub.mx.test>",  # lookalikes and near misses
    "<user@mx.test.example.org>",
    "<user@rnx.test>",
    "<user@xn--m-gub.test>",  # "m\u0445.test" (Cyrillic ha for x) in A-label form
    "<user@relay.test.example.org>",
    "<user@evilrelay.test>",
]
# Not valid RFC 5321 syntax: 501 5.1.3.
SYNTAX = [
    "<user@mx.test.>",
    "<user@MX.TEST.>",
    "<user@example.org.>",
    "<user@mx..test>",
    "<user@[mx.test]>",
    "<user@mx.test@example.org>",
    "<user\\@example.org@mx.test>",
    "<@:user@example.org>",
    "user@example.org",
    "<user@example.org",
]


def _session(srv: spawn.SpawnedServer, source: str, *, utf8: bool = False) -> smtplib.SMTP:
    smtp = smtplib.SMTP(
        HOST, srv.ports["mx"], local_hostname="mx.test", source_address=(source, 0), timeout=10
    )
    smtp.command_encoding = "utf-8"
    smtp.ehlo()
    code, resp = smtp.docmd("MAIL FROM:<alice@mx.test>" + (" SMTPUTF8" if utf8 else ""))
    # A sender in our own domain (and a HELO naming us) must not buy relaying either.
    assert code == 250, resp
    return smtp


def _data_refused(smtp: smtplib.SMTP) -> None:
    code, resp = smtp.docmd("DATA")
    assert code in (503, 554), (code, resp)
    if code == 554:
        assert enhanced(resp) == "5.5.1", resp


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("rcpt", FOREIGN)
def test_mx_refuses_relaying(server: spawn.SpawnedServer, watch: QueueWatch, source: str, rcpt: str) -> None:
    with _session(server, source) as smtp:
        code, resp = smtp.docmd("RCPT TO:" + rcpt)
        assert (code, enhanced(resp)) == (554, "5.7.1"), resp
        _data_refused(smtp)
    assert watch.new() == {}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("rcpt", SYNTAX)
def test_mx_refuses_bad_syntax(
    server: spawn.SpawnedServer, watch: QueueWatch, source: str, rcpt: str
) -> None:
    with _session(server, source) as smtp:
        code, resp = smtp.docmd("RCPT TO:" + rcpt)
        assert (code, enhanced(resp)) == (501, "5.1.3"), resp
        _data_refused(smtp)
    assert watch.new() == {}


@pytest.mark.parametrize("source", SOURCES)
def test_idna_lookalike_in_utf8(server: spawn.SpawnedServer, watch: QueueWatch, source: str) -> None:
    with _session(server, source) as smtp:
        # Non-ASCII without SMTPUTF8 (RFC 6531 3.4).
        code, resp = smtp.docmd("RCPT TO:<user@m\u0445.test>")
        assert (code, enhanced(resp)) == (553, "5.6.7"), resp
    with _session(server, source, utf8=True) as smtp:
        # Cyrillic lookalikes are valid IDNs of other domains.
        for rcpt in ("<user@m\u0445.test>", "<user@relay.t\u0435st>", "<user@\u043cx.test>"):
            code, resp = smtp.docmd("RCPT TO:" + rcpt)
            assert (code, enhanced(resp)) == (554, "5.7.1"), (rcpt, resp)
        # Fullwidth letters are not valid IDNA2008; refused either way, never relayed.
        code, resp = smtp.docmd("RCPT TO:<user@\uff4d\uff58.example.org>")
        assert code in (501, 554) and enhanced(resp) in ("5.1.3", "5.7.1"), resp
        _data_refused(smtp)
    assert watch.new() == {}


@pytest.mark.parametrize("source", SOURCES)
def test_mx_accepts_own_and_relay_domains(
    server: spawn.SpawnedServer, watch: QueueWatch, source: str
) -> None:
    accepted = {
        "<bob@mx.test>": "bob@mx.test",
        "<USER@MX.TEST>": "USER@mx.test",
        "<carol@relay.test>": "carol@relay.test",
        "<dave@RELAY.TEST>": "dave@relay.test",
        "<@example.org:erin@mx.test>": "erin@mx.test",  # source route ignored: local recipient
        '<"frank"@mx.test>': "frank@mx.test",
        "<Postmaster>": "postmaster@mx.test",  # RFC 5321 4.5.1: must be accepted
    }
    with _session(server, source) as smtp:
        for rcpt in accepted:
            code, resp = smtp.docmd("RCPT TO:" + rcpt)
            assert (code, enhanced(resp)) == (250, "2.1.5"), (rcpt, resp)
        code, resp = smtp.data(b"Subject: local\r\n\r\nhi\r\n")
        assert code == 250, resp
    _, rcpts = watch.only_new()

    def canon(addr: str) -> str:
        local, _, domain = addr.rpartition("@")
        return f"{local.strip(chr(34)).lower()}@{domain.lower()}"

    assert [canon(r) for r in rcpts] == [canon(a) for a in accepted.values()]


@pytest.mark.parametrize("source", SOURCES)
def test_mixed_recipients_only_local_ones_queued(
    server: spawn.SpawnedServer, watch: QueueWatch, source: str
) -> None:
    with _session(server, source) as smtp:
        assert smtp.docmd("RCPT TO:<bob@mx.test>")[0] == 250
        for rcpt in FOREIGN[:8]:
            assert smtp.docmd("RCPT TO:" + rcpt)[0] == 554
        code, resp = smtp.data(b"Subject: mixed\r\n\r\nhi\r\n")
        assert code == 250, resp
    _, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]


@pytest.mark.parametrize("source", SOURCES)
def test_mx_auth_tricks_grant_nothing(server: spawn.SpawnedServer, watch: QueueWatch, source: str) -> None:
    with smtplib.SMTP(
        HOST, server.ports["mx"], local_hostname="localhost", source_address=(source, 0)
    ) as smtp:
        smtp.ehlo()
        # AUTH is not offered on the mx role, not even over TLS.
        smtp.starttls(context=tls_context(server))
        smtp.ehlo()
        assert not smtp.has_extn("auth")
        code, resp = smtp.docmd(
            "AUTH", "PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        )
        assert 500 <= code < 600, resp
        for cmd in ("XCLIENT ADDR=127.0.0.1", "XFORWARD ADDR=127.0.0.1"):
            code, resp = smtp.docmd(cmd)
            assert code in (500, 502), (cmd, resp)
        code, resp = smtp.docmd(f"MAIL FROM:<{USER}> AUTH=<{USER}>")
        if code == 250:
            code, resp = smtp.docmd("RCPT TO:<user@example.org>")
            assert (code, enhanced(resp)) == (554, "5.7.1"), resp
        else:
            assert code in (501, 555), resp
        _data_refused(smtp)
    assert watch.new() == {}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("port_name", ["submission", "alt"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_submission_without_auth_refuses_everything(
    server: spawn.SpawnedServer, watch: QueueWatch, source: str, port_name: str, tls: bool
) -> None:
    if tls:
        smtp = submission(server, port_name, source=source, login=False)
    else:
        smtp = smtplib.SMTP(
            HOST, server.ports[port_name], local_hostname="mx.test", source_address=(source, 0)
        )
        smtp.ehlo()
    with smtp:
        smtp.command_encoding = "utf-8"
        code, resp = smtp.docmd(f"MAIL FROM:<{USER}>")
        assert (code, enhanced(resp)) == (530, "5.7.0"), resp
        for rcpt in ["<bob@mx.test>", "<carol@relay.test>", *FOREIGN[:10]]:
            code, resp = smtp.docmd("RCPT TO:" + rcpt)
            assert code in (503, 530, 554), (rcpt, resp)
        code, resp = smtp.docmd("DATA")
        assert code in (503, 530, 554), resp
    assert watch.new() == {}


@pytest.mark.parametrize("port_name", ["submission", "submissions", "alt"])
def test_authenticated_submission_may_relay(
    server: spawn.SpawnedServer, watch: QueueWatch, port_name: str
) -> None:
    with submission(server, port_name, source=OTHER_HOST) as smtp:
        code, resp = smtp.mail(USER)
        assert code == 250, resp
        for rcpt in ("user@example.org", "someone@example.net", "bob@mx.test"):
            code, resp = smtp.rcpt(rcpt)
            assert (code, enhanced(resp)) == (250, "2.1.5"), (rcpt, resp)
        code, resp = smtp.docmd("RCPT TO:<@mx.test:other@example.com>")
        assert code == 250, resp
        code, resp = smtp.data(b"Subject: relayed\r\n\r\nhi\r\n")
        assert code == 250, resp
    _, rcpts = watch.only_new()
    assert rcpts == ["user@example.org", "someone@example.net", "bob@mx.test", "other@example.com"]


@pytest.mark.parametrize("source", SOURCES)
def test_relay_probing_is_cut_off(server: spawn.SpawnedServer, watch: QueueWatch, source: str) -> None:
    """A client that keeps collecting refusals is disconnected (as Postfix's hard error limit)."""
    with _session(server, source) as smtp:
        replies = []
        for i in range(40):
            replies.append(smtp.docmd(f"RCPT TO:<user{i}@example.org>"))
            if replies[-1][0] == 421:
                break  # the server has closed the connection
        codes = [code for code, _ in replies]
        assert 421 in codes, codes
        cut = codes.index(421)
        assert set(codes[:cut]) == {554} and cut >= 10, codes
        assert enhanced(replies[cut][1]) == "4.7.0", replies[cut]
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.docmd("RCPT TO:<bob@mx.test>")
            smtp.docmd("NOOP")
    assert watch.new() == {}


def test_auth_parameter_is_kept_only_where_the_session_vouches_for_it(
    server: spawn.SpawnedServer, watch: QueueWatch
) -> None:
    """RFC 4954 5: AUTH=<mailbox> names who first submitted the message; a server passes it on only
    when it trusts the client to say so, and behaves as if AUTH=<> was supplied otherwise. The queue
    keeps MAIL's parameters to pass them on, so what it stores is what the next hop would be told."""

    def send(smtp: smtplib.SMTP, mailbox: str) -> str:
        code, resp = smtp.docmd(f"MAIL FROM:<{USER}> SIZE=100 AUTH={mailbox}")
        assert code == 250, (mailbox, resp)
        assert smtp.rcpt("bob@mx.test")[0] == 250
        assert smtp.data(b"Subject: auth param\r\n\r\nhi\r\n")[0] == 250
        new = [qid for qid in watch.new() if qid not in seen]
        assert len(new) == 1, new
        seen.add(new[0])
        return server.envelopes()[new[0]].mail_params

    seen: set[str] = set()
    with submission(server) as smtp:
        assert send(smtp, USER) == f"SIZE=100 AUTH={USER}"  # its own address: trusted
        assert send(smtp, "mallory@mx.test") == "SIZE=100 AUTH=<>"  # not the user's to name
        assert send(smtp, "<>") == "SIZE=100 AUTH=<>"
    with _session(server, HOST) as smtp:  # the MX port offers no AUTH, so no AUTH= either
        smtp.rset()  # _session opened a transaction
        code, resp = smtp.docmd(f"MAIL FROM:<{USER}> AUTH={USER}")
        assert (code, enhanced(resp)) == (555, "5.5.4"), resp
