"""Slow down and lock out clients that keep failing SMTP AUTH.

Keyed by a string the caller chooses, normally the client's key for the connection caps
(`limits.connections.client_key`: an IPv4 address, or an IPv6 address folded to its network of
`limits.ipv6_prefix` bits, /64 by default, because one host usually controls a whole /64).  For
each key it counts failures within a window that starts at the first failure:

- after each failure the server waits `delay(key)` seconds before answering (0.25 s, 0.5 s, 1 s,
  ... doubling, at most 5 s), which makes guessing slow without costing the server anything but
  a timer;
- the `max_failures`-th failure within `window` seconds locks the key out for `lockout` seconds,
  during which `check(key)` returns 454 4.7.0 (RFC 4954 section 6: temporary authentication
  failure) and AUTH should not be attempted at all;
- a success clears the key.

Invariants: memory is bounded: at most `max_keys` keys are tracked; each failure drops expired
entries from the least recently failed end, and when full the least recently failed key goes.
Time comes only from `clock` (monotonic by default), so tests inject one.
Not thread-safe: one event loop owns it.

Trade-off: clients behind one NAT share a key, so one of them guessing can lock out the rest
for `lockout` seconds; that is the usual price of per-IP limits.

Not responsible for: sleeping (the caller awaits the delay), verifying credentials, or sharing
counts between processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mailwright.protocol.reply import R, Reply

BASE_DELAY = 0.25
MAX_DELAY = 5.0
# Entries examined per call for opportunistic pruning: keeps each call O(1) amortised.
_PRUNE_STEP = 8


@dataclass(slots=True)
class _Entry:
    failures: int
    window_start: float
    locked_until: float


class AuthFailureLimiter:
    def __init__(
        self,
        max_failures: int = 5,
        window: float = 600.0,
        lockout: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = 100_000,
    ) -> None:
        if max_failures < 1 or window <= 0 or lockout < 0 or max_keys < 1:
            raise ValueError("max_failures and max_keys must be >= 1, window > 0, lockout >= 0")
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_keys = max_keys
        self._clock = clock
        # Ordered by last failure, oldest first: the eviction order.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _expired(self, entry: _Entry, now: float) -> bool:
        return now >= entry.locked_until and now - entry.window_start >= self.window

    def _current(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and self._expired(entry, now):
            del self._entries[key]
            return None
        return entry

    def _prune(self, now: float, limit: int) -> None:
        expired = []
        for i, (key, entry) in enumerate(self._entries.items()):
            if i >= limit:
                break
            if self._expired(entry, now):
                expired.append(key)
        for key in expired:
            del self._entries[key]

    def check(self, key: str) -> Reply | None:
        """454 4.7.0 while `key` is locked out, else None."""
        now = self._clock()
        entry = self._current(key, now)
        if entry is not None and now < entry.locked_until:
            return R.AUTH_TEMP_LOCKED
        return None

    def delay(self, key: str) -> float:
        """Seconds to wait before answering the failure just recorded with `failure`."""
        entry = self._current(key, self._clock())
        if entry is None or entry.failures == 0:
            return 0.0
        return min(MAX_DELAY, BASE_DELAY * float(2 ** min(entry.failures - 1, 32)))

    def failure(self, key: str) -> float:
        """Record a failed AUTH; returns the delay to apply, like `delay(key)`."""
        now = self._clock()
        self._prune(now, _PRUNE_STEP)
        entry = self._current(key, now)
        if entry is None or now - entry.window_start >= self.window:
            # A new window; a still-running lockout keeps running.
            locked_until = entry.locked_until if entry is not None else now
            entry = _Entry(failures=0, window_start=now, locked_until=locked_until)
        entry.failures += 1
        if entry.failures >= self.max_failures:
            entry.locked_until = now + self.lockout
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_keys:
            # The front holds the least recently failed keys (expired ones went first above).
            self._entries.popitem(last=False)
        return self.delay(key)

    def success(self, key: str) -> None:
        """A successful AUTH forgets the key's failures."""
        self._entries.pop(key, None)
