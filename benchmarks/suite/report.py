"""The suite's results: ratios to sluice, the JSON file, the Markdown report."""

from __future__ import annotations

from benchmarks.suite.runner import Row

__all__ = ["METRICS", "markdown", "ratios", "sluice_rank"]

#: the main metric of each scenario: (Row field or latency key, label, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "stateless": ("msg_per_s", "msg/s", True),
    "windowed": ("msg_per_s", "msg/s", True),
    "io": ("msg_per_s", "records/s", True),
    "latency": ("p99", "p99 ms", False),
    "memory": ("peak_rss_mb", "peak RSS MB", False),
    "join": ("msg_per_s", "msg/s", True),
}


def value(row: Row) -> float | None:
    field, _, _ = METRICS[row.scenario]
    if not row.ok:
        return None
    if field in ("p50", "p99"):
        return row.latency_ms[field] if row.latency_ms else None
    return getattr(row, field)


def ratios(rows: list[Row]) -> dict[str, float]:
    """Each contender's main metric divided by sluice's (same run); empty without a valid sluice row."""
    base = next((value(r) for r in rows if r.contender == "sluice"), None)
    if not base:
        return {}
    return {r.contender: round(v / base, 3) for r in rows if (v := value(r)) is not None}


#: contenders that are measures of the machine, not systems a user would pick
REFERENCES = ("ceiling", "floor")


def sluice_rank(rows: list[Row]) -> int | None:
    """sluice's place among the valid contenders, the references (ceiling, floor) left out (1 = first)."""
    higher = METRICS[rows[0].scenario][2] if rows else True
    scored = [(value(r), r.contender) for r in rows if r.contender not in REFERENCES and value(r) is not None]
    scored.sort(key=lambda x: -x[0] if higher else x[0])
    names = [n for _, n in scored]
    return names.index("sluice") + 1 if "sluice" in names else None


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def table(rows: list[Row], skipped: dict[str, str]) -> str:
    scenario = rows[0].scenario if rows else ""
    _, label, _ = METRICS.get(scenario, ("", "", True))
    rel = ratios(rows)
    lines = [
        f"| contender | version | {label} | x sluice | p50 ms | CPU s | peak RSS MB | output |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        main = value(r)
        if scenario == "latency":
            p50 = r.latency_ms["p50"] if r.latency_ms else None
            main_text, p50_text = _fmt(main, 1), _fmt(p50, 1)
        else:
            main_text, p50_text = _fmt(main, 1 if scenario == "memory" else 0), ""
        if main is None and r.msg_per_s and scenario != "memory":
            main_text = f"({r.msg_per_s:,.0f}, invalid)"
        ratio = f"{rel[r.contender]:.2f}x" if r.contender in rel else "-"
        verdict = r.verdict.replace("|", "/")
        lines.append(
            f"| {r.label} | {r.version or '-'} | {main_text} | {ratio} | {p50_text} | {r.cpu_seconds:.1f} "
            f"| {r.peak_rss_mb:.0f} | {verdict} |"
        )
    for name, why in skipped.items():
        lines.append(f"| {name} | - | not run | - | | | | {why} |")
    return "\n".join(lines)


def markdown(data: dict) -> str:
    parts = [
        f"# Benchmark suite — {data['date'][:10]}",
        "",
        f"`{data['command']}`" + (" (SMOKE: tiny inputs, rates meaningless)" if data["smoke"] else ""),
        "",
        f"Machine: {data['machine']['nproc']} cores ({data['machine']['cpu']}), Python {data['machine']['python']}, "
        f"Kafka {data['machine']['kafka']} (one local broker, shared), librdkafka {data['machine']['librdkafka']}. "
        f"sluice: {data['machine']['sluice_code']}."
        + (f" sluice-ref: {data['machine']['sluice_ref']}." if data["machine"].get("sluice_ref") else ""),
        "",
        "Each contender runs alone in its own process(es), consumer group and output topic; "
        "its output is read back and checked (a wrong output is marked WRONG and gets no rate). "
        "msg/s = input records / (output complete - first record consumed): process start and "
        "group join excluded for all. Ratios: the contender's value / sluice's, same run. "
        "CPU s = user+sys of the whole process tree (start and join included); peak RSS = the "
        "process tree's resident memory, sampled every 20 ms (and VmHWM for single processes).",
        "",
    ]
    for name, s in data["scenarios"].items():
        parts += [f"## {name}", "", s["description"], ""]
        if s.get("info"):
            parts += ["Input: " + ", ".join(f"{k} {v}" for k, v in s["info"].items()), ""]
        rows = [Row(**r) for r in s["rows"]]
        parts += [table(rows, s["skipped"]), ""]
        if s.get("chart"):
            parts += [f"![{name}]({s['chart']})", ""]
    return "\n".join(parts) + "\n"
