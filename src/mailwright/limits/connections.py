"""Connection caps (total, and per client IP) that hold across all worker processes of one server.

Postfix asks its anvil service on every connection (a round trip); here each worker owns one row of
counters in an anonymous shared mapping made before the workers are forked, and reads everybody's
rows to decide. Only the owner writes a row, so no lock is needed, the owner keeps a private copy
of its row to read from, and a worker that dies can have its row cleared by the master
(`ConnectionTable.clear`) without touching the others' counts.

"Per IP" means per `client_key`: an IPv4 address on its own, an IPv6 address by its network of
`ipv6_prefix` bits. Counted address by address, one IPv6 host, which is usually given a whole /64,
could take per_ip places 2^64 times over. Postfix 3.8 aggregates its anvil counts the same way
(smtpd_client_ipv6_prefix_length, 84 bits there); 64 here, the smallest network a site or a
rented server is given (the size SLAAC needs; RFC 6177), since at 84 whoever holds a /64 still has
2^20 keys. The price is IPv4's behind NAT: hosts that share a /64 share its places. The AUTH
failure limiter uses the same key, so one setting (`limits.ipv6_prefix`) decides both. The caller
computes the key once per connection and hands it to `admit` and `release`.

Per-IP counts are a count-min sketch: each key increments one bucket in each of two rows of
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
import socket
from socket import inet_ntop, inet_pton
from typing import Final

BUCKETS: Final = 1 << 16
_MASK: Final = BUCKETS - 1
_ROW: Final = 1 + 2 * BUCKETS  # [total, sketch row 1..., sketch row 2...]


DEFAULT_IPV6_PREFIX: Final = 64
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"
# Plain ints: the enum members cost an attribute lookup and a conversion on every call.
_AF_INET: Final = int(socket.AF_INET)
_AF_INET6: Final = int(socket.AF_INET6)


def client_key(ip: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """What a client is counted under: an IPv4 address as it is, an IPv6 address as its network of
    `ipv6_prefix` bits ("2001:db8:1:2::/64"; the address itself at 128), an IPv4-mapped IPv6
    address as the IPv4 address. A zone ("%eth0") is dropped; anything that is not an address
    (a peer name the transport did not give) is its own key."""
    if ":" not in ip:  # IPv4: the only cost on its path
        return ip
    try:
        packed = inet_pton(_AF_INET6, ip.partition("%")[0])
    except (OSError, ValueError):
        return ip
    if packed[:12] == _V4_MAPPED:
        return inet_ntop(_AF_INET, packed[12:])
    if ipv6_prefix >= 128:
        return inet_ntop(_AF_INET6, packed)
    drop = 128 - ipv6_prefix
    network = (int.from_bytes(packed, "big") >> drop << drop).to_bytes(16, "big")
    return f"{inet_ntop(_AF_INET6, network)}/{ipv6_prefix}"


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
    """Admission for one worker (row `slot` of `table`); see the module docstring. `admit` and
    `release` take the client's key (`key`), not its address."""

    __slots__ = ("_counts", "_mine", "_others", "_own", "ipv6_prefix", "per_ip", "total")

    def __init__(
        self,
        total: int,
        per_ip: int,
        table: ConnectionTable | None = None,
        slot: int = 0,
        *,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        table = table or ConnectionTable(1)
        if not 0 <= slot < table.workers:
            raise ValueError(f"slot {slot} outside a table of {table.workers} rows")
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError(f"an IPv6 prefix of {ipv6_prefix} bits")
        self.total = total
        self.per_ip = per_ip
        self.ipv6_prefix = ipv6_prefix
        self._counts = table.counts
        self._mine = slot * _ROW
        self._others = tuple(w * _ROW for w in range(table.workers) if w != slot)
        # This worker's own row, mirrored in a list. Only this process writes the row, so its own
        # counts are read here, and the mapping is only written: an item of the shared memoryview
        # costs ~500 instructions even compiled (index and value boxed), a list item a few dozen.
        self._own: list[int] = self._counts[self._mine : self._mine + _ROW].tolist()

    def key(self, ip: str) -> str:
        """The key a client at `ip` is counted under (`client_key` with this server's prefix)."""
        return client_key(ip, self.ipv6_prefix)

    @staticmethod
    def _buckets(key: str) -> tuple[int, int]:
        h = hash(key)
        return 1 + (h & _MASK), 1 + BUCKETS + ((h >> 16) & _MASK)

    def admit(self, key: str) -> bool:
        # Plain loops: a generator expression is an object built and driven per call (compiled
        # too), and this runs once per connection.
        c = self._counts
        own = self._own
        total = own[0]
        for r in self._others:
            total += c[r]
        if total >= self.total:
            return False
        b1, b2 = self._buckets(key)
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

    def release(self, key: str) -> None:
        b1, b2 = self._buckets(key)
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
