"""Turn the raw results into the markdown tables and notes, the JSON file, and the README section.

The main table has one row per figure and the columns: mailwright, each peer, then mailwright/peer
for each peer.  A ratio is mailwright's figure divided by the peer's, whatever the unit: above 1
means more msg/s or MB/s (better) but also more milliseconds, µs of CPU or MiB (worse); the
machine's idle share during a run has no ratio.  A cell says "error" when that measurement
failed (the notes say why) and "—" when it was not measured.  The client table (Python SMTP
clients sending to smtp-sink) has one row per client and way of using it, the end-to-end table
one row per relaying server, the DKIM table one row per signer and algorithm; mailwright's rows
come first.

Invariant: the README is changed only between `<!-- bench:start -->` and `<!-- bench:end -->`
(the section is appended, with its markers, when they are missing).

Not responsible for: running anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import client, signing
from bench.cpu import SHARES as MACHINE_SHARES
from bench.doc_block import replace_block

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
TARGETS = ["mailwright", "postfix", "aiosmtpd", "smtp-sink"]
HEADINGS = {
    "mailwright": "mailwright",
    "postfix": "Postfix (real queue, HOLD)",
    "aiosmtpd": "aiosmtpd (stores nothing)",
    "smtp-sink": "smtp-sink (C, stores nothing)",
}
PEERS = TARGETS[1:]
SECTIONS = ("acceptance", "idle", "large", "client", "end-to-end", "dkim")  # where results (and errors) live
SHORT = {"postfix": "Postfix", "aiosmtpd": "aiosmtpd", "smtp-sink": "smtp-sink"}
CPU, IDLE = "server_cpu_us_per_msg", "machine_idle_pct"  # from bench.acceptance.combine

Getter = Callable[[dict[str, Any]], float | None]


def _field(name: str, scale: float = 1.0) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        v = r.get(name)
        return None if v is None else float(v) * scale

    return get


Row = tuple[str, str, Getter, str, bool]


def rows(res: dict[str, Any]) -> list[Row]:
    """(label, section, getter, number format, whether a ratio means anything) for every row of
    the table."""
    p = res["parameters"]
    acc = f"{p['messages']:,} msgs of 1 KB, {p['sessions']} sessions"
    out: list[Row] = []
    for mode, how in (
        ("new-conn", "new connection per message"),
        ("keep-conn", f"{p['per_conn']} per connection"),
    ):
        key = f"acceptance.{mode}"
        out += [
            (f"{acc}, {how}: msg/s", key, _field("msg_per_s"), "{:,.0f}", True),
            (f"{acc}, {how}: transaction p50 (ms)", key, _field("latency_p50_ms"), "{:,.1f}", True),
            (f"{acc}, {how}: transaction p99 (ms)", key, _field("latency_p99_ms"), "{:,.1f}", True),
            (f"{acc}, {how}: server CPU per message (µs)", key, _field(CPU), "{:,.0f}", True),
            (f"{acc}, {how}: machine idle during the run (%)", key, _field(IDLE), "{:,.0f}", False),
        ]
    idle = f"{p['idle_connections']:,} idle connections"
    out += [
        (f"{idle}: server RSS (MiB)", "idle", _field("rss_kib", 1 / 1024), "{:,.1f}", True),
        (f"{idle}: greeting p50 (ms)", "idle", _field("greeting_p50_ms"), "{:,.2f}", True),
        (f"{idle}: greeting p99 (ms)", "idle", _field("greeting_p99_ms"), "{:,.2f}", True),
    ]
    big = f"{p['large_bytes'] / 1e6:,.0f} MB message"
    out += [
        (f"{big}: MB/s", "large", _field("mb_per_s"), "{:,.1f}", True),
        (f"{big}: peak memory growth (MiB)", "large", _field("peak_growth_mib"), "{:,.1f}", True),
    ]
    return out


def _section(res: dict[str, Any], key: str) -> dict[str, Any]:
    if key.startswith("acceptance."):
        return dict(res["acceptance"].get(key.split(".", 1)[1], {}))
    return dict(res.get(key, {}))


def _at(*path: str) -> Getter:
    """The number at `path` inside an entry (the client and DKIM entries nest theirs), or None."""

    def get(r: dict[str, Any]) -> float | None:
        v: Any = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        return None if v is None else float(v)

    return get


def _shown(value: float | str, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, float) else value


def _value(entry: dict[str, Any] | None, get: Getter) -> float | str:
    if entry is None:
        return "—"
    if "error" in entry:
        return "error"
    v = get(entry)
    return "—" if v is None else v


def table(res: dict[str, Any]) -> str:
    head = ["Benchmark", *(HEADINGS[t] for t in TARGETS), *(f"mailwright/{SHORT[p]}" for p in PEERS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for label, key, get, fmt, ratio in rows(res):
        section = _section(res, key)
        values = {t: _value(section.get(t), get) for t in TARGETS}
        cells = [label]
        cells += [_shown(values[t], fmt) for t in TARGETS]
        mw = values["mailwright"]
        for peer in PEERS:
            pv = values[peer]
            ok = ratio and isinstance(mw, float) and isinstance(pv, float) and pv > 0
            cells.append(f"{mw / pv:.2f}" if ok else "—")  # type: ignore[operator]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def client_table(res: dict[str, Any]) -> str | None:
    """The clients' msg/s against smtp-sink; None when the client benchmark did not run."""
    entry = res.get("client", {}).get("smtp-sink")
    if entry is None:
        return None
    count = res["parameters"]["client_messages"]
    lines = [
        f"| Client: {count:,} msgs of 1 KB to smtp-sink, one after another | msg/s |",
        "|---|---:|",
        "| mailwright (`mailwright send`'s library, pooled) | not built yet |",
    ]
    for mode, label in client.MODES.items():
        lines.append(f"| {label} | {_shown(_value(entry, _at('modes', mode, 'msg_per_s')), '{:,.0f}')} |")
    return "\n".join(lines)


def end_to_end_table(res: dict[str, Any]) -> str | None:
    """Messages per second from submission to an empty queue; None when the benchmark did not run."""
    entry = res.get("end-to-end", {}).get("postfix")
    if entry is None:
        return None
    p = res["parameters"]
    value = _shown(_value(entry, _field("msg_per_s")), "{:,.0f}")
    empty = _shown(_value(entry, _field("seconds")), "{:,.1f}")
    return "\n".join(
        [
            f"| End to end: {p['messages']:,} msgs of 1 KB, {p['sessions']} sessions, new connection per"
            " message, relayed to smtp-sink | msg/s | queue empty after (s) |",
            "|---|---:|---:|",
            "| mailwright | no delivery yet | — |",
            f"| Postfix (real queue, default delivery settings) | {value} | {empty} |",
        ]
    )


def dkim_table(res: dict[str, Any]) -> str | None:
    """Signatures per second of a 1 KB message; None when the benchmark did not run."""
    entry = res.get("dkim", {}).get("dkimpy")
    if entry is None:
        return None
    lines = ["| DKIM: signing one 1 KB message | signatures/s |", "|---|---:|"]
    lines += [f"| mailwright, {label} | does not sign yet |" for label in signing.ALGORITHMS.values()]
    for algorithm, label in signing.ALGORITHMS.items():
        value = _shown(_value(entry, _at("algorithms", algorithm, "sig_per_s")), "{:,.0f}")
        lines.append(f"| dkimpy, {label} | {value} |")
    return "\n".join(lines)


def notes(res: dict[str, Any]) -> list[str]:
    out: list[str] = []
    p = res["parameters"]
    for mode, by_target in res["acceptance"].items():
        for name, r in by_target.items():
            bits = [f"{r.get('probe_samples', 0)} probe transactions"]
            if len(r.get("msg_per_s_runs", [])) > 1:
                each = ", ".join(f"{x:,.0f}" for x in r["msg_per_s_runs"])
                bits.insert(0, f"msg/s of the {len(r['msg_per_s_runs'])} runs {each} (median shown)")
            if "stored" in r:
                bits.append(f"{r['stored']:,} messages in its store (expected {r['stored_expected']:,})")
            if "machine_cpu" in r:
                shares = "/".join(f"{r['machine_cpu'][k] * 100:.0f}" for k in MACHINE_SHARES)
                bits.append(f"machine {'/'.join(MACHINE_SHARES)} {shares} %")
            if r.get("probe_error_count"):
                bits.append(f"{r['probe_error_count']} probe errors, e.g. {r['probe_errors'][:1]}")
            out.append(f"acceptance {mode}, {name}: " + ", ".join(bits))
    for name, r in res.get("idle", {}).items():
        if "rss_kib" in r:
            out.append(
                f"idle, {name}: RSS {r['rss_before_kib'] / 1024:.1f} MiB before, "
                f"{r['rss_per_connection_kib']:.1f} KiB per connection, "
                f"{r['connections']:,} opened in {r['open_seconds']:.1f} s"
            )
    for name, r in res.get("large", {}).items():
        if "seconds" in r:
            stored = f", stored: {r['stored']} ({r.get('stored_bytes', 0):,} bytes)" if "stored" in r else ""
            out.append(f"large, {name}: {r['bytes']:,} bytes in {r['seconds']:.2f} s{stored}")
    for name, r in res.get("end-to-end", {}).items():
        if len(r.get("msg_per_s_runs", [])) > 1:
            each = ", ".join(f"{x:,.0f}" for x in r["msg_per_s_runs"])
            runs = len(r["msg_per_s_runs"])
            out.append(f"end-to-end, {name}: msg/s of the {runs} runs {each} (median shown)")
    for section in SECTIONS:
        for where, by in _errors(res, section):
            out.append(f"ERROR {section} {where}: {by}")
    for name, why in res.get("unavailable", {}).items():
        out.append(f"not measured, {name}: {why}")
    for why in res.get("not_yet_measurable", []):
        out.append(f"not yet measurable: {why}")
    for name, detail in res.get("targets", {}).items():
        out.append(f"{name}: {detail}")
    m = res["machine"]
    v = res["versions"]
    out.append(
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gib']:.1f} GiB, Linux {m['kernel']}; "
        f"Python {v['python']} ({v.get('python_path', '?')}), uvloop {v['uvloop']}, "
        f"Postfix {v['postfix']}, aiosmtpd {v['aiosmtpd']}, "
        f"aiosmtplib {v['aiosmtplib']}, dkimpy {v.get('dkimpy', '?')}; "
        f"mailwright {v['mailwright']}"
    )
    out.append(
        f"acceptance: median of {p['repeat']} runs, each on a fresh server; "
        "the other figures are from one run; ratios are mailwright ÷ peer: "
        "above 1 is better for msg/s and MB/s, worse for ms, µs and MiB; "
        f"probe: up to {p['probe_count']} sequential connect→EHLO→MAIL→RCPT→DATA→250→QUIT "
        "transactions while smtp-source runs; server CPU: user + system time of the server's "
        "processes (and of the children they reaped) per message it handled, probe included; "
        "machine: how both cores spent the smtp-source runs (medians over the runs), load "
        "generator and probe included: idle time left over means the machine's CPU was not what "
        "limited the target (its latency was, or one busy process)"
    )
    return out


def _errors(res: dict[str, Any], section: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    data = res.get(section, {})
    if section == "acceptance":
        for mode, by_target in data.items():
            found += [(f"{mode} {t}", r["error"]) for t, r in by_target.items() if "error" in r]
    else:
        found += [(t, r["error"]) for t, r in data.items() if "error" in r]
    return found


def has_errors(res: dict[str, Any]) -> bool:
    return any(_errors(res, s) for s in SECTIONS)


def markdown(res: dict[str, Any]) -> str:
    when = res["timestamp"]
    kind = " (smoke run: tiny counts, not comparable)" if res["smoke"] else ""
    body = [
        f"Measured {when}{kind} with `bash bench/run`; raw numbers in `bench/results/`.",
        "",
        table(res),
        "",
        *([ct, ""] if (ct := client_table(res)) else []),
        *([et, ""] if (et := end_to_end_table(res)) else []),
        *([dt, ""] if (dt := dkim_table(res)) else []),
        *(f"- {n}" for n in notes(res)),
    ]
    return "\n".join(body) + "\n"


def write_json(res: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")


def update_readme(readme: Path, md: str) -> None:
    replace_block(readme, md, START, END, "## Benchmarks")
