"""The frozen dataclasses whose `__init__` is written by hand (init=False, for mypyc's sake) must
behave as the generated one would: every field set from its argument, in declaration order, the
same defaults, and still frozen, comparable, hashable and usable with `dataclasses.replace`."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mailwright.protocol.address import Address
from mailwright.protocol.params import MailParams, RcptParams
from mailwright.queue.model import Envelope, Recipient

# One distinct value per field, in declaration order, and the defaults of the optional ones.
CASES: list[tuple[type[Any], tuple[Any, ...], dict[str, Any]]] = [
    (Address, ("user", "example.org"), {}),
    (
        MailParams,
        (1024, "8BITMIME", True, "HDRS", "env-1", "<>", True),
        dict(size=None, body=None, smtputf8=False, ret=None, envid=None, auth=None, requiretls=False),
    ),
    (RcptParams, (frozenset({"SUCCESS"}), ("rfc822", "a@b.example")), dict(notify=None, orcpt=None)),
    (Recipient, ("a@b.example", "SUCCESS", "rfc822;a@b.example"), dict(notify=None, orcpt=None)),
    (
        Envelope,
        ("s@x.example", (Recipient("a@b.example"),), "BODY=8BITMIME", "127.0.0.2", "client", "al", True, 1.5),
        dict(mail_params="", client_ip="", helo="", auth_user=None, tls=False, received_at=0.0),
    ),
]


def _values(obj: object, names: list[str]) -> tuple[Any, ...]:
    return tuple(getattr(obj, name) for name in names)


@pytest.mark.parametrize(("cls", "values", "defaults"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_hand_written_init_matches_the_fields(
    cls: type[Any], values: tuple[Any, ...], defaults: dict[str, Any]
) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    assert len(names) == len(values)
    positional = cls(*values)
    assert _values(positional, names) == values
    assert cls(**dict(zip(names, values, strict=True))) == positional
    assert hash(cls(*values)) == hash(positional)

    required = values[: len(names) - len(defaults)]
    bare = cls(*required)
    for name, default in defaults.items():
        assert getattr(bare, name) == default, name
    assert bare != positional or not defaults

    last = names[-1]
    changed = dataclasses.replace(positional, **{last: defaults.get(last, "other")})
    assert getattr(changed, last) == defaults.get(last, "other")
    assert _values(changed, names)[:-1] == values[:-1]

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(positional, names[0], values[0])
    assert repr(positional).startswith(f"{cls.__name__}(")
