"""Interop with aiosmtplib: STARTTLS and implicit TLS sends, each SASL mechanism, concurrency.

aiosmtplib is an independent asyncio SMTP client; it verifies the server certificate
through `tls_context` (trusting only the spawned server's CA).  Each test checks the replies
aiosmtplib reports and what the queue database holds.
RFCs: 3207, 8314, 4954, 2920 (aiosmtplib pipelines MAIL/RCPT when PIPELINING is offered).
Not responsible for: event-loop details of the server (net/ tests cover them).
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage

import aiosmtplib
import pytest

from .conftest import HOST, PASSWORD, USER, QueueWatch, spawn, tls_context, unfolded_headers


def make_message(to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = USER
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"body of {subject}\n")
    return msg


async def _send(
    srv: spawn.SpawnedServer, port_name: str, to: str, subject: str, ctx: ssl.SSLContext
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    implicit = port_name == "submissions"
    return await aiosmtplib.send(
        make_message(to, subject),
        hostname=HOST,
        port=srv.ports[port_name],
        username=USER,
        password=PASSWORD,
        use_tls=implicit,
        start_tls=not implicit,
        tls_context=ctx,
        local_hostname="client.test",
        timeout=30,
    )


@pytest.mark.parametrize("port_name", ["submission", "submissions", "alt"])
def test_send_over_each_submission_port(
    server: spawn.SpawnedServer, watch: QueueWatch, port_name: str
) -> None:
    errors, reply = asyncio.run(
        _send(server, port_name, "bob@mx.test", f"aio {port_name}", tls_context(server))
    )
    assert errors == {}
    assert reply.startswith("2.0.0 OK queued as "), reply
    qid, rcpts = watch.only_new()
    assert reply.endswith(qid)
    assert rcpts == ["bob@mx.test"]
    headers = unfolded_headers(server.body(qid))
    assert "with ESMTPSA" in headers[0] and "(using TLS1." in headers[0], headers[0]
    assert f"Subject: aio {port_name}" in headers
    assert sum(h.startswith("Message-ID:") for h in headers) == 1
    assert sum(h.startswith("Date:") for h in headers) == 1


@pytest.mark.parametrize("mech", ["auth_plain", "auth_login", "auth_crammd5"])
def test_each_mechanism(server: spawn.SpawnedServer, watch: QueueWatch, mech: str) -> None:
    async def run() -> tuple[int, str, str]:
        smtp = aiosmtplib.SMTP(
            hostname=HOST, port=server.ports["submission"], tls_context=tls_context(server), start_tls=True
        )
        async with smtp:
            await smtp.ehlo()  # aiosmtplib forgets the extensions after STARTTLS
            assert smtp.supports_extension("auth")
            auth = await getattr(smtp, mech)(USER, PASSWORD)
            errors, reply = await smtp.send_message(make_message("carol@relay.test", mech))
            assert errors == {}
            return auth.code, auth.message, reply

    code, text, reply = asyncio.run(run())
    assert (code, text.split(" ", 1)[0]) == (235, "2.7.0"), text
    assert reply.startswith("2.0.0 OK queued as ")
    _, rcpts = watch.only_new()
    assert rcpts == ["carol@relay.test"]


def test_concurrent_sends(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    ctx = tls_context(server)
    ports = ["submission", "submissions", "alt"]

    async def run() -> list[tuple[dict[str, aiosmtplib.SMTPResponse], str]]:
        return await asyncio.gather(
            *(_send(server, ports[i % 3], f"user{i}@mx.test", f"concurrent {i}", ctx) for i in range(30))
        )

    results = asyncio.run(run())
    assert all(errors == {} for errors, _ in results)
    queue_ids = {reply.rsplit(" ", 1)[1] for _, reply in results}
    assert len(queue_ids) == 30, "every message got its own queue id"
    new = watch.new()
    assert set(new) == queue_ids
    assert sorted(r for rcpts in new.values() for r in rcpts) == sorted(f"user{i}@mx.test" for i in range(30))


def test_wrong_password_and_untrusted_certificate(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    async def wrong_password() -> None:
        # One mechanism only: aiosmtplib.send() would try all three, and three failures
        # lock the client address out (454 4.7.0) in this configuration.
        smtp = aiosmtplib.SMTP(
            hostname=HOST,
            port=server.ports["submissions"],
            use_tls=True,
            tls_context=tls_context(server),
            source_address=("127.0.0.6", 0),
        )
        async with smtp:
            await smtp.ehlo()
            await smtp.auth_plain(USER, "wrong")

    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
        asyncio.run(wrong_password())
    assert info.value.code == 535 and info.value.message.startswith("5.7.8"), info.value

    async def default_trust() -> None:
        # The system trust store does not know the test CA: verification must fail.
        await aiosmtplib.send(
            make_message("bob@mx.test", "nope"),
            hostname=HOST,
            port=server.ports["submissions"],
            username=USER,
            password=PASSWORD,
            use_tls=True,
            tls_context=ssl.create_default_context(),
        )

    with pytest.raises(aiosmtplib.SMTPConnectError):
        asyncio.run(default_trust())
    assert watch.new() == {}


def test_mx_refuses_foreign_recipient(server: spawn.SpawnedServer, watch: QueueWatch) -> None:
    async def run() -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        return await aiosmtplib.send(
            make_message("bob@mx.test", "mx"),
            sender="someone@example.org",
            recipients=["bob@mx.test", "victim@example.org"],
            hostname=HOST,
            port=server.ports["mx"],
            start_tls=True,
            tls_context=tls_context(server),
            source_address=("127.0.0.2", 0),
        )

    errors, reply = asyncio.run(run())
    refused = errors["victim@example.org"]
    assert (refused.code, refused.message.split(" ", 1)[0]) == (554, "5.7.1")
    _, rcpts = watch.only_new()
    assert rcpts == ["bob@mx.test"]
    assert reply.startswith("2.0.0 OK queued as ")
