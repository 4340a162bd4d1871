"""Interop with Python's smtplib: STARTTLS, implicit TLS, SASL, submission rules, header cleanup.

Every test speaks to a spawned `mailwright serve` over loopback with real TLS (certificate
verified against the spawned server's CA) and checks reply codes, enhanced status codes
(RFC 3463) and what the queue database holds afterwards.
RFCs: 3207 (STARTTLS), 4954 (AUTH, 538/535/454), 6409 (submission: Message-ID/Date, 530),
8314 (implicit TLS), 6531 (SMTPUTF8), 6152 (8BITMIME), 3848 (Received "with" keywords).
Not covered here: BDAT (smtplib has no CHUNKING support).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    HOST,
    OTHER_HOST,
    PASSWORD,
    USER,
    QueueWatch,
    enhanced,
    spawn,
    submission,
    tls_context,
    unfolded_headers,
)

MECHS = {
    "PLAIN": "auth_plain",
    "LOGIN": "auth_login",
    "CRAM-MD5": "auth_cram_md5",
}


def message(subject: str, *, msgid: str | None = None, date: str | None = None, body: str = "") -> bytes:
    head = [f"From: {USER}", "To: bob@mx.test", f"Subject: {subject}"]
    if msgid is not None:
        head.append(f"Message-ID: {msgid}")
    if date is not None:
        head.append(f"Date: {date}")
    return ("\r\n".join(head) + "\r\n\r\n" + (body or f"body of {subject}\r\n")).encode()


def fields(stored: bytes, name: str) -> list[str]:
    prefix = name.lower() + ":"
    return [h for h in unfolded_headers(stored) if h.lower().startswith(prefix)]


def tls_received_facts(smtp: smtplib.SMTP) -> str:
    """The "(using ...)" text the server should write, as seen from the client's end."""
    sock = smtp.sock
    assert isinstance(sock, ssl.SSLSocket)
    cipher, version = sock.cipher(), sock.version()
    assert cipher is not None and version is not None
    return f"(using {version.replace('TLSv', 'TLS')} {cipher[0]} ({cipher[2]} bits))"


# -- authenticated submission ------------------------------------------------------------------


@pytest.mark.parametrize("mech", list(MECHS))
def test_starttls_auth_each_mechanism_queues_with_esmtpsa(
    server: spawn.SpawnedServer, watch: QueueWatch, mech: str
) -> None:
    smtp = submission(server, login=False)
    try:
        assert isinstance(smtp.sock, ssl.SSLSocket) and smtp.sock.version() in ("TLSv1.2", "TLSv1.3")
        advertised = smtp.esmtp_features["auth"].upper().split()
        assert mech in advertised
        smtp.user, smtp.password = USER, PASSWORD
        code, resp = smtp.auth(mech, getattr(smtp, MECHS[mech]))
        assert (code, enhanced(resp)) == (235, "2.7.0"), resp
        facts = tls_received_facts(smtp)
        code, resp = smtp.mail(USER)
        assert (code, enhanced(resp)) == (250, "2.1.0"), resp
        code, resp = smtp.rcpt("bob@mx.test")
        assert (code, enhanced(resp)) == (250, "2.1.5"), resp
        code, resp = smtp.data(message(f"via {mech}"))
        assert code == 250 and enhanced(resp) == "2.0.0", resp
    finally:
        smtp.quit()
    qid, rcpts = watch.only_new()
    assert qid.encode() in resp, "the 250 names the queue id"
    assert rcpts == ["bob@mx.test"]
    stored = server.body(qid)
    # The operator's trace: one log line for the message, keyed by its queue id. The writer
    # gathers lines for up to 0.1 s (queue.commit_log), so it may come just after the 250.
    spawn.wait_for_log(server, f" {qid}: ", timeout=5)
    logged = [line for line in server.log.read_text().splitlines() if f" {qid}: " in line]
    assert len(logged) == 1, logged
    assert f"{qid}: from=<{USER}>, size={len(stored)}, nrcpt=1, client=client.test[127.0.0.1]" in logged[0]
    assert logged[0].endswith(f", tls, auth={USER}"), logged[0]
    received = fields(stored, "Received")[0]
    assert unfolded_headers(stored)[0] == received, "Received is the first header"
    assert received.startswith("Received: from client.test ([127.0.0.1])"), received
    assert "by mx.test (mailwright) with ESMTPSA " in received, received
    assert facts in received, (facts, received)
    assert "for <bob@mx.test>;" in received
    # RFC 6409 8.2/8.3: the submission server adds what the client left out, once.
    msgids = fields(stored, "Message-ID")
    assert len(msgids) == 1 and re.fullmatch(r"Message-ID: <[^<>@\s]+@mx\.test>", msgids[0]), msgids
    dates = fields(stored, "Date")
    assert len(dates) == 1 and re.search(r"\d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$", dates[0]), dates
    assert stored.endswith(f"body of via {mech}\r\n".encode())


def test_present_message_id_and_date_are_not_duplicated(
    server: spawn.SpawnedServer, watch: QueueWatch
) -> None:
    msgid = "<given.1@client.test>"
    date = "Mon, 02 Jan 2006 15:04:05 +0000"
    with submission(server) as smtp:
        refused = smtp.sendmail(USER, ["bob@mx.test"], message("has ids", msgid=msgid, date=date))
    assert refused == {}
    qid, _ = watch.only_new()
    stored = server.body(qid)
    assert fields(stored, "Message-ID") == [f"Message-ID: {msgid}"]
    assert fields(stored, "Date") == [f"Date: {date}"]


def test_lowercase_header_names_count_as_present(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    msg = b"message-id: <lower.1@client.test>\r\ndate: Mon, 02 Jan 2006 15:04:05 +0000\r\n\r\nx\r\n"
    with submission(server) as smtp:
        smtp.sendmail(USER, ["bob@mx.test"], msg)
    qid, _ = watch.only_new()
    stored = server.body(qid)
    assert len(fields(stored, "Message-ID")) == 1
    assert len(fields(stored, "Date")) == 1


@pytest.mark.parametrize(
    ("sent", "body"),
    [
        (b"hello world\r\nsecond line\r\n", b"hello world\r\nsecond line\r\n"),
        (b"Subject: x\r\n continued\r\nno blank line\r\n", b"no blank line\r\n"),
        (b"\r\nbody only\r\n", b"body only\r\n"),
        (b"Subject: headers only\r\n", b""),
    ],
    ids=["no-headers", "no-separator", "empty-header-section", "headers-only"],
)
def test_added_headers_land_in_the_header_section(
    server: spawn.SpawnedServer, watch: QueueWatch, sent: bytes, body: bytes
) -> None:
    # Clients (smtplib.sendmail with a bare string, scripts) often send text with no header
    # section or no empty line after it.  The header section then ends at the first line
    # that is not a header field (as Postfix's cleanup decides); Message-ID and Date must
    # go before that line, or every mail reader sees them as body text.
    with submission(server) as smtp:
        smtp.sendmail(USER, ["bob@mx.test"], sent)
    qid, _ = watch.only_new()
    stored = server.body(qid)
    parsed = email.message_from_bytes(stored, policy=email.policy.SMTP)
    assert parsed["Message-ID"] is not None and parsed["Date"] is not None, stored
    assert len(fields(stored, "Message-ID")) == 1 and len(fields(stored, "Date")) == 1
    payload = parsed.get_payload(decode=False)
    assert isinstance(payload, str)
    assert payload.encode().endswith(body), stored


def test_implicit_tls_on_submissions(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    with submission(server, "submissions", login=False) as smtp:
        assert isinstance(smtp.sock, ssl.SSLSocket) and smtp.sock.version() in ("TLSv1.2", "TLSv1.3")
        # Already encrypted: STARTTLS makes no sense, AUTH is offered at once (RFC 8314 3.3).
        assert not smtp.has_extn("starttls")
        assert "PLAIN" in smtp.esmtp_features["auth"].upper().split()
        code, resp = smtp.mail(USER)
        assert (code, enhanced(resp)) == (530, "5.7.0"), resp
        smtp.login(USER, PASSWORD)
        facts = tls_received_facts(smtp)
        smtp.sendmail(USER, ["bob@mx.test", "carol@relay.test"], message("implicit"))
    qid, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test", "carol@relay.test"]
    received = fields(server.body(qid), "Received")[0]
    assert "with ESMTPSA" in received and facts in received, received
    assert "for <" not in received, "no single 'for' clause with two recipients"


def test_implicit_tls_rejects_a_plaintext_client(server: spawn.SpawnedServer) -> None:
    # No plaintext banner on the implicit-TLS port; plaintext "EHLO" is not a TLS record.
    with socket.create_connection((HOST, server.ports["submissions"]), timeout=10) as raw:
        raw.sendall(b"EHLO client.test\r\n")
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := raw.recv(4096):
                received += chunk
    assert b"220" not in received and b"250" not in received, received
    assert received == b"" or received[0] == 0x15, received  # nothing, or a TLS alert record


def test_implicit_tls_certificate_matches_hostname(server: spawn.SpawnedServer) -> None:
    # A client that checks the name "mx.test" (not just the IP) must be satisfied too.
    raw = socket.create_connection((HOST, server.ports["submissions"]), timeout=10)
    with tls_context(server).wrap_socket(raw, server_hostname="mx.test") as tls:
        banner = tls.recv(512)
    assert banner.startswith(b"220 mx.test") and banner.endswith(b"\r\n"), banner


@pytest.mark.parametrize("port_name", ["submission", "alt"])
def test_auth_and_mail_before_starttls_refused(
    server: spawn.SpawnedServer, watch: QueueWatch, port_name: str
) -> None:
    with smtplib.SMTP(HOST, server.ports[port_name], local_hostname="client.test", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth"), "AUTH must not be offered before TLS (RFC 4954 4)"
        code, resp = smtp.docmd(
            "AUTH", "PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        )
        assert (code, enhanced(resp)) == (538, "5.7.11"), resp
        code, resp = smtp.mail(USER)
        assert code == 530 and enhanced(resp) == "5.7.0", resp
        code, resp = smtp.rcpt("bob@mx.test")
        assert code == 503 or code == 530, resp
    assert watch.new() == {}


@pytest.mark.parametrize("port_name", ["submission", "alt", "submissions"])
def test_mail_before_auth_refused_after_tls(
    server: spawn.SpawnedServer, watch: QueueWatch, port_name: str
) -> None:
    with submission(server, port_name, login=False) as smtp:
        code, resp = smtp.mail(USER)
        assert (code, enhanced(resp)) == (530, "5.7.0"), resp
        code, resp = smtp.rcpt("bob@mx.test")
        assert code in (503, 530), resp
        code, resp = smtp.docmd("DATA")
        assert code in (503, 530, 554), resp
        # The session is still usable: authenticate and send.
        smtp.login(USER, PASSWORD)
        assert smtp.sendmail(USER, ["bob@mx.test"], message(f"after auth on {port_name}")) == {}
    _, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]


def test_alt_port_behaves_as_submission(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    with submission(server, "alt") as smtp:
        facts = tls_received_facts(smtp)
        smtp.sendmail(USER, ["dave@example.org"], message("via alt"))
        code, resp = smtp.mail("bob@mx.test")
        assert (code, enhanced(resp)) == (553, "5.7.1"), resp
    qid, rcpts = watch.only_new()
    assert rcpts == ["dave@example.org"], "authenticated submission may relay"
    stored = server.body(qid)
    received = fields(stored, "Received")[0]
    assert "with ESMTPSA" in received and facts in received, received
    assert len(fields(stored, "Message-ID")) == 1 and len(fields(stored, "Date")) == 1


@pytest.mark.parametrize(
    ("mech", "source"), [("PLAIN", "127.0.0.3"), ("LOGIN", "127.0.0.4"), ("CRAM-MD5", "127.0.0.5")]
)
def test_wrong_password_535(server: spawn.SpawnedServer, mech: str, source: str) -> None:
    # A source address of its own keeps this failure away from other tests' limiter keys.
    with submission(server, source=source, login=False) as smtp:
        smtp.user, smtp.password = USER, "not the password"
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.auth(mech, getattr(smtp, MECHS[mech]))
        assert (info.value.smtp_code, enhanced(info.value.smtp_error)) == (535, "5.7.8")
        # Unknown user fails the same way (no user enumeration).
        smtp.user = "nobody@mx.test"
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.auth(mech, getattr(smtp, MECHS[mech]))
        assert (info.value.smtp_code, enhanced(info.value.smtp_error)) == (535, "5.7.8")
        code, resp = smtp.mail(USER)
        assert code == 530, "a failed AUTH leaves the session unauthenticated"
        # A retry on the same session with the right secret succeeds and clears the failures.
        smtp.user, smtp.password = USER, PASSWORD
        code, resp = smtp.auth(mech, getattr(smtp, MECHS[mech]))
        assert (code, enhanced(resp)) == (235, "2.7.0")


# -- lockout: a server of its own so the limiter state touches nothing else ------------------


@pytest.fixture
def lockout_server(tmp_path: Path) -> Iterator[spawn.SpawnedServer]:
    with spawn.running_server(tmp_path / "lockout") as srv:
        yield srv


def _try_plain(srv: spawn.SpawnedServer, password: str, source: str = "127.0.0.1") -> tuple[int, bytes | str]:
    with submission(srv, source=source, login=False) as smtp:
        smtp.user, smtp.password = USER, password
        try:
            return smtp.auth("PLAIN", smtp.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code, exc.smtp_error


def test_lockout_after_three_failures_then_recovery(lockout_server: spawn.SpawnedServer) -> None:
    srv = lockout_server
    first = _try_plain(srv, "wrong 1")
    second = _try_plain(srv, "wrong 2")
    assert (first[0], enhanced(first[1])) == (535, "5.7.8"), first
    assert (second[0], enhanced(second[1])) == (535, "5.7.8"), second
    third = _try_plain(srv, "wrong 3")
    locked_at = time.monotonic()
    # The third failure locks the address; its own answer may already say so.
    assert (third[0], enhanced(third[1])) in ((535, "5.7.8"), (454, "4.7.0")), third
    code, resp = _try_plain(srv, PASSWORD)
    assert (code, enhanced(resp)) == (454, "4.7.0"), "locked out even with the right password"
    # The lockout is per client address: another host is not affected.
    code, resp = _try_plain(srv, PASSWORD, source=OTHER_HOST)
    assert (code, enhanced(resp)) == (235, "2.7.0"), resp
    time.sleep(max(0.0, locked_at + 5.2 - time.monotonic()))
    code, resp = _try_plain(srv, PASSWORD)
    assert (code, enhanced(resp)) == (235, "2.7.0"), resp
    # And the recovered client can send.
    watch = QueueWatch(srv)
    with submission(srv) as smtp:
        assert smtp.sendmail(USER, ["bob@mx.test"], message("after lockout")) == {}
    assert list(watch.new().values()) == [["bob@mx.test"]]


# -- sender ownership, SMTPUTF8, 8BITMIME -----------------------------------------------------


def test_sending_as_someone_else_is_refused(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    with submission(server) as smtp:
        for other in ("bob@mx.test", "alice@example.org", "ALICE@mx.test"):
            code, resp = smtp.mail(other)
            assert (code, enhanced(resp)) == (553, "5.7.1"), (other, resp)
        # Domains compare case-insensitively (local parts do not).
        code, resp = smtp.mail("alice@MX.TEST")
        assert (code, enhanced(resp)) == (250, "2.1.0"), resp
        smtp.rset()
        code, resp = smtp.mail(USER)
        assert code == 250, resp
        assert smtp.rcpt("bob@mx.test")[0] == 250
        assert smtp.data(message("owned sender"))[0] == 250
    _, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]


def test_smtputf8_addresses(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    with submission(server) as smtp:
        assert smtp.has_extn("smtputf8")
        # Without the SMTPUTF8 parameter a non-ASCII address is refused (RFC 6531 3.4).
        smtp.command_encoding = "utf-8"
        code, resp = smtp.mail(USER)
        assert code == 250, resp
        code, resp = smtp.rcpt("bøb@mx.test")
        assert (code, enhanced(resp)) == (553, "5.6.7"), resp
        smtp.rset()
        msg = "From: alice@mx.test\r\nTo: bøb@mx.test\r\nSubject: ünïcode\r\n\r\nçà\r\n".encode()
        refused = smtp.sendmail(
            USER, ["bøb@mx.test", "用户@mx.test"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )
        assert refused == {}
    qid, rcpts = watch.only_new()
    assert rcpts == ["bøb@mx.test", "用户@mx.test"]
    stored = server.body(qid)
    assert "with UTF8SMTPSA" in fields(stored, "Received")[0]
    assert fields(stored, "Subject") == ["Subject: ünïcode"]
    assert stored.endswith("\r\n\r\nçà\r\n".encode())


def test_8bitmime_body_is_stored_verbatim(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    body = bytes(range(0x80, 0x100)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n" + "Grüße\r\n".encode()
    msg = b"Subject: eight bit\r\nContent-Type: text/plain; charset=latin-1\r\n\r\n" + body
    with submission(server) as smtp:
        assert smtp.has_extn("8bitmime")
        code, resp = smtp.mail(USER, ["BODY=8BITMIME"])
        assert code == 250, resp
        assert smtp.rcpt("bob@mx.test")[0] == 250
        code, resp = smtp.data(msg)
        assert code == 250, resp
    qid, _ = watch.only_new()
    stored = server.body(qid)
    assert stored.endswith(b"\r\n\r\n" + body)


def test_dot_lines_and_long_body_round_trip(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    body = b".leading dot\r\n..two dots\r\n.\r\nx\r\n"
    body += b"".join(b"%06d " % i + b"y" * 70 + b"\r\n" for i in range(20000))
    with submission(server) as smtp:
        smtp.sendmail(USER, ["bob@mx.test"], b"Subject: dots\r\n\r\n" + body)
    qid, _ = watch.only_new()
    assert server.body(qid).endswith(b"\r\n\r\n" + body)


def test_many_messages_one_session_with_rset(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    with submission(server) as smtp:
        for i in range(5):
            assert smtp.sendmail(USER, [f"user{i}@mx.test"], message(f"n{i}")) == {}
        smtp.mail(USER)
        smtp.rcpt("never@mx.test")
        smtp.rset()
    assert sorted(r[0] for r in watch.new().values()) == [f"user{i}@mx.test" for i in range(5)]


# -- the mx role through smtplib --------------------------------------------------------------


def test_mx_plaintext_and_starttls_received(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    with smtplib.SMTP(HOST, server.ports["mx"], local_hostname="peer.example.org", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        smtp.sendmail("someone@example.org", ["bob@mx.test"], b"Subject: plain mx\r\n\r\nhi\r\n")
        smtp.starttls(context=tls_context(server))
        smtp.ehlo()
        assert not smtp.has_extn("auth"), "no AUTH on the mx role"
        facts = tls_received_facts(smtp)
        smtp.sendmail("someone@example.org", ["bob@mx.test"], b"Subject: tls mx\r\n\r\nhi\r\n")
    new = watch.new()
    assert len(new) == 2
    by_subject = {}
    for qid in new:
        stored = server.body(qid)
        by_subject[fields(stored, "Subject")[0]] = stored
    plain, tls = by_subject["Subject: plain mx"], by_subject["Subject: tls mx"]
    assert " with ESMTP " in fields(plain, "Received")[0] + " "
    assert "(using" not in fields(plain, "Received")[0]
    tls_received = fields(tls, "Received")[0]
    assert "with ESMTPS" in tls_received and "ESMTPSA" not in tls_received and facts in tls_received
    # Message-ID/Date are added for submission only (RFC 6409 8), never on relay/MX.
    assert fields(plain, "Message-ID") == [] and fields(plain, "Date") == []
