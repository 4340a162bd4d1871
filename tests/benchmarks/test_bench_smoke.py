"""The benchmark suite's smoke run: `bash bench/run --smoke --no-readme` end to end.

It really runs Postfix's smtp-source against a real `mailwright serve` process (and the peers),
so this checks that the suite works on this machine, that mailwright queued every message it
acknowledged, that Postfix relayed every message to smtp-sink, that each Python client sent its
messages there and that dkimpy's signatures verify; the figures themselves are tiny-count and not
asserted beyond being numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run_in_repo(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a bench command from the repository root; it must exit 0."""
    res = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _table(out: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    # The main table ends where the client and end-to-end tables begin.
    other = ("| Client:", "| End to end:", "| DKIM:")
    lines = lines[: next((i for i, ln in enumerate(lines) if ln.startswith(other)), len(lines))]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    assert cells and cells[0][0] == "Benchmark", out[-3000:]
    return cells[0], cells[1:]


def test_smoke_run_measures_mailwright_and_smtp_sink() -> None:
    res = _run_in_repo(["bash", "bench/run", "--smoke", "--no-readme"], timeout=180)
    header, rows = _table(res.stdout)
    # The end-to-end table: Postfix relayed every message to smtp-sink (its log says so).
    relayed = [ln for ln in res.stdout.splitlines() if ln.startswith("| Postfix (real queue, default")]
    assert len(relayed) == 1, res.stdout[-3000:]
    assert float(relayed[0].strip().strip("|").split("|")[1].strip().replace(",", "")) > 0, relayed
    # The DKIM table: dkimpy's signatures (each kind verified once by dkimpy) per second.
    signers = [ln for ln in res.stdout.splitlines() if ln.startswith("| dkimpy, ")]
    assert len(signers) == 2, res.stdout[-3000:]
    for line in signers:
        assert float(line.strip().strip("|").split("|")[-1].strip().replace(",", "")) > 0, line
    # The client table: every Python client sent every message to smtp-sink.
    clients = [ln for ln in res.stdout.splitlines() if ln.startswith("| ") and "smtplib" in ln]
    assert len(clients) == 4, res.stdout[-3000:]
    for line in clients:
        assert float(line.strip().strip("|").split("|")[-1].strip().replace(",", "")) > 0, line
    msg_rows = [r for r in rows if r[0].endswith("msg/s")]
    assert len(msg_rows) == 2, rows  # new connection per message, and kept connections
    mw = header.index("mailwright")
    sink = next(i for i, h in enumerate(header) if h.startswith("smtp-sink"))
    for row in msg_rows:
        assert float(row[mw].replace(",", "")) > 0, row
        assert float(row[sink].replace(",", "")) > 0, row
    # The server's CPU per message (the sink's may round to 0 ticks at these counts), and the
    # machine's idle share, which has no ratio.
    cpu_rows = [r for r in rows if r[0].endswith("server CPU per message (µs)")]
    idle_rows = [r for r in rows if r[0].endswith("machine idle during the run (%)")]
    assert len(cpu_rows) == len(idle_rows) == 2, rows
    for row in cpu_rows:
        assert float(row[mw].replace(",", "")) > 0, row
        assert float(row[sink].replace(",", "")) >= 0, row
    for row in idle_rows:
        assert 0 <= float(row[mw]) <= 100 and 0 <= float(row[sink]) <= 100, row
        assert set(row[len(row) - 3 :]) == {"—"}, row

    raw = json.loads((REPO / "bench" / "results" / "smoke" / "latest.json").read_text())
    assert raw["smoke"] is True
    assert raw["end-to-end"]["postfix"]["outcomes"] == {"sent": raw["parameters"]["messages"]}
    assert "error" not in raw["dkim"]["dkimpy"], raw["dkim"]
    for mode in ("new-conn", "keep-conn"):
        run = raw["acceptance"][mode]["mailwright"]
        assert run["argv"][0].endswith("smtp-source"), run
        assert run["messages"] == 400
        # Every message smtp-source and the probe got a 250 for is a row in mailwright's queue.db.
        assert run["stored"] == run["stored_expected"] >= 400, run
        assert run["server_cpu_us_per_msg"] > 0, run
        for each in run["runs"]:  # the medians over runs need not add up; each run's shares do
            assert abs(sum(each["machine_cpu"].values()) - 1) < 1e-9, each


def test_run_refuses_an_unknown_interpreter() -> None:
    """bench/run takes --interpreter for itself and says what it accepts, before installing anything."""
    for args, said in ((["--interpreter", "bogus"], "not 'bogus'"), (["--interpreter"], "needs a value")):
        res = subprocess.run(
            ["bash", "bench/run", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert said in res.stderr and "system" in res.stderr and "current" in res.stderr, res.stderr


@pytest.mark.slow
def test_full_runs_default_builds_mailwright_for_the_system_python() -> None:
    """What a full `bash bench/run` does by default, at smoke counts: mailwright built from this
    tree into bench/.venv, made from /usr/bin/python3, and the suite run on that interpreter."""
    only = ["--only", "new-conn,mailwright"]
    res = _run_in_repo(["bash", "bench/run", "--interpreter", "system", "--smoke", *only, "--no-readme"], 900)
    machine = next(ln for ln in res.stdout.splitlines() if ln.startswith("- machine:"))
    assert "(/usr/bin/python3" in machine, machine
    raw = json.loads((REPO / "bench" / "results" / "smoke" / "latest.json").read_text())
    assert raw["versions"]["python_path"].startswith("/usr/bin/python3"), raw["versions"]
    assert "compiled" in raw["versions"]["mailwright"], raw["versions"]
    run = raw["acceptance"]["new-conn"]["mailwright"]
    assert run["stored"] == run["stored_expected"] >= 400, run


def test_ab_tool_runs_pairs_of_the_same_build() -> None:
    """`python3 -m bench.ab` (interleaved A/B of two builds), here with this build on both
    sides: each run stores every message (the tool exits non-zero otherwise) and reports."""
    argv = [sys.executable, "-m", "bench.ab", "--other", sys.executable, "--pairs", "1", "--messages", "200"]
    res = _run_in_repo(argv, timeout=120)
    medians = [ln for ln in res.stdout.splitlines() if " median: " in ln]
    assert [ln.split()[0] for ln in medians] == ["this", "other"], res.stdout
    for line in medians:
        assert float(line.split("median:")[1].split("msg/s")[0].replace(",", "")) > 0, line


def test_commit_cost_tool_reports_each_batch_size() -> None:
    """`python3 -m bench.commit_cost`: one line per batch size with a positive CPU figure and the
    transactions it took (messages ÷ batch size, rounded up: the tool commits whole batches)."""
    argv = [sys.executable, "-m", "bench.commit_cost", "--batches", "1,4", "--messages", "40"]
    res = _run_in_repo(argv, timeout=120)
    lines = res.stdout.splitlines()
    assert [ln.split("batch")[1].split(":")[0].strip() for ln in lines] == ["1", "4"], res.stdout
    for line, transactions in zip(lines, (40, 10), strict=True):
        assert float(line.split("CPU")[1].split("µs")[0]) > 0, line
        assert line.endswith(f" {transactions} transactions"), line


def test_queue_list_tool_lists_every_message_of_both_queues() -> None:
    """`python3 -m bench.queue_list`: mailwright's and Postfix's listings of the same smtp-source
    load, then mailwright's of a queue written straight into its database; the tool fails unless
    every listing counts every queued message, and each reports a time and a peak RSS."""
    argv = [sys.executable, "-m", "bench.queue_list", "--messages", "200", "--large", "300", "--repeat", "1"]
    res = _run_in_repo(argv, timeout=240)
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.strip().endswith(("process", "RSS"))]
    assert [r[0] for r in rows] == ["mailwright", "postfix", sys.executable], res.stdout
    for row in rows:
        assert float(row[1]) > 0 and row[2] == "s" and float(row[3]) > 1 and row[4] == "MiB", row
    assert res.stdout.startswith("1. 200 messages") and "2. 300 messages" in res.stdout, res.stdout
