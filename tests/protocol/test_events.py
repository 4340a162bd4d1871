"""Events: which ones pause the engine, what they show, and that they cannot be changed."""

from __future__ import annotations

import pytest

from mailwright.build_info import is_compiled
from mailwright.protocol import events as ev
from mailwright.protocol.address import Address
from mailwright.protocol.params import MailParams, RcptParams
from mailwright.protocol.reply import R


def test_exactly_the_events_that_await_an_answer_pause_the_engine() -> None:
    events = [c for c in vars(ev).values() if isinstance(c, type) and issubclass(c, ev.Event)]
    assert len(events) == 13  # the base and its twelve kinds
    paused = {cls.__name__ for cls in events if cls.needs_reply}
    assert paused == {"Hello", "Mail", "Rcpt", "EndOfData", "AuthAttempt"}


def test_repr_names_every_field() -> None:
    mail = ev.Mail(Address("a", "c.test"), MailParams(size=10), "SIZE=10")
    assert repr(mail).startswith("Mail(sender=") and "raw_params='SIZE=10'" in repr(mail)
    rcpt = repr(ev.Rcpt(Address("b", "mx.test"), RcptParams(), ""))
    assert rcpt.startswith("Rcpt(recipient=Address(") and ", params=RcptParams(" in rcpt
    assert repr(ev.Hello("c.test", True)) == "Hello(hostname='c.test', extended=True)"
    assert repr(ev.Quit()) == "Quit()"
    assert repr(ev.BodyRejected(R.MESSAGE_TOO_BIG)).startswith("BodyRejected(reply=")


@pytest.mark.skipif(
    not is_compiled("mailwright.protocol.events"), reason="Final is enforced at run time only when compiled"
)
def test_events_cannot_be_changed() -> None:
    hello = ev.Hello("c.test", True)
    with pytest.raises(AttributeError):
        hello.hostname = "other"  # type: ignore[misc]
    assert hello.hostname == "c.test"
