"""Tests for mailwright.limits.auth_failures with an injected clock."""

from __future__ import annotations

import pytest

from mailwright.limits.auth_failures import AuthFailureLimiter
from mailwright.limits.connections import client_key
from mailwright.protocol.reply import R


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kwargs: float) -> tuple[AuthFailureLimiter, Clock]:
    clock = Clock()
    return AuthFailureLimiter(clock=clock, **kwargs), clock  # type: ignore[arg-type]


def test_delays_grow_and_cap() -> None:
    limiter, _ = make(max_failures=100)
    assert limiter.delay("10.0.0.1") == 0.0
    delays = [limiter.failure("10.0.0.1") for _ in range(8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert limiter.delay("10.0.0.1") == 5.0
    assert limiter.delay("10.0.0.2") == 0.0


def test_lockout_after_max_failures_then_expiry() -> None:
    limiter, clock = make(max_failures=3, window=600.0, lockout=900.0)
    key = "192.0.2.7"
    for _ in range(2):
        limiter.failure(key)
        assert limiter.check(key) is None
    limiter.failure(key)
    assert limiter.check(key) is R.AUTH_TEMP_LOCKED
    assert limiter.check(key).code == 454 and limiter.check(key).enhanced == "4.7.0"  # type: ignore[union-attr]
    assert limiter.check("192.0.2.8") is None
    clock.now += 899.0
    assert limiter.check(key) is R.AUTH_TEMP_LOCKED
    clock.now += 1.0
    assert limiter.check(key) is None
    assert limiter.delay(key) == 0.0  # window and lockout both over: a fresh start
    assert len(limiter) == 0


def test_failures_outside_the_window_do_not_add_up() -> None:
    limiter, clock = make(max_failures=3, window=60.0, lockout=900.0)
    limiter.failure("k")
    limiter.failure("k")
    clock.now += 61.0
    assert limiter.failure("k") == 0.25  # counting restarted
    limiter.failure("k")
    assert limiter.check("k") is None
    limiter.failure("k")
    assert limiter.check("k") is R.AUTH_TEMP_LOCKED


def test_success_resets() -> None:
    limiter, _ = make(max_failures=3)
    limiter.failure("k")
    limiter.failure("k")
    limiter.success("k")
    assert limiter.delay("k") == 0.0
    limiter.failure("k")
    limiter.failure("k")
    assert limiter.check("k") is None
    limiter.success("never-seen")  # harmless


def test_memory_is_bounded_oldest_evicted() -> None:
    limiter, clock = make(max_failures=2, max_keys=100)
    limiter.failure("first")
    limiter.failure("first")
    assert limiter.check("first") is R.AUTH_TEMP_LOCKED
    for i in range(250):
        clock.now += 0.01
        limiter.failure(f"10.0.{i // 256}.{i % 256}")
        assert len(limiter) <= 100
    assert len(limiter) == 100
    assert limiter.check("first") is None  # evicted as the least recently failing
    assert limiter.delay("10.0.0.249") == 0.25


def test_expired_entries_are_pruned() -> None:
    limiter, clock = make(window=10.0, lockout=5.0)
    for i in range(20):
        limiter.failure(f"old{i}")
    clock.now += 11.0
    for i in range(3):
        limiter.failure(f"new{i}")
    assert len(limiter) == 3  # opportunistic pruning (8 per call) removed all 20 expired ones


def test_zero_lockout_never_locks() -> None:
    limiter, _ = make(max_failures=1, lockout=0.0)
    limiter.failure("k")
    assert limiter.check("k") is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AuthFailureLimiter(max_failures=0)
    with pytest.raises(ValueError):
        AuthFailureLimiter(window=0)


def test_client_key() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2:ffff::1") == client_key("2001:db8:1:2::9")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("not-an-ip") == "not-an-ip"
