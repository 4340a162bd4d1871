"""`mailwright queue list|show|hold|release|delete` while a real server accepts mail under load.

An operator runs `mailq` and `postsuper -h/-H/-d` at any moment on a busy Postfix; the same must
hold here, in both process models (one process, `workers = 1`; a master and 2 workers). Each test
starts a real `mailwright serve` on a queue that already holds `BACKLOG` messages (so that `list`
has real work to do), loads it with Postfix's smtp-source (runs of 400 1 KB messages over 3
sessions, one after the other, with -v so that every "250 ... queued as ID" is in its output) and
with raw-socket clients (three sending 1 KB messages, one sending 100 KiB bodies, which the queue
keeps as spool files), each message with a unique marker in its Subject and each 250 timed from the
end of data. Meanwhile the test runs the CLI, one command after the other, and checks:

- `list` (through --config, through --queue-dir, and `| head -1` in a shell with pipefail): exit
  0, nothing on stderr, output of the documented shape (header; each message a line with its
  recipients below it and a blank line; a summary whose count and KB are those of the rows
  listed); every message that got its 250 before the command started is listed (a 250 means
  committed), held ones marked `!`, deleted ones gone;
- `show ID` (upper or lower case): exit 0, the envelope and the message's own headers; `show
  --body` of a spooled message: the message as sent, after the Received: line the server added;
  `show` of a message whose headers carry ESC/OSC/CSI sequences or a bare CR (sent by a client
  during the load) writes them out as text: no control character but TAB and LF reaches the
  terminal (before: they did, so a sender could retitle the operator's terminal or print one
  Subject over another);
- `hold`, `release`, `delete` (upper or lower case): exit 0 and one line; the effect is read back
  from queue.db with sqlite3 (not through the CLI); a deleted spooled body's file is gone at once;
  `delete` of the same id again, or `show` of a deleted id, or of text that is no id: exit 1, one
  line naming it; two operators deleting one message at the same moment: one exits 0, one 1;
- no command prints a traceback or says "locked";
- then, for check 4, a read transaction held open for `HOLD` seconds by another connection (what
  a slow `list` or an operator's sqlite3 shell does) must not stop the server's commits: 250s keep
  coming and none takes longer than `STALL_BOUND`;
- after the load: every message any client got a 250 for is in the queue exactly once, under the
  id the 250 named, apart from those the test deleted; no client got anything but the expected
  replies (the CLI must never cost a 4xx); the server exits 0 with no WARNING, ERROR or traceback
  in its log; the spool holds exactly the files the rows name (no orphan, no temp file).

Figures (CLI run times, 250 latencies with and without the reader) are printed (`pytest -s`).

Apart from the load: the CLI of this build meets a queue of another schema version (after an
upgrade, the server that still runs keeps the old schema until it restarts): one line naming the
version and the fix, exit 1, nothing changed (before: a traceback from `list`).

Not covered here: delivery (not built yet), and the CLI on a quiet queue (tests/queue/test_queue_cmd.py).
"""

from __future__ import annotations

import re
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE

import pytest

import spawn
from mailwright.queue.committer import SPOOL_SUFFIX
from mailwright.queue.model import queue_id_number, queue_id_text
from mailwright.queue.sqlite import _MIGRATIONS, SCHEMA_VERSION, SQLiteQueueStore

from .conftest import QUEUED, RawSMTP, ServerFactory, log_size
from .test_durability import RCPT, message, spool_state
from .test_signals_under_load import SOURCE_SENDER, smtp_source

LOAD_SENDER = "load@client.test"
HOSTILE_SENDER = "hostile@client.test"
BACKLOG = 10_000  # messages in the queue before the server starts
BACKLOG_SENDER = "backlog@old.test"
SMALL, BIG = 1024, 100 * 1024  # BIG is past the 64 KiB that stay in the row: a spool file
CLI_PHASE = 3.0  # seconds of CLI commands under load
BASELINE, HOLD = 1.0, 2.0  # seconds without, then with, a reader holding its snapshot
STALL_BOUND = 1.5  # a 250 slower than this means a commit waited for the CLI or the reader
REPLY_TIMEOUT = 20.0
LOG_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", re.M)
SOURCE_ACK = re.compile(r"<<< 250 \S+ OK queued as (\S+)\n")
SOURCE_DOT = re.compile(r"^\S*smtp-source: \.$", re.M)
SOURCE_TROUBLE = re.compile(r"<<< [45]\d\d|warning:|fatal:")
SUBJECT = re.compile(rb"^Subject: (Q-\S+)\r$", re.M)

# `queue list`'s lines (see cli/queue_cmd.py): a message, one of its recipients, the summary.
LIST_HEADER = re.compile(r"^-Queue ID- +--Size-- ---Arrival Time----  -Sender/Recipient-+$")
LIST_MESSAGE = re.compile(
    r"^([0-9A-Z]{13})([ !]) +(\d+) [A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d  (\S+)$"
)
LIST_RECIPIENT = re.compile(r"^ {46}(\S+)  \[([a-z]+)\]")
LIST_SUMMARY = re.compile(r"^-- (\d+) KB in (\d+) messages?\.$")


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Acked:
    marker: str
    id: str
    big: bool
    at: float  # monotonic time of the 250
    latency: float  # from the end of data sent to the 250 read


@dataclass
class Load:
    """What the raw clients and smtp-source saw."""

    tmp: Path
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: list[Acked] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    source_logs: list[Path] = field(default_factory=list)
    source_codes: list[int] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def snapshot(self) -> list[Acked]:
        with self.lock:
            return list(self.acked)

    def source_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in list(self.source_logs) if p.exists())

    def source_acked(self) -> set[str]:
        return set(SOURCE_ACK.findall(self.source_text()))


class Unexpected(Exception):
    pass


def expect(reply: tuple[int, str], code: int, what: str) -> None:
    if reply[0] != code:
        raise Unexpected(f"{what}: {reply[0]} {reply[1]!r}")


def raw_client(port: int, name: str, load: Load, size: int, per_conn: int) -> None:
    """Sends `size`-byte messages, `per_conn` a connection, until told to stop; any reply but the
    expected one, or a dropped connection, is a failure (the server runs throughout)."""
    sent = 0
    deadline = time.monotonic() + 120
    while not load.stop.is_set() and time.monotonic() < deadline:
        try:
            client = RawSMTP(port, timeout=REPLY_TIMEOUT)
        except OSError as exc:
            load.fail(f"{name}: connect: {exc!r}")
            return
        try:
            expect(client.reply(), 220, "greeting")
            expect(client.cmd("EHLO load.test"), 250, "EHLO")
            for _ in range(per_conn):
                if load.stop.is_set():
                    break
                marker = f"Q-{name}-{sent}-{uuid.uuid4().hex[:12]}"
                sent += 1
                expect(client.cmd(f"MAIL FROM:<{LOAD_SENDER}>"), 250, "MAIL")
                expect(client.cmd(f"RCPT TO:<{RCPT}>"), 250, "RCPT")
                expect(client.cmd("DATA"), 354, "DATA")
                data = message(marker, size) + b".\r\n"
                t0 = time.monotonic()
                client.send(data)
                code, text = client.reply()
                t1 = time.monotonic()
                found = QUEUED.search(text)
                if code != 250 or found is None:
                    raise Unexpected(f"end of data ({marker}): {code} {text!r}")
                with load.lock:
                    load.acked.append(Acked(marker, found.group(1), size > SMALL, t1, t1 - t0))
            expect(client.cmd("QUIT"), 221, "QUIT")
        except (OSError, Unexpected) as exc:
            load.fail(f"{name}: {exc}")
            return
        finally:
            client.close()


def source_loop(port: int, load: Load) -> None:
    """smtp-source runs of 400 messages, one after another, each ending by itself."""
    run = 0
    while not load.stop.is_set():
        path = load.tmp / f"smtp-source-{run}.log"
        run += 1
        load.source_logs.append(path)
        with path.open("wb") as out:
            done = subprocess.run(
                [
                    *(smtp_source(), "-v", "-s", "3", "-m", "400", "-l", str(SMALL)),
                    *("-f", SOURCE_SENDER, "-t", RCPT, f"127.0.0.1:{port}"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        load.source_codes.append(done.returncode)


def start_load(srv: spawn.SpawnedServer, tmp: Path) -> Load:
    load = Load(tmp)
    port = srv.ports["mx"]
    load.threads = [
        threading.Thread(target=raw_client, args=(port, f"s{i}", load, SMALL, 5 if i else 10_000))
        for i in range(3)
    ]
    load.threads.append(threading.Thread(target=raw_client, args=(port, "big", load, BIG, 3)))
    load.threads.append(threading.Thread(target=source_loop, args=(port, load)))
    for t in load.threads:
        t.daemon = True
        t.start()
    deadline = time.monotonic() + 15
    while sum(a.big for a in load.snapshot()) < 4 or len(load.source_acked()) < 50:
        assert not load.failures, load.failures
        assert time.monotonic() < deadline, f"no load: {len(load.acked)} acked, {load.source_text()[-800:]}"
        time.sleep(0.05)
    return load


def stop_load(load: Load) -> None:
    load.stop.set()
    for t in load.threads:
        t.join(REPLY_TIMEOUT + 40)
    assert not any(t.is_alive() for t in load.threads), "a client is still waiting for the server"


def send_hostile(port: int) -> list[str]:
    """Two messages whose headers try to drive the operator's terminal: ESC, OSC and CSI (C0 and
    C1) in DATA, and a bare CR (allowed in BDAT) to print one Subject over another."""
    client = RawSMTP(port, timeout=REPLY_TIMEOUT)
    ids = []
    try:
        expect(client.reply(), 220, "greeting")
        expect(client.cmd("EHLO hostile.test"), 250, "EHLO")
        for how, data in (
            ("DATA", b"Subject: \x1b]2;owned\x07\x1b[1A\x1b[2Khi\r\nX-Csi: \xc2\x9b31mred\r\n\r\nbody\r\n"),
            ("BDAT", b"Subject: pay invoice 4711\rSubject: hello\r\n\r\nbody\r\n"),
        ):
            expect(client.cmd(f"MAIL FROM:<{HOSTILE_SENDER}>"), 250, "MAIL")
            expect(client.cmd(f"RCPT TO:<{RCPT}>"), 250, "RCPT")
            if how == "DATA":
                expect(client.cmd("DATA"), 354, "DATA")
                client.send(data + b".\r\n")
            else:
                client.send(f"BDAT {len(data)} LAST\r\n".encode() + data)
            code, text = client.reply()
            found = QUEUED.search(text)
            assert code == 250 and found is not None, (how, code, text)
            ids.append(found.group(1))
        expect(client.cmd("QUIT"), 221, "QUIT")
    finally:
        client.close()
    return ids


# -- the queue, read straight from queue.db -------------------------------------------------------


def connect(qdir: Path) -> sqlite3.Connection:
    return sqlite3.connect(qdir / "queue.db", timeout=10, isolation_level=None)


def db_row(qdir: Path, qid: str) -> tuple[int, str | None, int] | None:
    """(held, spool_name, recipient rows) of `qid`, or None when it has no row."""
    number = queue_id_number(qid)
    assert number is not None, qid
    db = connect(qdir)
    try:
        row = db.execute("SELECT held, spool_name FROM messages WHERE id = ?", (number,)).fetchone()
        (rcpts,) = db.execute("SELECT count(*) FROM recipients WHERE message_id = ?", (number,)).fetchone()
    finally:
        db.close()
    if row is None:
        assert rcpts == 0, f"{qid}: recipient rows without their message"
        return None
    return int(row[0]), row[1], int(rcpts)


def stored_markers(qdir: Path) -> tuple[Counter[str], dict[str, str], set[str], list[str]]:
    """(marker -> times stored, marker -> id) of the raw clients' messages, smtp-source's ids, and
    the ids whose spool file is missing."""
    missing: list[str] = []
    markers: Counter[str] = Counter()
    where: dict[str, str] = {}
    source: set[str] = set()
    db = connect(qdir)
    try:
        rows = db.execute(
            "SELECT id, sender, spool_name, substr(body, 1, 300) FROM messages WHERE sender IN (?, ?)",
            (LOAD_SENDER, SOURCE_SENDER),
        ).fetchall()
    finally:
        db.close()
    for number, sender, spool_name, head in rows:
        qid = queue_id_text(number)
        if sender == SOURCE_SENDER:
            source.add(qid)
            continue
        if spool_name is not None:
            try:
                with (qdir / "spool" / spool_name).open("rb") as f:
                    head = f.read(300)
            except FileNotFoundError:
                missing.append(qid)
                continue
        found = SUBJECT.search(bytes(head))
        assert found is not None, f"{qid}: a stored message without its marker"
        marker = found.group(1).decode()
        markers[marker] += 1
        where[marker] = qid
    return markers, where, source, missing


def fill_backlog(qdir: Path, count: int) -> None:
    """`count` messages of an hour ago, written as the server's writer would (schema and all)."""
    store = SQLiteQueueStore(qdir, writer_thread=False)
    store.close_writer_role()
    start = int((time.time() - 3600) * 1000) << 20
    body = message("backlog", 600)
    db = connect(qdir)
    try:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO messages (id, sender, client_ip, helo, received_at, size, body)"
            " VALUES (?, ?, '192.0.2.1', 'old.test', ?, ?, ?)",
            ((start + i, BACKLOG_SENDER, time.time() - 3600, len(body), body) for i in range(count)),
        )
        db.executemany(
            "INSERT INTO recipients (message_id, idx, address) VALUES (?, 0, ?)",
            ((start + i, f"r{i}@elsewhere.test") for i in range(count)),
        )
        db.execute("COMMIT")
    finally:
        db.close()


# -- the CLI -------------------------------------------------------------------------------------


@dataclass
class Operator:
    """Runs `mailwright queue ...` and keeps what it did and how long each command took."""

    srv: spawn.SpawnedServer
    qdir: Path
    times: dict[str, list[float]] = field(default_factory=dict)
    windows: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each command
    held: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def run(self, *args: str, shell: str | None = None) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        if shell is not None:
            res = subprocess.run(
                ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60
            )
        else:
            res = self.srv.cli("queue", *args)
        t1 = time.monotonic()
        self.times.setdefault(args[0] if args else "list | head -1", []).append(t1 - t0)
        self.windows.append((t0, t1))
        both = res.stdout + res.stderr
        assert "Traceback" not in both, f"queue {' '.join(args)}:\n{res.stderr}"
        assert "locked" not in both.lower(), f"queue {' '.join(args)}: {res.stderr}"
        return res

    def list(self, load: Load, *extra: str) -> dict[str, tuple[bool, int, int]]:
        """`queue list`, checked; returns id -> (held, size, recipients)."""
        before = {a.id for a in load.snapshot()} | load.source_acked()
        res = self.run("list", *extra)
        assert res.returncode == 0 and res.stderr == "", (res.returncode, res.stderr)
        listed = parse_listing(res.stdout)
        missing = sorted(before - self.deleted - set(listed))
        assert missing == [], f"acknowledged before `list` began, yet not listed: {missing[:5]}"
        assert not self.deleted & set(listed), f"deleted, yet listed: {sorted(self.deleted & set(listed))}"
        marks = {qid for qid in self.held - self.released if not listed[qid][0]}
        assert not marks, f"held, but listed without '!': {sorted(marks)}"
        unmarked = {qid for qid in self.released if listed[qid][0]}
        assert not unmarked, f"released, but listed with '!': {sorted(unmarked)}"
        return listed

    def show(self, qid: str, typed: str) -> str:
        res = self.run("show", typed)
        assert res.returncode == 0 and res.stderr == "", (qid, res.returncode, res.stderr)
        assert f"Queue ID:     {qid}" in res.stdout and f"<{RCPT}>" in res.stdout, res.stdout
        return res.stdout

    def change(self, verb: str, qid: str, typed: str) -> None:
        """`hold`, `release` or `delete` of a message that is there: exit 0, one line, and the
        effect in queue.db."""
        before = db_row(self.qdir, qid)
        assert before is not None, f"{qid} is not in the queue"
        res = self.run(verb, typed)
        past = {"hold": "held", "release": "released", "delete": "deleted"}[verb]
        assert (res.returncode, res.stdout, res.stderr) == (0, f"{typed}: {past}\n", ""), (verb, qid, res)
        after = db_row(self.qdir, qid)
        if verb == "delete":
            assert after is None, f"{qid}: still in queue.db after `delete` said {res.stdout!r}"
            self.deleted.add(qid)
            spool_name = before[1]
            if spool_name is not None:
                assert not (self.qdir / "spool" / spool_name).exists(), f"{qid}: spool/{spool_name} left"
        else:
            assert after is not None and after[0] == (verb == "hold"), f"{qid} after {verb}: {after}"
            (self.held if verb == "hold" else self.released).add(qid)

    def body(self, a: Acked) -> None:
        """`show --body`: the whole message, as stored."""
        res = self.run("show", "--body", a.id)
        assert res.returncode == 0 and res.stderr == "", (a.id, res.returncode, res.stderr)
        sent = message(a.marker, BIG if a.big else SMALL).decode().replace("\r\n", "\n")  # text mode
        assert res.stdout.startswith("Received: ") and res.stdout.endswith("\n" + sent), a.id

    def race_delete(self, qid: str) -> None:
        """Two operators delete the same message at once: one of them does, the other is told no."""
        t0 = time.monotonic()
        argv = [sys.executable, "-m", "mailwright.cli.main", "--config", str(self.srv.config)]
        procs = [
            subprocess.Popen([*argv, "queue", "delete", qid], stdout=PIPE, stderr=PIPE, text=True)
            for _ in range(2)
        ]
        outs = [(*p.communicate(timeout=60), p.returncode) for p in procs]  # (out, err, status)
        self.windows.append((t0, time.monotonic()))
        assert sorted(code for _, _, code in outs) == [0, 1], outs
        assert all("Traceback" not in err and "locked" not in err.lower() for _, err, _ in outs), outs
        assert db_row(self.qdir, qid) is None
        self.deleted.add(qid)

    def show_hostile(self, qid: str) -> None:
        """`show` of a message with control characters in its headers writes them out as text:
        nothing but TAB and line feeds reaches the terminal."""
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailwright.cli.main",
                "--config",
                str(self.srv.config),
                "queue",
                "show",
                qid,
            ],
            capture_output=True,
            timeout=60,
        )
        assert res.returncode == 0 and res.stderr == b"", (qid, res)
        text = res.stdout.decode()
        controls = sorted({ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n"})
        assert controls == [], f"`queue show {qid}` sent control characters to the terminal: {controls}"
        assert "\\x1b]2;owned" in text or "pay invoice 4711\\x0dSubject: hello" in text, text

    def unknown(self, verb: str, qid: str) -> None:
        res = self.run(verb, qid)
        lines = res.stderr.splitlines()
        assert res.returncode == 1 and res.stdout == "", (verb, qid, res)
        assert len(lines) == 1 and qid in lines[0], f"`queue {verb} {qid}`: {res.stderr!r}"


def parse_listing(out: str) -> dict[str, tuple[bool, int, int]]:
    """`queue list` output, checked line by line; id -> (held, size, recipients)."""
    assert out.endswith("\n"), out[-200:]
    lines = out[:-1].split("\n")
    if lines == ["Mail queue is empty"]:
        return {}
    assert LIST_HEADER.match(lines[0]), lines[0]
    summary = LIST_SUMMARY.match(lines[-1])
    assert summary is not None, f"no summary line: {lines[-3:]}"
    listed: dict[str, tuple[bool, int, int]] = {}
    current: str | None = None
    for number, line in enumerate(lines[1:-1], start=2):
        if current is None:
            head = LIST_MESSAGE.match(line)
            assert head is not None, f"line {number}: not a message line: {line!r}"
            current = head.group(1)
            assert current not in listed, f"{current} listed twice"
            listed[current] = (head.group(2) == "!", int(head.group(3)), 0)
        elif line == "":
            assert listed[current][2] > 0, f"{current}: listed without recipients"
            current = None
        else:
            assert LIST_RECIPIENT.match(line), f"line {number}: not a recipient line: {line!r}"
            held, size, rcpts = listed[current]
            listed[current] = (held, size, rcpts + 1)
    assert current is None, "the last message is not followed by a blank line"
    kb, count = int(summary.group(1)), int(summary.group(2))
    total = sum(size for _, size, _ in listed.values())
    assert (count, kb) == (len(listed), (total + 1023) // 1024), (
        f"summary {lines[-1]!r} for {len(listed)} messages of {total} bytes"
    )
    return listed


# -- the test ------------------------------------------------------------------------------------


def latencies(load: Load, start: float, end: float) -> list[float]:
    """End-of-data-to-250 times of the small messages answered between `start` and `end`."""
    return [a.latency for a in load.snapshot() if not a.big and start <= a.at <= end]


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    median = statistics.median(values)
    return (
        f"n={len(values)} median {median * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {values[-1] * 1e3:.1f} ms"
    )


def operate(op: Operator, load: Load) -> int:
    """Commands one after the other for `CLI_PHASE` seconds; returns how many cycles ran."""
    used: set[str] = set()

    def fresh(big: bool) -> Acked:
        deadline = time.monotonic() + 10
        while True:
            assert load.failures == [], load.failures
            for a in load.snapshot():
                if a.big == big and a.id not in used:
                    used.add(a.id)
                    return a
            assert time.monotonic() < deadline, "no fresh acknowledged message to work on"
            time.sleep(0.05)

    cycles = 0
    end = time.monotonic() + CLI_PHASE
    while time.monotonic() < end or cycles < 1:
        # Ids typed as an operator may: some commands get them in upper case, some in lower case
        # (the other way round in the next cycle).
        one, other = (str.upper, str.lower) if cycles % 2 == 0 else (str.lower, str.upper)
        small, big, gone, raced = fresh(False), fresh(True), fresh(False), fresh(True)
        listed = op.list(load)
        assert small.id in listed and big.id in listed
        text = op.show(small.id, other(small.id))
        assert f"Subject: {small.marker}" in text, text
        op.change("hold", small.id, one(small.id))
        op.list(load, "--queue-dir", str(op.qdir))
        op.change("release", small.id, other(small.id))
        op.body(big)
        op.change("delete", big.id, other(big.id))
        op.unknown("delete", big.id)
        op.change("delete", gone.id, one(gone.id))
        op.unknown("show", gone.id)
        op.unknown("hold", gone.id.lower())
        op.unknown("show", "not-a-queue-id")
        op.race_delete(raced.id)
        head = op.run(
            shell=f"{sys.executable} -m mailwright.cli.main --config {op.srv.config} queue list | head -1"
        )
        assert head.returncode == 0 and head.stderr == "", head
        assert LIST_HEADER.match(head.stdout.rstrip("\n")), head.stdout
        cycles += 1
    return cycles


def reader_probe(qdir: Path, load: Load) -> dict[str, str | int]:
    """Hold a read transaction (one snapshot) for `HOLD` s and measure the server meanwhile."""
    assert load.failures == [], load.failures
    t0 = time.monotonic()
    time.sleep(BASELINE)
    t1 = time.monotonic()
    reader = connect(qdir)
    try:
        reader.execute("BEGIN")
        (seen,) = reader.execute("SELECT count(*) FROM messages").fetchone()
        t2 = time.monotonic()
        time.sleep(HOLD)
        (still,) = reader.execute("SELECT count(*) FROM messages").fetchone()
        t3 = time.monotonic()
        wal = (qdir / "queue.db-wal").stat().st_size
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert still == seen, "the probe's snapshot moved: it held no read transaction"
    before, during = latencies(load, t0, t1), latencies(load, t2, t3)
    after = db_row_count(qdir)
    assert after > seen, "the server committed nothing while the reader held its snapshot"
    rate_before, rate_during = len(before) / (t1 - t0), len(during) / (t3 - t2)
    assert during, f"not one 250 in the {HOLD} s a reader held its snapshot: the server stalled"
    assert max(during) < STALL_BOUND, f"250s while a reader held its snapshot: {summary(during)}"
    assert rate_during > rate_before / 4, f"{rate_during:.0f}/s with the reader, {rate_before:.0f}/s before"
    return {
        "before": f"{rate_before:.0f} msg/s, {summary(before)}",
        "during": f"{rate_during:.0f} msg/s, {summary(during)}",
        "committed meanwhile": after - seen,
        "WAL bytes at the end of the hold": wal,
    }


def db_row_count(qdir: Path) -> int:
    db = connect(qdir)
    try:
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_queue_commands_while_the_server_is_busy(
    make_server: ServerFactory, tmp_path: Path, workers: int
) -> None:
    # One process model finds its queue through state_dir, the other through queue.directory.
    explicit = tmp_path / "elsewhere" / "queue" if workers > 1 else None
    srv = make_server("live", start=False, workers=workers, queue_dir=explicit)
    qdir = explicit if explicit is not None else srv.queue_db.parent
    fill_backlog(qdir, BACKLOG)
    srv.start()
    mark = log_size(srv)
    load = start_load(srv, tmp_path)
    op = Operator(srv, qdir)
    try:
        hostile = send_hostile(srv.ports["mx"])
        cycles = operate(op, load)
        for qid in hostile:
            op.show_hostile(qid)
        during_cli = [
            lat for start, end in op.windows for lat in latencies(load, start, end)
        ]  # 250s answered while a command ran
        probe = reader_probe(qdir, load)
    finally:
        stop_load(load)
    assert load.failures == [], load.failures
    assert during_cli and max(during_cli) < STALL_BOUND, f"250s while a command ran: {summary(during_cli)}"

    # Every acknowledged message is stored once, under its id, unless the test deleted it.
    markers, where, source, missing = stored_markers(qdir)
    acked = load.snapshot()
    twice = [m for m, n in markers.items() if n > 1]
    assert twice == [], f"stored more than once: {twice[:5]}"
    assert missing == [], f"rows whose spool file is gone: {missing[:5]}"
    kept = [a for a in acked if a.id not in op.deleted]
    lost = [a.marker for a in kept if markers[a.marker] != 1 or where[a.marker] != a.id]
    assert lost == [], f"{len(lost)} acknowledged messages missing or under another id: {lost[:5]}"
    revived = [a.id for a in acked if a.id in op.deleted and markers[a.marker]]
    assert revived == [], f"deleted, yet stored: {revived}"
    text = load.source_text()
    source_acked = set(SOURCE_ACK.findall(text))
    assert source_acked <= source, f"smtp-source's 250s not in the queue: {sorted(source_acked - source)[:5]}"
    dots = len(SOURCE_DOT.findall(text))
    assert len(source) <= dots, f"{len(source)} smtp-source messages stored for {dots} sent"
    trouble = SOURCE_TROUBLE.findall(text)
    assert trouble == [] and set(load.source_codes) == {0}, (trouble[:5], load.source_codes)
    held_now = {qid for qid in op.held if (row := db_row(qdir, qid)) is not None and row[0]}
    assert held_now == set(), f"released, yet held in queue.db: {held_now}"

    # On a quiet queue the two ways of naming the queue list the same thing.
    by_config, by_dir = op.run("list"), op.run("list", "--queue-dir", str(qdir))
    assert by_config.stdout == by_dir.stdout and by_config.returncode == 0
    assert len(parse_listing(by_config.stdout)) == BACKLOG + len(kept) + len(source) + len(hostile)

    assert srv.stop() == 0
    with srv.log.open("rb") as f:
        f.seek(mark)
        log = f.read().decode("utf-8", "replace")
    assert "Traceback" not in log, log[-4000:]
    problems = LOG_PROBLEM.findall(log)
    assert problems == [], "\n".join(line for line in log.splitlines() if LOG_PROBLEM.match(line))[:3000]
    tmp, files, rows = spool_state(qdir)
    assert tmp == [] and files == rows, f"spool after exit: temp files {tmp}, {files} files for {rows} rows"
    assert all(name.endswith(SPOOL_SUFFIX) for name in (p.name for p in (qdir / "spool").iterdir()))
    times = {
        verb: f"n={len(t)} median {statistics.median(t):.2f} s max {max(t):.2f} s"
        for verb, t in op.times.items()
    }
    print(
        f"\n{workers} worker(s): {cycles} CLI cycles on a queue of {BACKLOG}+;"
        f" raw clients {len(acked)} acked ({sum(a.big for a in acked)} spooled),"
        f" smtp-source {len(source_acked)} acked; deleted {len(op.deleted)}, held and released"
        f" {len(op.released)}\n  CLI: {times}\n  250s while a command ran: {summary(during_cli)}\n"
        f"  reader probe: {probe}"
    )


@pytest.mark.parametrize("version", [2, 99])
def test_a_queue_of_another_schema_is_refused_in_one_line(tmp_path: Path, version: int) -> None:
    """After an upgrade the running server keeps its queue's old schema until it restarts (only
    the writer migrates), and the new CLI meets it; a newer schema is met after a downgrade. Before:
    `list` of a version 2 queue died in a traceback (a text id where a number is expected) and
    `show`/`hold` said "no message" of one that is there. Now each says which schema it found and
    the fix, exit 1, and changes nothing."""
    qdir = tmp_path / "queue"
    qdir.mkdir()
    db = connect(qdir)
    db.execute("PRAGMA journal_mode = WAL")
    for number in range(1, min(version, SCHEMA_VERSION) + 1):
        db.executescript(f"BEGIN; {_MIGRATIONS[number - 1]}; PRAGMA user_version = {number}; COMMIT;")
    old_id = "0003ARBJ00000000"  # version 2's 16-character text id
    qid = old_id if version < 3 else queue_id_text(1 << 40)
    key: str | int = old_id if version < 3 else 1 << 40
    db.execute(
        "INSERT INTO messages (id, sender, received_at, size, body) VALUES (?, 'old@example.org', 1.0, 5, ?)",
        (key, b"hello"),
    )
    db.execute("INSERT INTO recipients (message_id, idx, address) VALUES (?, 0, 'r@example.net')", (key,))
    if version > SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {version}")
    db.close()
    for args in (["list"], ["show", qid], ["hold", qid], ["delete", qid]):
        res = subprocess.run(
            [sys.executable, "-m", "mailwright.cli.main", "queue", *args, "--queue-dir", str(qdir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = res.stderr.splitlines()
        assert (res.returncode, res.stdout) == (1, ""), (args, res)
        assert len(lines) == 1 and f"schema version {version}," in lines[0] and "(fix: " in lines[0], (
            args,
            res.stderr,
        )
    db = connect(qdir)
    try:
        assert db.execute("SELECT id, held FROM messages").fetchall() == [(key, 0)]
    finally:
        db.close()
