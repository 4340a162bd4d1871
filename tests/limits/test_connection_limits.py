"""Connection caps shared by worker processes: per-IP and total, across rows, across a real fork."""

from __future__ import annotations

import os

import pytest

from mailwright.limits.connections import BUCKETS, ConnectionLimits, ConnectionTable, client_key


def test_per_ip_cap_counts_every_worker() -> None:
    table = ConnectionTable(2)
    a = ConnectionLimits(total=100, per_ip=3, table=table, slot=0)
    b = ConnectionLimits(total=100, per_ip=3, table=table, slot=1)
    assert a.admit("192.0.2.1") and b.admit("192.0.2.1") and a.admit("192.0.2.1")
    assert not b.admit("192.0.2.1") and not a.admit("192.0.2.1")
    assert b.admit("192.0.2.2"), "another address has its own count"
    b.release("192.0.2.1")  # worker b lets its connection from .1 go
    assert a.admit("192.0.2.1")


def test_total_cap_counts_every_worker() -> None:
    table = ConnectionTable(3)
    workers = [ConnectionLimits(total=4, per_ip=10, table=table, slot=i) for i in range(3)]
    admitted = [w.admit(f"198.51.100.{i}") for i, w in enumerate(workers * 2)]
    assert admitted == [True, True, True, True, False, False]
    assert table.total() == 4
    workers[0].release("198.51.100.0")
    assert workers[2].admit("198.51.100.9")


def test_clearing_a_dead_workers_row_frees_its_places() -> None:
    table = ConnectionTable(2)
    dead = ConnectionLimits(total=2, per_ip=2, table=table, slot=1)
    alive = ConnectionLimits(total=2, per_ip=2, table=table, slot=0)
    assert dead.admit("203.0.113.5") and dead.admit("203.0.113.5")
    assert not alive.admit("203.0.113.5")
    table.clear(1)
    assert table.total() == 0
    assert alive.admit("203.0.113.5") and alive.admit("203.0.113.5")
    assert alive.open_here() == 2


def test_a_forked_worker_counts_in_shared_memory() -> None:
    table = ConnectionTable(2)
    parent = ConnectionLimits(total=10, per_ip=2, table=table, slot=0)
    pid = os.fork()
    if pid == 0:  # the "worker": take both places of one address, report by exit code
        child = ConnectionLimits(total=10, per_ip=2, table=table, slot=1)
        os._exit(0 if child.admit("192.0.2.77") and child.admit("192.0.2.77") else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert table.total() == 2
    assert not parent.admit("192.0.2.77"), "the worker's connections count here too"


def test_collisions_only_ever_over_count() -> None:
    # Many addresses at once: none may be admitted beyond its own cap, whatever shares buckets.
    limits = ConnectionLimits(total=1_000_000, per_ip=1)
    addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(3 * BUCKETS // 4)]
    admitted = [ip for ip in addresses if limits.admit(ip)]
    assert all(not limits.admit(ip) for ip in admitted)
    # Two rows keep false refusals rare even with this many addresses in one table.
    assert len(admitted) > 0.5 * len(addresses)


def test_bad_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="slot 2"):
        ConnectionLimits(total=1, per_ip=1, table=ConnectionTable(2), slot=2)


def test_client_key_counts_ipv6_by_network_and_ipv4_by_address() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_key("2001:DB8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_key("::1") == "::/64"
    assert client_key("2001:db8:1:2:3:4:5:6", 48) == "2001:db8:1::/48"
    assert client_key("2001:db8:1:2:3:4:5:6", 84) == "2001:db8:1:2:3::/84"
    assert client_key("2001:db8:1:2:3:4:5:6", 84) != client_key("2001:db8:1:2:3:1000::", 84)
    assert client_key("2001:db8::0:1", 128) == "2001:db8::1"
    # What a socket that takes both families, or a link-local peer, could hand over.
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("fe80::1%eth0") == client_key("fe80::2") == "fe80::/64"
    assert client_key("not-an-ip") == "not-an-ip"
    assert client_key("?") == "?"
    assert client_key("1:2:3") == "1:2:3"


def test_ipv6_addresses_of_one_network_share_a_cap() -> None:
    limits = ConnectionLimits(total=100, per_ip=2, ipv6_prefix=64)
    one, other = limits.key("2001:db8:5:6::1"), limits.key("2001:db8:5:6:ffff::9")
    assert one == other
    assert limits.admit(one) and limits.admit(other)
    assert not limits.admit(limits.key("2001:db8:5:6::77")), "a third address of the same /64"
    assert limits.admit(limits.key("2001:db8:5:7::1")), "the next /64 is someone else"
    assert limits.admit(limits.key("192.0.2.9"))
    limits.release(one)
    assert limits.admit(limits.key("2001:db8:5:6::77"))
    exact = ConnectionLimits(total=100, per_ip=1, ipv6_prefix=128)
    assert exact.admit(exact.key("2001:db8:5:6::1")) and exact.admit(exact.key("2001:db8:5:6::2"))
    with pytest.raises(ValueError, match="129"):
        ConnectionLimits(total=1, per_ip=1, ipv6_prefix=129)
