"""The large-message benchmark: one message of `size` bytes over DATA to a fresh server.

Reads the server's VmRSS while idle, sends EHLO, MAIL (with SIZE), RCPT, DATA, then the whole
message and the final dot, and times from the 354 to the 250 (for mailwright the 250 comes after
the fsync, so durability is inside the figure).  Throughput is message bytes / that time in MB/s
(10^6 bytes); memory growth is the server's VmHWM afterwards minus its VmRSS before, each summed over
the server's processes, i.e. the peak extra memory the message cost.  The server must be fresh so
that VmHWM reflects this message only.

Not responsible for: starting the server, or checking the stored copy beyond the message count.
"""

from __future__ import annotations

import time
from typing import Any

from bench.smtp_client import Conn, message
from bench.targets import RCPT, SENDER, Target, tree_status_kib


def run(target: Target, size: int, timeout: float) -> dict[str, Any]:
    assert target.pid is not None
    body = message(size, SENDER, RCPT, "large")
    result: dict[str, Any] = {"target": target.name, "bytes": len(body)}
    time.sleep(0.5)
    rss_before = tree_status_kib(target.pid, "VmRSS")
    conn = Conn("127.0.0.1", target.port, timeout)
    try:
        conn.reply("220")
        conn.cmd("EHLO large.bench.test", "250")
        conn.cmd(f"MAIL FROM:<{SENDER}> SIZE={len(body)}", "250")
        conn.cmd(f"RCPT TO:<{RCPT}>", "250")
        conn.cmd("DATA", "354")
        start = time.perf_counter()
        conn.sock.sendall(body + b".\r\n")
        conn.reply("250")
        seconds = time.perf_counter() - start
        conn.cmd("QUIT", "221")
    finally:
        conn.close()
    hwm = tree_status_kib(target.pid, "VmHWM")
    result.update(
        seconds=seconds,
        mb_per_s=len(body) / 1e6 / seconds,
        rss_before_kib=rss_before,
        hwm_after_kib=hwm,
        peak_growth_mib=(hwm - rss_before) / 1024,
    )
    if target.stored is not None:
        result["stored"] = target.stored()
        if result["stored"] != 1:
            result["error"] = f"{target.name} stored {result['stored']} messages, expected 1"
    if target.largest_stored is not None:
        # The stored copy has the server's trace header on top, so it is at least what was sent.
        result["stored_bytes"] = target.largest_stored()
        if result["stored_bytes"] < len(body):
            result["error"] = f"{target.name} stored {result['stored_bytes']} bytes of {len(body)}"
    return result
