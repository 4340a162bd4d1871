"""`CommitLog`: committed messages' lines wait at most DELAY for company, in order, none lost.

The clock is passed in, so these run without sleeping; the servers' own use of it (the master's
poll timeout, the writer thread's queue timeout) is covered by the end-to-end and interop tests
that wait for a message's line in the log.
"""

from __future__ import annotations

import logging

import pytest
from queue_helpers import envelope

from mailwright.log_format import MAX_SHOWN, TRUNCATED
from mailwright.protocol.reply import R, SMTPError
from mailwright.queue.commit_log import DELAY, MOST, CommitLog
from mailwright.queue.committer import Job, Outcome
from mailwright.queue.model import Envelope, Recipient


class Body:
    """The part of a committed body the log reads (its size), and the rest of the protocol."""

    inline_body = None

    def __init__(self, size: int) -> None:
        self.size = size

    def finish(self, final_name: str) -> str | None:
        return None

    def settle(self, committed: bool) -> None:
        pass


def batch(*ids: str | None) -> list[Outcome]:
    """Outcomes as the committer returns them: an id for a committed job, an error otherwise."""
    outcomes: list[Outcome] = []
    for n, qid in enumerate(ids):
        job = Job(body=Body(100 + n), envelope=envelope(), ticket=None)
        job.id = qid or "gone"
        outcomes.append((job, qid, None) if qid else (job, None, SMTPError(R.LOCAL_ERROR)))
    return outcomes


def logged(caplog: pytest.LogCaptureFixture) -> list[list[str]]:
    """Each record the log got, as its lines."""
    return [r.getMessage().split("\n") for r in caplog.records if r.name == "mailwright.queue"]


@pytest.fixture
def info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="mailwright.queue")
    return caplog


def test_batches_share_a_record_once_the_oldest_line_is_due(info: pytest.LogCaptureFixture) -> None:
    cl = CommitLog()
    cl.add(batch("1AA", "1AB"), now=10.0)
    cl.add(batch("1AC"), now=10.0 + DELAY / 2)
    assert cl.due() == 10.0 + DELAY, "the oldest line sets the deadline; later ones do not push it"
    cl.flush_due(10.0 + DELAY - 0.001)
    assert logged(info) == []
    cl.flush_due(10.0 + DELAY)
    client = "nrcpt=1, client=client.example.org[127.0.0.1], tls, auth=alice"
    assert logged(info) == [
        [
            f"1AA: from=<alice@example.org>, size=100, {client}",
            f"1AB: from=<alice@example.org>, size=101, {client}",
            f"1AC: from=<alice@example.org>, size=100, {client}",
        ]
    ]
    assert cl.due() is None


def test_a_full_record_goes_out_at_once(info: pytest.LogCaptureFixture) -> None:
    cl = CommitLog()
    cl.add(batch(*(f"1{n:04X}" for n in range(MOST - 1))), now=0.0)
    assert logged(info) == []
    cl.add(batch("1FFFF", "2AAAA"), now=0.0)
    (record,) = logged(info)
    assert len(record) == MOST + 1 and record[-1].startswith("2AAAA: ")


def test_flush_writes_what_is_held_and_failures_have_no_line(info: pytest.LogCaptureFixture) -> None:
    cl = CommitLog()
    cl.add(batch("1AA", None, "1AC"), now=0.0)
    cl.flush()
    assert [line.split(":")[0] for line in logged(info)[0]] == ["1AA", "1AC"]
    cl.flush()
    cl.add(batch(None), now=1.0)
    assert cl.due() is None, "a batch of failures holds nothing"
    assert len(logged(info)) == 1


def test_nothing_is_held_below_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mailwright.queue")
    cl = CommitLog()
    cl.add(batch("1AA"), now=0.0)
    assert cl.due() is None
    cl.flush()
    assert logged(caplog) == []


def test_client_values_in_a_line_are_escaped_and_bounded(info: pytest.LogCaptureFixture) -> None:
    # What a client chose: an SMTPUTF8 sender with a bidi override, a SASL identity with a C1
    # CSI and a line separator, a HELO name as long as the engine allows (stored values are
    # not re-checked by the log: it must hold whatever the envelope holds).
    env = Envelope(
        sender="\u202eevil@example.org",
        recipients=(Recipient("bob@example.net"),),
        client_ip="127.0.0.1",
        helo="h" * 5000 + "\n",
        auth_user="alice\u009b31m\u2028@example.org",
        tls=True,
    )
    job = Job(body=Body(7), envelope=env, ticket=None)
    cl = CommitLog()
    cl.add([(job, "1AA", None)], now=0.0)
    cl.flush()
    ((line,),) = logged(info)
    assert line.isprintable() and len(line) < 3 * MAX_SHOWN, line
    assert line.startswith("1AA: from=<\\u202eevil@example.org>, size=7, nrcpt=1, client=hhh")
    assert line.endswith(f"{TRUNCATED}[127.0.0.1], tls, auth=alice\\x9b31m\\u2028@example.org")
