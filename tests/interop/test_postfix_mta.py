"""Interop with the Postfix MTA itself (Debian's 3.7): Postfix relays into a real `mailwright serve`.

What an operator builds when Postfix forwards to mailwright as its relayhost, or a Postfix MX
delivers to mailwright's MX: a private Postfix instance (bench/postfix_instance.py, root only)
takes mail on its own smtpd or from its own `sendmail`, queues it, and its smtp client relays
every message to `[127.0.0.1]:<mailwright's mx port>`. Checked, each on the two queues' contents
and on Postfix's own log:
- TLS: `secure` level, the trustme CA, the certificate's name checked ("mx.test"); a wrong
  name is refused and nothing arrives; the right one: "Verified TLS connection", ESMTPS, and no
  warning in mailwright's log (Postfix closes right after QUIT, which logged one per delivery).
- ESMTP: PIPELINING (Postfix's trace of its session), 8BITMIME (an 8-bit body byte-exact),
  SMTPUTF8 (a UTF-8 recipient, whose ORCPT Postfix sends as rfc822 xtext of UTF-8), DSN
  (NOTIFY, RET, ENVID, ORCPT kept by mailwright's queue), SIZE (a message over mailwright's
  limit is bounced by Postfix, once, without a try; the bounce itself reaches mailwright).
- Temporary failures (mailwright's 452 4.3.1 for a full queue, then mailwright stopped):
  Postfix defers; after `postqueue -f` with mailwright back, every message arrives exactly once.
- Load: 500 messages from smtp-source through Postfix into each process model, exactly once.

No DNS anywhere: every nexthop is numeric (`[127.0.0.1]:port`, so no name is ever looked up),
`smtp_dns_support_level = disabled`, `smtpd_peername_lookup = no`. The certificate's name is
not found by resolving anything: the TLS policy table is keyed by the numeric nexthop and
names the one certificate name to accept (`secure match=mx.test`), as for a relayhost reached
by address.
The time-outs are short (20 s a wait, 40 s for the load); a run takes about 25 s.
RFCs: 5321, 3207, 2920, 6152, 6531, 6533, 3461, 1870, 3463.
Not responsible for: Postfix's own behaviour beyond what reaches mailwright and its log.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SQLiteQueueStore

from .conftest import HOST, QueueWatch, spawn, tool_path, unfolded_headers

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.postfix_instance import POSTQUEUE, PostfixInstance, PostfixUnavailable  # noqa: E402

# Injected from a second loopback address: `debug_peer_list = 127.0.0.1` then traces only
# Postfix's smtp client talking to mailwright, not its smtpd talking to the test.
INJECT_FROM = "127.0.0.2"
MAX_SIZE = 100_000  # mailwright's max_message_size here (announced as SIZE 100000)
DELIVERY = re.compile(
    r"postfix/(?:smtp|error)\[\d+\]: (?P<qid>\w+): to=<(?P<to>[^>]*)>,"
    r".* status=(?P<status>\w+) \((?P<text>.*)\)$"
)


def start_postfix(mw: spawn.SpawnedServer, *, trace: bool = False) -> PostfixInstance:
    """A private Postfix relaying everything to mailwright's mx port, TLS required and verified."""
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (CI runs as root)")
    pf = PostfixInstance(spawn.free_ports(1)[0], "postfix.test", relay_to=mw.ports["mx"])
    shutil.copy(mw.ca_file, pf.root / "ca.pem")  # readable by Postfix's processes, unlike pytest's tmp
    set_tls_match(pf, mw, "mx.test")
    pf.settings.update(
        {
            # Numeric nexthops only, and nothing that could ask a resolver.
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "secure",
            "smtp_tls_CAfile": str(pf.root / "ca.pem"),
            "smtp_tls_policy_maps": f"texthash:{pf.root / 'tls_policy'}",
            "smtp_tls_loglevel": "1",
            "smtputf8_enable": "yes",
            # Deferred mail waits for `postqueue -f`, never for a timer, within a test's time.
            "minimal_backoff_time": "1h",
            "maximal_backoff_time": "1h",
        }
    )
    if trace:
        pf.settings.update({"debug_peer_list": "127.0.0.1", "debug_peer_level": "1"})
    try:
        pf.start()
    except PostfixUnavailable as exc:
        pf.stop()
        pytest.fail(f"the private Postfix instance did not start: {exc}")
    return pf


def set_tls_match(pf: PostfixInstance, mw: spawn.SpawnedServer, name: str) -> None:
    """The TLS policy for mailwright's nexthop: require TLS, verify the chain and accept `name`."""
    (pf.root / "tls_policy").write_text(f"[127.0.0.1]:{mw.ports['mx']} secure match={name}\n")


def postfix_cmd(*args: str) -> None:
    res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def reload(pf: PostfixInstance, mw: spawn.SpawnedServer) -> None:
    """`postfix reload`, then wait until every smtp client process of the old configuration is
    gone: an idle one would otherwise deliver the next message with the old TLS policy."""
    old = {int(pid) for pid in re.findall(r"postfix/smtp\[(\d+)\]", maillog(pf))}
    postfix_cmd("/usr/sbin/postfix", "-c", str(pf.config_dir), "reload")

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in old)

    wait_until("the old smtp processes exited after the reload", gone, pf, mw, timeout=10)


def flush(pf: PostfixInstance) -> None:
    postfix_cmd(POSTQUEUE, "-c", str(pf.config_dir), "-f")


def maillog(pf: PostfixInstance, since: int = 0) -> str:
    """Postfix's log, from character `since` on."""
    path = pf.root / "maillog"
    return path.read_text(errors="replace")[since:] if path.exists() else ""


def deliveries(pf: PostfixInstance, since: int = 0) -> list[dict[str, str]]:
    """Every delivery attempt by Postfix's smtp client (or its error agent, for a destination it has
    given up on for now) logged from `since` on: queue id, recipient, status, reason."""
    return [m.groupdict() for m in map(DELIVERY.search, maillog(pf, since).splitlines()) if m]


def wait_until(
    what: str, cond: Callable[[], bool], pf: PostfixInstance, mw: spawn.SpawnedServer, timeout: float = 20.0
) -> float:
    """Poll `cond` until true; the seconds it took. On a time-out both logs' tails explain."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"{what}: not within {timeout:.0f} s\n--- postfix ---\n{pf.log_tail(8000)}\n"
                f"--- mailwright ---\n{mw.log.read_text(errors='replace')[-2000:]}"
            )
        time.sleep(0.05)
    return time.monotonic() - start


def inject(
    pf: PostfixInstance,
    sender: str,
    rcpts: list[str],
    message: bytes,
    mail_options: tuple[str, ...] = (),
    rcpt_options: tuple[str, ...] = (),
) -> None:
    """Hand one message to Postfix's smtpd; it must take every recipient."""
    with smtplib.SMTP(
        HOST, pf.port, local_hostname="client.test", source_address=(INJECT_FROM, 0), timeout=30
    ) as s:
        assert s.sendmail(sender, rcpts, message, list(mail_options), list(rcpt_options)) == {}


def message(
    marker: str,
    to: str,
    body: bytes = b"marker body\r\n",
    *,
    sender: str = "alice@client.test",
    extra: bytes = b"",
) -> bytes:
    """A complete message (Postfix adds no header but its Received:), identified by `marker`;
    `extra` header lines go last."""
    head = (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {marker}\r\n"
        f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{marker}@client.test>\r\n"
    )
    return head.encode() + extra + b"\r\n" + body


def store(mw: spawn.SpawnedServer) -> SQLiteQueueStore:
    return SQLiteQueueStore(mw.queue_db.parent, writer=False)


def stored(mw: spawn.SpawnedServer, qid: str) -> bytes:
    return b"".join(store(mw).read_body(qid))


def message_ids(mw: spawn.SpawnedServer, qids: list[str]) -> Counter[str]:
    """How often each Message-ID occurs among the stored messages `qids`."""
    found: Counter[str] = Counter()
    queue = store(mw)
    for qid in qids:
        head = unfolded_headers(b"".join(queue.read_body(qid)))
        ids = [h.split(":", 1)[1].strip() for h in head if h.lower().startswith("message-id:")]
        assert len(ids) == 1, (qid, ids)
        found[ids[0]] += 1
    return found


def warnings_since(mw: spawn.SpawnedServer, offset: int) -> list[str]:
    """mailwright's WARNING (and worse) log lines after byte `offset`: a normal delivery has none."""
    with mw.log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode("utf-8", "replace").splitlines()
    return [ln for ln in lines if re.search(r" (WARNING|ERROR|CRITICAL) ", ln)]


@pytest.fixture(scope="module")
def mw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spawn.SpawnedServer]:
    srv = spawn.make_server(
        tmp_path_factory.mktemp("postfix-mta"), workers=2, limits=f"max_message_size = {MAX_SIZE}"
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def pf(mw: spawn.SpawnedServer) -> Iterator[PostfixInstance]:
    inst = start_postfix(mw, trace=True)
    try:
        yield inst
    finally:
        inst.stop()


@pytest.fixture
def drained(pf: PostfixInstance) -> Iterator[PostfixInstance]:
    """The instance, checked empty before and after the test (nothing left, nothing carried over)."""
    assert pf.queued_files() == 0, pf.log_tail()
    yield pf
    assert pf.queued_files() == 0, pf.log_tail()


def test_relays_with_verified_tls(mw: spawn.SpawnedServer, drained: PostfixInstance) -> None:
    pf = drained
    watch = QueueWatch(mw)
    mark, start = mw.log.stat().st_size, len(maillog(pf))
    # First the wrong name: the chain verifies but the certificate is not for it, so Postfix's
    # `secure` level refuses to send; the message is deferred and nothing reaches mailwright.
    set_tls_match(pf, mw, "other.test")
    reload(pf, mw)
    inject(pf, "alice@client.test", ["bob@relay.test"], message("tls-0", "bob@relay.test"))
    wait_until(
        "the wrong name deferred",
        lambda: any(d["status"] == "deferred" for d in deliveries(pf, start)),
        pf,
        mw,
    )
    refused = [d for d in deliveries(pf, start) if d["status"] == "deferred"]
    assert len(refused) == 1 and "Server certificate not verified" in refused[0]["text"], refused
    assert watch.new() == {}
    # The right name: the deferred message and three more arrive, each over verified TLS.
    set_tls_match(pf, mw, "mx.test")
    reload(pf, mw)
    for n in range(1, 4):
        inject(pf, "alice@client.test", [f"bob{n}@relay.test"], message(f"tls-{n}", f"bob{n}@relay.test"))
    flush(pf)
    wait_until("4 messages relayed", lambda: len(watch.new()) == 4 and pf.queued_files() == 0, pf, mw)
    new = watch.new()
    assert sorted(r for rcpts in new.values() for r in rcpts) == [
        "bob1@relay.test",
        "bob2@relay.test",
        "bob3@relay.test",
        "bob@relay.test",
    ]
    assert message_ids(mw, list(new)) == Counter({f"<tls-{n}@client.test>": 1 for n in range(4)})
    for qid in new:
        received = unfolded_headers(stored(mw, qid))[0]
        assert received.startswith("Received: from postfix.bench.test ([127.0.0.1])"), received
        assert " with ESMTPS " in received and "(using TLS1.3 " in received, received
        assert store(mw).get_envelope(qid).tls  # type: ignore[union-attr]
    sent = [d for d in deliveries(pf, start) if d["status"] == "sent"]
    assert len(sent) == 4, sent
    assert {re.sub(r".* queued as ", "", d["text"]) for d in sent} == set(new), "Postfix's 250s name them"
    log = maillog(pf, start)
    verified = re.findall(
        rf"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:{mw.ports['mx']}: TLSv1\.[23]",
        log,
    )
    # One TLS session per message (Postfix reuses no TLS connection without tlsproxy); the one
    # "Untrusted" session is the wrong name's, whose chain verified but whose name did not.
    assert len(verified) == 4 and log.count("Untrusted TLS connection") == 1, log[-3000:]
    assert "Anonymous TLS" not in log and "Trusted TLS" not in log
    # Postfix ends each session with QUIT and a close without waiting for the 221: the TLS layer
    # closes then, and mailwright logged "WARNING asyncio: returning true from eof_received()
    # has no effect when using ssl" for every delivery (fixed in net.server).
    assert warnings_since(mw, mark) == []


def session_trace(pf: PostfixInstance, mw: spawn.SpawnedServer, marker: str) -> list[str]:
    """Postfix's smtp client's commands ("> ...") and mailwright's replies ("< ...") in the
    session that delivered the message whose MAIL FROM names `marker`, from `debug_peer_list`."""
    peer = f"127.0.0.1[127.0.0.1]:{mw.ports['mx']}: "
    lines = [ln for ln in maillog(pf).splitlines() if "postfix/smtp[" in ln and peer in ln]
    start = next(i for i, ln in enumerate(lines) if f"> {peer}MAIL FROM:<{marker}" in ln)
    pid = lines[start].split("postfix/smtp[", 1)[1].split("]", 1)[0]
    chat = [
        ln.split(peer, 1)[0][-2:] + ln.split(peer, 1)[1]
        for ln in lines[start:]
        if f"postfix/smtp[{pid}]" in ln
    ]
    return [c for c in chat if c[:2] in ("> ", "< ")]


def test_pipelining_and_8bitmime(mw: spawn.SpawnedServer, drained: PostfixInstance) -> None:
    pf = drained
    watch = QueueWatch(mw)
    # Every 8-bit octet that can stand in a line, declared as 8bit MIME: a hop without 8BITMIME
    # would make Postfix convert it to quoted-printable, so only byte-exactness shows it was
    # negotiated (and BODY=8BITMIME must reach mailwright's queue).
    body = b"".join(bytes(range(lo, lo + 16)) + b"\r\n" for lo in range(0x80, 0x100, 16))
    body += "Grüße aus Köln, 東京\r\n.leading dot\r\n".encode()
    mime = (
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    msg = message("eight", "bob@relay.test", body, sender="eight@client.test", extra=mime)
    inject(pf, "eight@client.test", ["bob@relay.test"], msg, ("BODY=8BITMIME",))
    wait_until("the 8-bit message relayed", lambda: len(watch.new()) == 1 and pf.queued_files() == 0, pf, mw)
    qid, rcpts = watch.only_new()
    assert rcpts == ["bob@relay.test"]
    data = stored(mw, qid)
    head, _, got_body = data.partition(b"\r\n\r\n")
    assert got_body == body, "the 8-bit body arrived changed"
    assert head.endswith(msg.partition(b"\r\n\r\n")[0]), head  # Postfix's and mailwright's Received: on top
    env = store(mw).get_envelope(qid)
    assert env is not None and "BODY=8BITMIME" in env.mail_params.upper().split(), env
    # PIPELINING: MAIL, RCPT and DATA went out before the first reply came back (RFC 2920 3.1).
    chat = session_trace(pf, mw, "eight@client.test")
    assert [c[:6] for c in chat[:6]] == ["> MAIL", "> RCPT", "> DATA", "< 250 ", "< 250 ", "< 354 "], chat[:8]


def test_smtputf8_recipient(mw: spawn.SpawnedServer, drained: PostfixInstance) -> None:
    pf = drained
    watch = QueueWatch(mw)
    rcpt = "jösé@relay.test"
    msg = message("utf8", rcpt, sender="grüße@client.test").replace(
        b"Subject: utf8", "Subject: ünïcödé".encode()
    )
    inject(pf, "grüße@client.test", [rcpt], msg, ("SMTPUTF8", "BODY=8BITMIME"))
    wait_until(
        "the SMTPUTF8 message relayed", lambda: len(watch.new()) == 1 and pf.queued_files() == 0, pf, mw
    )
    qid, rcpts = watch.only_new()
    assert rcpts == [rcpt]
    env = store(mw).get_envelope(qid)
    assert env is not None and env.sender == "grüße@client.test", env
    assert "SMTPUTF8" in env.mail_params.upper().split(), env
    received = unfolded_headers(stored(mw, qid))[0]
    assert " with UTF8SMTPS " in received, received
    assert stored(mw, qid).endswith(msg.partition(b"\r\n\r\n")[0] + b"\r\n\r\nmarker body\r\n")


def test_dsn_parameters_are_kept(mw: spawn.SpawnedServer, drained: PostfixInstance) -> None:
    pf = drained
    watch = QueueWatch(mw)
    # Postfix's own sendmail (postdrop into the maildrop queue, then pickup), as a local program would.
    res = subprocess.run(
        [
            "/usr/sbin/sendmail",
            "-C",
            str(pf.config_dir),
            "-f",
            "dsn@client.test",
            "-N",
            "success,delay,failure",
            "-R",
            "hdrs",
            "-V",
            "envid-42",
            "carol@relay.test",
        ],
        input=message("dsn-1", "carol@relay.test", sender="dsn@client.test"),
        capture_output=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    # Over SMTP: NEVER, a full RET, and xtext ('+' and '=' spelled +2B and +3D) in ENVID and ORCPT.
    inject(
        pf,
        "dsn2@client.test",
        ["dave@relay.test"],
        message("dsn-2", "dave@relay.test", sender="dsn2@client.test"),
        ("RET=FULL", "ENVID=a+2Bb+3Dc"),
        ("NOTIFY=NEVER", "ORCPT=rfc822;dave+2Bold@relay.test"),
    )
    wait_until("both DSN messages relayed", lambda: len(watch.new()) == 2 and pf.queued_files() == 0, pf, mw)
    envelopes = {}
    for qid in watch.new():
        env = store(mw).get_envelope(qid)
        assert env is not None
        envelopes[env.sender] = env
    first, second = envelopes["dsn@client.test"], envelopes["dsn2@client.test"]
    params = first.mail_params.upper().split()
    assert "RET=HDRS" in params and "ENVID=ENVID-42" in params, first.mail_params
    [carol] = first.recipients
    assert (carol.address, carol.notify, carol.orcpt) == (
        "carol@relay.test",
        "DELAY,FAILURE,SUCCESS",
        "RFC822;carol@relay.test",
    )
    params = second.mail_params.split()
    assert "RET=FULL" in params and "ENVID=a+2Bb+3Dc" in params, second.mail_params
    [dave] = second.recipients
    assert (dave.address, dave.notify, dave.orcpt) == (
        "dave@relay.test",
        "NEVER",
        "RFC822;dave+old@relay.test",
    )
    # Postfix handed the notification duty on: no "relayed" DSN went back to either sender.
    assert not [d for d in deliveries(pf) if d["to"].startswith("dsn")], deliveries(pf)


def test_oversized_message_bounced_once(mw: spawn.SpawnedServer, drained: PostfixInstance) -> None:
    pf = drained
    watch = QueueWatch(mw)
    size = MAX_SIZE + 50_000
    body = (b"x" * 98 + b"\r\n") * (size // 100)
    inject(
        pf,
        "sizer@relay.test",
        ["big@relay.test"],
        message("big", "big@relay.test", body, sender="sizer@relay.test"),
    )
    # Postfix reads SIZE 100000 from mailwright's EHLO and bounces at once, without a MAIL
    # command; its bounce (null sender, to sizer@relay.test) is relayed to mailwright in turn.
    wait_until("the bounce relayed", lambda: len(watch.new()) == 1 and pf.queued_files() == 0, pf, mw)
    big = [d for d in deliveries(pf) if d["to"] == "big@relay.test"]
    assert len(big) == 1 and big[0]["status"] == "bounced", big
    assert re.search(
        rf"message size \d+ exceeds size limit {MAX_SIZE} of server 127\.0\.0\.1", big[0]["text"]
    ), big
    qid, rcpts = watch.only_new()
    assert rcpts == ["sizer@relay.test"]
    env = store(mw).get_envelope(qid)
    assert env is not None and env.sender == "", env
    report = stored(mw, qid)
    assert b"exceeds size limit" in report and len(report) < MAX_SIZE
    assert "MAIL FROM:<sizer@relay.test>" not in maillog(pf)


def restart(mw: spawn.SpawnedServer, config: str) -> None:
    mw.stop()
    mw.config.write_text(config)
    mw.start()


def test_temporary_failures_deferred_then_delivered_once(
    mw: spawn.SpawnedServer, drained: PostfixInstance
) -> None:
    pf = drained
    watch = QueueWatch(mw)
    everyone = {f"later{n}@relay.test" for n in range(5)}
    normal = mw.config.read_text()
    # A real 452 4.3.1: mailwright's queue keeps a reserve of free space no disk can offer.
    full = normal.replace("\n[[listeners]]", f"\n[queue]\nmin_free = {1 << 62}\n\n[[listeners]]", 1)
    restart(mw, full)
    try:
        for n in range(3):
            inject(
                pf,
                "alice@client.test",
                [f"later{n}@relay.test"],
                message(f"later-{n}", f"later{n}@relay.test"),
            )
        wait_until(
            "3 deferred on 452",
            lambda: sum("452 4.3.1" in d["text"] and d["to"] in everyone for d in deliveries(pf)) == 3,
            pf,
            mw,
        )
        assert watch.new() == {}
        # Then mailwright is down: two more, and a flush of all five, are refused at connect.
        mw.stop()
        for n in range(3, 5):
            inject(
                pf,
                "alice@client.test",
                [f"later{n}@relay.test"],
                message(f"later-{n}", f"later{n}@relay.test"),
            )
        flush(pf)
        wait_until(
            "all 5 deferred while mailwright is down",
            lambda: {d["to"] for d in deliveries(pf) if "Connection refused" in d["text"]} == everyone,
            pf,
            mw,
        )
        assert pf.queued_files() == 5
        assert {d["status"] for d in deliveries(pf) if d["to"] in everyone} == {"deferred"}
    finally:
        restart(mw, normal)
    flush(pf)
    wait_until(
        "all 5 delivered after the flush", lambda: pf.queued_files() == 0 and len(watch.new()) >= 5, pf, mw
    )
    time.sleep(0.5)  # a duplicate would arrive now, or not at all
    new = watch.new()
    assert sorted(r for rcpts in new.values() for r in rcpts) == sorted(everyone)
    assert message_ids(mw, list(new)) == Counter({f"<later-{n}@client.test>": 1 for n in range(5)})
    sent = [d for d in deliveries(pf) if d["status"] == "sent" and d["to"] in everyone]
    assert sorted(d["to"] for d in sent) == sorted(everyone), sent
    assert {re.sub(r".* queued as ", "", d["text"]) for d in sent} == set(new)


@pytest.mark.parametrize("workers", [1, 2])
def test_load_through_postfix_exactly_once(tmp_path: Path, workers: int) -> None:
    count = 500
    with spawn.running_server(tmp_path / "mw", workers=workers) as srv:
        pf = start_postfix(srv)
        try:
            watch = QueueWatch(srv)
            start = time.monotonic()
            res = subprocess.run(
                [
                    tool_path("smtp-source"),
                    "-s",
                    "10",
                    "-m",
                    str(count),
                    "-N",
                    "-l",
                    "1024",
                    "-M",
                    "client.test",
                    "-f",
                    "load@client.test",
                    "-t",
                    "rcpt@relay.test",
                    f"{HOST}:{pf.port}",
                ],
                capture_output=True,
                timeout=60,
            )
            assert res.returncode == 0, res.stderr.decode()
            injected = time.monotonic() - start
            wait_until(
                f"{count} messages relayed",
                lambda: pf.queued_files() == 0 and len(watch.new()) >= count,
                pf,
                srv,
                timeout=40,
            )
            elapsed = time.monotonic() - start
            time.sleep(0.5)  # a duplicate would arrive now, or not at all
            new = watch.new()
            sent = [d for d in deliveries(pf) if d["status"] == "sent"]
            assert len(sent) == count and len({d["qid"] for d in sent}) == count, Counter(
                d["status"] for d in deliveries(pf)
            )
            # -N numbers the recipients: each is one message, and each arrived exactly once.
            expected = sorted(d["to"] for d in sent)
            assert len(set(expected)) == count
            assert len(new) == count and sorted(r for rcpts in new.values() for r in rcpts) == expected
            assert {re.sub(r".* queued as ", "", d["text"]) for d in sent} == set(new)
            ids = message_ids(srv, list(new))
            assert len(ids) == sum(ids.values()) == count, ids.most_common(3)
            assert warnings_since(srv, 0) == []
            print(
                f"workers={workers}: {count} messages injected in {injected:.1f} s,"
                f" all in mailwright after {elapsed:.1f} s"
            )
        finally:
            pf.stop()
