"""limits.open_files.fit_open_files against chosen limits: the branches a real process cannot
reach from a test (no limit at all, a refusal within the hard limit); tests/e2e/test_open_files.py
runs it in a real server."""

from __future__ import annotations

import resource

import pytest

from mailwright.limits import open_files
from mailwright.limits.open_files import RESERVE, fit_open_files

INF = resource.RLIM_INFINITY


class Limits:
    """Stands in for the process's RLIMIT_NOFILE."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE and limits[1] == self.hard, "the hard limit is left alone"
        if self.refuse:
            raise ValueError("not allowed")
        self.soft = limits[0]


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Limits:
    fake = Limits(0, 0)
    monkeypatch.setattr(open_files.resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(open_files.resource, "setrlimit", fake.setrlimit)
    return fake


def test_no_limit_holds_any_cap(limits: Limits) -> None:
    limits.soft = limits.hard = INF
    budget = fit_open_files(100_000, 2)
    assert (budget.fits, budget.raised, budget.max_connections) == (True, False, 100_000)


def test_a_soft_limit_is_raised_up_to_an_unlimited_hard_one(limits: Limits) -> None:
    limits.soft, limits.hard = 1024, INF
    budget = fit_open_files(5000, 4)
    assert limits.soft == budget.soft == budget.need == 5000 + 3 + RESERVE
    assert (budget.fits, budget.raised, budget.max_connections) == (True, True, 5000)


def test_a_soft_limit_that_holds_the_cap_is_never_lowered(limits: Limits) -> None:
    limits.soft, limits.hard = 65536, 65536
    budget = fit_open_files(1000, 2)
    assert (limits.soft, budget.raised, budget.max_connections) == (65536, False, 1000)


def test_a_refusal_within_the_hard_limit_fits_the_cap_to_the_soft_one(limits: Limits) -> None:
    # A container whose fs.nr_open is below the hard limit refuses even a raise within it.
    limits.soft, limits.hard, limits.refuse = 1024, 1_048_576, True
    budget = fit_open_files(2000, 2)
    assert (budget.fits, budget.raised, limits.soft) == (False, False, 1024)
    assert budget.max_connections == 1024 - RESERVE - 1


def test_a_limit_below_the_reserve_still_serves_one(limits: Limits) -> None:
    limits.soft = limits.hard = 64
    assert fit_open_files(1000, 1).max_connections == 1
