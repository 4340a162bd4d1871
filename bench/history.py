"""Every full suite run kept in `bench/results/`, one row each: `python3 -m bench.history`.

A single suite run does not tell whether the 4x target holds: the ratio against Postfix moves
with the host more than with most changes of ours (docs/performance.md). This lists every full
run side by side: when, on which CPU, which build, new-connection acceptance for mailwright,
Postfix and smtp-sink with the ratio and each server's share of smtp-sink's rate (the ceiling of
the load generator on that host at that hour), the ratio with 100 messages per connection, and
the server CPU per message where the run measured it. A summary follows: the ratio's spread over
the compiled builds, and how it moves with each share and with the host's speed (Pearson's r).

Invariants: only the suite's files are read (`bench/results/*.json`); a smoke run, a run without
the three acceptance figures or a file that is not JSON is left out and named in the summary with
the reason, never guessed at.
The output is a pure function of the files.

`bash bench/run` rewrites the same table in docs/performance.md after each full run (`update_doc`;
`--write` does it by hand), between the markers `START` and `END`.

Not responsible for: running anything (`bench/run` does), or the README's table (`bench.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.doc_block import replace_block

RESULTS = Path(__file__).resolve().parent / "results"
DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
START, END = "<!-- history:start -->", "<!-- history:end -->"
TARGET = 4.0  # new-connection acceptance against Postfix (issue 3)


@dataclass(frozen=True)
class Run:
    file: str
    when: str  # ISO 8601, UTC
    cpu: str
    build: str  # the commit, and "modified"/"pure" when the tree or build was not the commit's
    compiled: bool
    mailwright: float  # new-connection msg/s
    postfix: float
    sink: float
    keep_ratio: float | None  # mailwright/Postfix with 100 messages per connection
    cpu_mailwright: float | None  # server CPU per message, µs
    cpu_postfix: float | None

    @property
    def ratio(self) -> float:
        return self.mailwright / self.postfix


def _rate(section: dict[str, Any], target: str) -> float | None:
    return _number(section, target, "msg_per_s")


def _cpu(section: dict[str, Any], target: str) -> float | None:
    return _number(section, target, "server_cpu_us_per_msg")


def _number(section: dict[str, Any], target: str, key: str) -> float | None:
    value = (section.get(target) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _short_cpu(model: str) -> str:
    return re.sub(r"\((R|TM)\)| Processor| CPU", "", model).strip() or "?"


def _build(version: str) -> tuple[str, bool]:
    """The commit and whether the build was compiled: "0.1.0 (544d69f, compiled)" gives
    ("544d69f", True)."""
    inside = version[version.find("(") + 1 : version.rfind(")")] if "(" in version else ""
    parts = [p.strip() for p in inside.split(",") if p.strip()]
    compiled = "compiled" in parts
    commit = parts[0] if parts else "?"
    extra = "" if compiled else " pure"
    if "src modified" in parts:
        extra += " modified"
    return commit + extra, compiled


def load(path: Path) -> Run | str:
    """The run in one results file, or why it is left out."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    if not isinstance(data, dict):
        return "not a results object"
    if data.get("smoke"):
        return "smoke run"
    acceptance = data.get("acceptance") or {}
    new, keep = acceptance.get("new-conn") or {}, acceptance.get("keep-conn") or {}
    mw, pf, sink = (_rate(new, t) for t in ("mailwright", "postfix", "smtp-sink"))
    if mw is None or pf is None or sink is None or pf <= 0 or sink <= 0:
        return "no new-connection figure for each of mailwright, Postfix and smtp-sink"
    keep_mw, keep_pf = _rate(keep, "mailwright"), _rate(keep, "postfix")
    build, compiled = _build(str((data.get("versions") or {}).get("mailwright", "")))
    return Run(
        file=path.name,
        when=str(data.get("timestamp") or path.stem),
        cpu=_short_cpu(str((data.get("machine") or {}).get("cpu_model", ""))),
        build=build,
        compiled=compiled,
        mailwright=mw,
        postfix=pf,
        sink=sink,
        keep_ratio=keep_mw / keep_pf if keep_mw and keep_pf else None,
        cpu_mailwright=_cpu(new, "mailwright"),
        cpu_postfix=_cpu(new, "postfix"),
    )


def collect(directory: Path) -> tuple[list[Run], dict[str, str]]:
    """The runs in `directory`, oldest first, and the files left out with the reason."""
    runs: list[Run] = []
    left_out: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        run = load(path)
        if isinstance(run, str):
            left_out[path.name] = run
        else:
            runs.append(run)
    runs.sort(key=lambda r: r.when)
    return runs, left_out


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "—" if value is None else format(value, fmt)


def table(runs: list[Run]) -> str:
    head = (
        "| # | when (UTC) | CPU | build | mailwright msg/s | Postfix msg/s | ratio | smtp-sink msg/s "
        "| mailwright/smtp-sink | Postfix/smtp-sink | ratio, 100 per connection "
        "| server CPU µs/msg, mailwright / Postfix |\n"
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for i, r in enumerate(runs, 1):
        cpu = (
            f"{_num(r.cpu_mailwright)} / {_num(r.cpu_postfix)}"
            if r.cpu_mailwright is not None and r.cpu_postfix is not None
            else "—"
        )
        lines.append(
            f"| {i} | {r.when[:16].replace('T', ' ')} | {r.cpu} | {r.build} | {_num(r.mailwright)} "
            f"| {_num(r.postfix)} | {r.ratio:.2f} | {_num(r.sink)} | {r.mailwright / r.sink:.2f} "
            f"| {r.postfix / r.sink:.3f} | {_num(r.keep_ratio, '.2f')} | {cpu} |"
        )
    return head + "\n".join(lines) + "\n"


def summary(runs: list[Run], left_out: dict[str, str]) -> list[str]:
    out = [f"{len(runs)} full runs."]
    out += [f"Left out: {name}: {why}." for name, why in left_out.items()]
    compiled = [r for r in runs if r.compiled]
    if not compiled:
        return out
    ratios = [r.ratio for r in compiled]
    held = sum(x >= TARGET for x in ratios)
    out.append(
        f"Compiled builds, {len(compiled)} runs: new-connection ratio {min(ratios):.2f} to "
        f"{max(ratios):.2f}x, median {statistics.median(ratios):.2f}x, at least {TARGET:g}x in {held}."
    )
    if len(compiled) >= 3:
        mw_share = [r.mailwright / r.sink for r in compiled]
        pf_share = [r.postfix / r.sink for r in compiled]
        sink = [r.sink for r in compiled]
        out.append(
            "Pearson's r over those runs: the ratio with mailwright's share of smtp-sink "
            f"{_r(ratios, mw_share)}, with Postfix's share {_r(ratios, pf_share)}; Postfix's share "
            f"with smtp-sink's rate (the host's speed) {_r(pf_share, sink)}, mailwright's "
            f"{_r(mw_share, sink)}."
        )
    return out


def _r(xs: list[float], ys: list[float]) -> str:
    try:
        return f"{statistics.correlation(xs, ys):+.2f}"
    except statistics.StatisticsError:  # a constant series has no correlation
        return "—"


def markdown(runs: list[Run], left_out: dict[str, str]) -> str:
    """The table and the summary as a markdown block."""
    return table(runs) + "\n" + "".join(f"- {line}\n" for line in summary(runs, left_out))


def update_doc(doc: Path = DOC, results: Path = RESULTS) -> str:
    """Rewrite the block of every suite run in `doc` (docs/performance.md) from `results`;
    returns the block."""
    md = markdown(*collect(results))
    replace_block(doc, md, START, END, "## Every suite run")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.history", description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="the suite's results directory")
    ap.add_argument(
        "--write", action="store_true", help=f"also rewrite the table in {DOC.relative_to(DOC.parents[1])}"
    )
    args = ap.parse_args(argv)
    if not args.results.is_dir():
        ap.error(f"{args.results} is not a directory: give the suite's results with --results")
    # The files are read and the table rendered once, written or not.
    md = update_doc(DOC, args.results) if args.write else markdown(*collect(args.results))
    try:
        print(md, end="", flush=True)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
