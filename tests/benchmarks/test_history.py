"""Tests for bench.history: the table of every suite run kept in bench/results/.

The unit tests write results files of the suite's shape into a temporary directory; the last
test reads the repository's own bench/results and checks the table against the files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench import history

REPO = Path(__file__).resolve().parents[2]


def _result(
    when: str,
    mw: float | None,
    pf: float | None,
    sink: float | None,
    *,
    build: str = "0.1.0 (abc1234, compiled)",
    smoke: bool = False,
    keep: tuple[float, float] | None = None,
    cpu: tuple[float, float] | None = None,
) -> dict[str, Any]:
    def entry(rate: float | None, cpu_us: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"msg_per_s": rate}
        if cpu_us is not None:
            out["server_cpu_us_per_msg"] = cpu_us
        return out

    new = {
        "mailwright": entry(mw, cpu[0] if cpu else None),
        "postfix": entry(pf, cpu[1] if cpu else None),
        "smtp-sink": entry(sink),
    }
    keep_conn = {"mailwright": entry(keep[0]), "postfix": entry(keep[1])} if keep else {}
    return {
        "timestamp": when,
        "smoke": smoke,
        "machine": {"cpu_model": "Intel(R) Xeon(R) Processor"},
        "versions": {"mailwright": build},
        "acceptance": {"new-conn": new, "keep-conn": keep_conn},
    }


def _write(directory: Path, name: str, data: dict[str, Any] | str) -> None:
    (directory / name).write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    # Written out of order: the table is sorted by the runs' own timestamps.
    _write(
        tmp_path,
        "b.json",
        _result("2026-12-02T10:00:00Z", 3000, 1000, 6000, keep=(6000, 1000), cpu=(400, 2000)),
    )
    _write(
        tmp_path,
        "a.json",
        _result("2026-12-01T09:30:00Z", 2000, 1000, 5000, build="0.1.0 (def5678, src modified)"),
    )
    _write(
        tmp_path,
        "c.json",
        _result("2026-12-03T00:00:00Z", 4500, 1000, 9000, build="0.1.0 (abc1234, src modified, compiled)"),
    )
    _write(tmp_path, "smoke.json", _result("2026-12-04T00:00:00Z", 10, 10, 10, smoke=True))
    _write(tmp_path, "nosink.json", _result("2026-12-05T00:00:00Z", 3000, 1000, None))
    _write(tmp_path, "broken.json", "{not json")
    _write(tmp_path, "list.json", "[1, 2]")
    return tmp_path


def test_collect_sorts_runs_and_names_what_it_leaves_out(results: Path) -> None:
    runs, left_out = history.collect(results)
    assert [r.file for r in runs] == ["a.json", "b.json", "c.json"]
    assert [r.build for r in runs] == ["def5678 pure modified", "abc1234", "abc1234 modified"]
    assert [r.compiled for r in runs] == [False, True, True]
    assert [r.ratio for r in runs] == [2.0, 3.0, 4.5]
    assert runs[1].keep_ratio == 6.0 and runs[0].keep_ratio is None
    assert (runs[1].cpu_mailwright, runs[1].cpu_postfix) == (400.0, 2000.0)
    assert runs[0].cpu == "Intel Xeon"
    assert left_out["smoke.json"] == "smoke run"
    assert "smtp-sink" in left_out["nosink.json"]
    assert left_out["broken.json"].startswith("unreadable")
    assert left_out["list.json"] == "not a results object"
    assert len(left_out) == 4


def test_table_has_a_row_per_run_with_its_ratio_and_shares(results: Path) -> None:
    runs, _ = history.collect(results)
    lines = history.table(runs).splitlines()
    assert len(lines) == 2 + 3
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    # #, when, CPU, build, mailwright, Postfix, ratio, sink, mw/sink, pf/sink, keep ratio, CPU
    assert cells == [
        "2", "2026-12-02 10:00", "Intel Xeon", "abc1234", "3,000", "1,000", "3.00", "6,000",
        "0.50", "0.167", "6.00", "400 / 2,000",
    ]  # fmt: skip
    assert lines[2].endswith("| — | — |")  # no keep-conn figures, no CPU figures


def test_summary_counts_only_compiled_builds_against_the_target(results: Path) -> None:
    runs, left_out = history.collect(results)
    text = "\n".join(history.summary(runs, left_out))
    assert "3 full runs." in text
    assert "Left out: broken.json: unreadable" in text
    # The compiled runs are b (3.0x) and c (4.5x): one at or above 4x.
    assert (
        "Compiled builds, 2 runs: new-connection ratio 3.00 to 4.50x, median 3.75x, at least 4x in 1." in text
    )
    assert "Pearson" not in text  # two runs are too few for a correlation


def test_summary_correlations_follow_the_data(tmp_path: Path) -> None:
    # Only mailwright's rate moves: the ratio follows its share of smtp-sink exactly (r = +1),
    # and Postfix's share, being constant, has no correlation with anything.
    for i, mw in enumerate([3000, 3500, 5000]):
        _write(tmp_path, f"{i}.json", _result(f"2026-12-0{i + 1}T00:00:00Z", mw, 1000, 8000))
    runs, left_out = history.collect(tmp_path)
    text = "\n".join(history.summary(runs, left_out))
    assert "the ratio with mailwright's share of smtp-sink +1.00, with Postfix's share —" in text
    assert "median 3.50x, at least 4x in 1." in text


def test_cli_refuses_a_missing_directory(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "bench.history", "--results", str(tmp_path / "none")],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 2
    assert "is not a directory" in res.stderr and "Traceback" not in res.stderr


def test_the_repositorys_results_match_their_files() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "bench.history"], cwd=REPO, capture_output=True, text=True, check=True
    )
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    left_out = [ln for ln in res.stdout.splitlines() if ln.startswith("- Left out: ")]
    files = sorted((REPO / "bench" / "results").glob("*.json"))
    assert len(rows) + len(left_out) == len(files) > 0
    # The newest full run's row against its file, read here independently.
    newest = max(
        (json.loads(f.read_text()) for f in files if f.name not in "".join(left_out)),
        key=lambda d: d["timestamp"],
    )
    new = newest["acceptance"]["new-conn"]
    ratio = new["mailwright"]["msg_per_s"] / new["postfix"]["msg_per_s"]
    cells = [c.strip() for c in rows[-1].strip("|").split("|")]
    assert cells[1] == newest["timestamp"][:16].replace("T", " ")
    assert cells[6] == f"{ratio:.2f}"


def test_the_performance_doc_lists_every_run_kept() -> None:
    # The suite rewrites this block after every full run; a results file added without it (or a
    # hand edit of the table) shows here.
    doc = (REPO / "docs" / "performance.md").read_text()
    block = doc.split(history.START, 1)[1].split(history.END, 1)[0]
    assert block == "\n" + history.markdown(*history.collect(history.RESULTS))


def test_update_doc_replaces_only_the_block(tmp_path: Path, results: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Title\n\nprose before\n\n{history.START}\nold table\n{history.END}\n\nprose after\n")
    history.update_doc(doc, results)
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose before\n\n" + history.START + "\n| # |")
    assert text.endswith(history.END + "\n\nprose after\n")
    assert "old table" not in text and "3 full runs." in text
    history.update_doc(doc, results)
    assert doc.read_text() == text  # a second run changes nothing


def test_update_doc_appends_the_block_when_the_markers_are_missing(tmp_path: Path, results: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Title\n")
    history.update_doc(doc, results)
    text = doc.read_text()
    assert text.startswith("# Title\n\n## Every suite run\n\n" + history.START + "\n")
    assert text.endswith(history.END + "\n")
