"""The README's performance table, rendered from one results file of the suite.

One row per scenario, one column per system; sluice's cell carries its ``--workers 2``
and exactly-once figures, the ceiling's the latency floor. A cell is a rate (msg/s,
records/s), ``p50 / p99`` ms for latency, or peak RSS MB for memory; a wrong output
says so, a pair the suite does not run says why in a word.

Usage:
    python -m benchmarks.readme_table benchmarks/results/2026-12-02.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["render"]

#: (contender, column title)
COLUMNS = (
    ("sluice", "sluice"),
    ("hand", "hand loop"),
    ("ceiling", "ceiling"),
    ("kafka-python", "kafka-python"),
    ("quix", "Quix Streams"),
    ("faust", "Faust"),
    ("bytewax", "Bytewax"),
    ("faststream", "FastStream"),
    ("kafka-streams", "Kafka Streams"),
)

#: scenario -> its row title in the README
ROW_TITLES = {
    "stateless": "stateless {stateless:,.0f}, msg/s",
    "windowed": "windowed {windowed:,.0f}, {windowed_keys:,.0f} keys, msg/s",
    "io": "I/O 20 ms x {io:,.0f}, records/s",
    "latency": "latency at {latency_rate:,.0f}/s, p50 / p99 ms",
    "memory": "memory, {memory:,.0f} backlog, peak RSS MB",
    "join": "join, stream enriched from a table, msg/s",
}

#: why a pair does not run, in a word (matched on the suite's longer reason)
SKIP_WORDS = (
    ("no windows", "no windows"),
    ("one record at a time", "sequential"),
    ("one item at a time", "sequential"),
    ("sequential", "sequential"),
    ("no stream-table join", "no join program"),
    ("stateless only", "stateless only"),
    ("no tables", "no tables"),
)


def _number(x: float) -> str:
    return f"{x:,.0f}"


def _figure(scenario: str, row: dict) -> str:
    """The main figure of a valid row."""
    if scenario == "latency":
        lat = row["latency_ms"]
        return f"{lat['p50']:,.0f} / {lat['p99']:,.0f}"
    if scenario == "memory":
        return _number(row["peak_rss_mb"])
    return _number(row["msg_per_s"])


def _outputs(verdict: str) -> str:
    """``N of M`` from a verdict such as ``WRONG: 4943 windows for 100000 expected, ...``."""
    words = verdict.rsplit("WRONG: ", maxsplit=1)[-1].split(",", maxsplit=1)[0].split()
    return f"{int(words[0]):,} of {int(words[-2]):,}" if len(words) >= 4 else verdict


def _cell(scenario: str, row: dict | None, skipped: str | None) -> str:
    if row is None:
        if skipped is None:
            return "-"
        return next((word for key, word in SKIP_WORDS if key in skipped), "-")
    if row["ok"]:
        return _figure(scenario, row)
    verdict = row["verdict"]
    if "(known: " in verdict:
        return "WRONG: " + verdict.split("(known: ")[-1].split("(")[0].strip(" )")
    if "unfinished" in verdict:
        return f"too slow: {_outputs(verdict)} outputs in {verdict.split()[2]} s"
    if scenario == "latency" and "missing ids" in verdict:
        return f"fell behind: {_outputs(verdict)} outputs"
    return "WRONG: " + verdict.removeprefix("WRONG: ").split(",")[0]


def _sluice_cell(scenario: str, rows: dict[str, dict], skipped: dict[str, str]) -> str:
    cell = f"**{_cell(scenario, rows.get('sluice'), skipped.get('sluice'))}**"
    extra = [
        f"{label}: {_cell(scenario, rows[name], None)}"
        for name, label in (("sluice-w2", "w2"), ("sluice-eos", "exactly-once"))
        if name in rows
    ]
    return cell + (f" ({'; '.join(extra)})" if extra else "")


def render(data: dict) -> str:
    """The Markdown table of one results file (``benchmarks/results/<date>.json``)."""
    header = "| scenario | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(COLUMNS)]
    for scenario, result in data["scenarios"].items():
        rows = {r["contender"]: r for r in result["rows"]}
        skipped = result["skipped"]
        cells = [ROW_TITLES.get(scenario, scenario).format(**data["sizes"])]
        for name, _ in COLUMNS:
            if name == "sluice":
                cells.append(_sluice_cell(scenario, rows, skipped))
                continue
            cell = _cell(scenario, rows.get(name), skipped.get(name))
            if name == "ceiling" and scenario == "io":
                cell = "-"  # nothing to wait for: not a bound
            if name == "ceiling" and "floor" in rows:
                cell += f" (floor: {_cell(scenario, rows['floor'], None)})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "results", type=Path, help="a results file of the suite (benchmarks/results/<date>.json)"
    )
    args = parser.parse_args()
    print(render(json.loads(args.results.read_text())))


if __name__ == "__main__":
    main()
