"""Connection caps (total, and per client IP) that hold across all worker processes of one server.

Postfix asks its anvil service on every connection (a round trip); here each worker owns one row of
counters in an anonymous shared mapping made before the workers are forked, and reads everybody's
rows to decide. Only the owner writes a row, so no lock is needed, the owner keeps a private copy
of its row to read from, and a worker that dies can have its row cleared by the master
(`ConnectionTable.clear`) without touching the others' counts.

Per-IP counts are a count-min sketch: each address increments one bucket in each of two rows of
`BUCKETS` counters, chosen by Python's per-start randomised string hash (peers cannot aim for
collisions), and its count is the smaller of the two sums. A collision can only over-count, so a
cap is never exceeded because of one; a client is refused early only if both its buckets are
shared with busy addresses (about (n/65536)^2 for n addresses connected at once).

Invariants: counters never go below zero for a row (each `release` follows its `admit`). Caps are
exact within one process; across processes two workers admitting at the same instant may each
take the last place, so a cap can be exceeded by at most (workers - 1).

Not responsible for: what is said to a refused client (`net.server`: 421 4.7.0).
"""

from __future__ import annotations

import mmap
from typing import Final

BUCKETS: Final = 1 << 16
_MASK: Final = BUCKETS - 1
_ROW: Final = 1 + 2 * BUCKETS  # [total, sketch row 1..., sketch row 2...]


class ConnectionTable:
    """One row of counters per worker in shared memory (inherited across fork)."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("a connection table needs at least one row")
        self.workers = workers
        self._map = mmap.mmap(-1, workers * _ROW * 4)  # MAP_SHARED | MAP_ANONYMOUS
        self.counts = memoryview(self._map).cast("i")

    def clear(self, slot: int) -> None:
        """Forget a dead worker's connections."""
        start = slot * _ROW * 4
        self._map[start : start + _ROW * 4] = bytes(_ROW * 4)

    def total(self) -> int:
        return sum(self.counts[slot * _ROW] for slot in range(self.workers))


class ConnectionLimits:
    """Admission for one worker (row `slot` of `table`); see the module docstring."""

    __slots__ = ("_counts", "_mine", "_others", "_own", "per_ip", "total")

    def __init__(self, total: int, per_ip: int, table: ConnectionTable | None = None, slot: int = 0) -> None:
        table = table or ConnectionTable(1)
        if not 0 <= slot < table.workers:
            raise ValueError(f"slot {slot} outside a table of {table.workers} rows")
        self.total = total
        self.per_ip = per_ip
        self._counts = table.counts
        self._mine = slot * _ROW
        self._others = tuple(w * _ROW for w in range(table.workers) if w != slot)
        # This worker's own row, mirrored in a list. Only this process writes the row, so its own
        # counts are read here, and the mapping is only written: an item of the shared memoryview
        # costs ~500 instructions even compiled (index and value boxed), a list item a few dozen.
        self._own: list[int] = self._counts[self._mine : self._mine + _ROW].tolist()

    @staticmethod
    def _buckets(ip: str) -> tuple[int, int]:
        h = hash(ip)
        return 1 + (h & _MASK), 1 + BUCKETS + ((h >> 16) & _MASK)

    def admit(self, ip: str) -> bool:
        # Plain loops: a generator expression is an object built and driven per call (compiled
        # too), and this runs once per connection.
        c = self._counts
        own = self._own
        total = own[0]
        for r in self._others:
            total += c[r]
        if total >= self.total:
            return False
        b1, b2 = self._buckets(ip)
        # Each sketch row sums to the total, so no address can be at its cap while the total is
        # below it: the other rows' buckets are read only when the total has reached the cap.
        if total >= self.per_ip:
            n1, n2 = own[b1], own[b2]
            for r in self._others:
                n1 += c[r + b1]
                n2 += c[r + b2]
            if min(n1, n2) >= self.per_ip:
                return False
        self._add(b1, b2, 1)
        return True

    def release(self, ip: str) -> None:
        b1, b2 = self._buckets(ip)
        self._add(b1, b2, -1)

    def _add(self, b1: int, b2: int, step: int) -> None:
        # Written out: a loop over (0, b1, b2) would build and box a tuple on every call.
        own, c, mine = self._own, self._counts, self._mine
        n = own[0] + step
        own[0] = n
        c[mine] = n
        n = own[b1] + step
        own[b1] = n
        c[mine + b1] = n
        n = own[b2] + step
        own[b2] = n
        c[mine + b2] = n

    def open_here(self) -> int:
        """Connections this worker holds."""
        return self._own[0]
