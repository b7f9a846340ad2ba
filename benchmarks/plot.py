"""Charts of a suite run: one PNG per scenario, next to its JSON.

Run by ``benchmarks.bench`` with ``benchmarks/.venv-plot/bin/python -m benchmarks.plot
RESULTS.json`` (matplotlib lives in that venv, not in sluice's dependencies). Prints
``{scenario: chart file name}`` as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: scenario -> (how to read a row's value, axis label)
AXES = {
    "stateless": ("msg_per_s", "messages/s (higher is better)"),
    "windowed": ("msg_per_s", "messages/s (higher is better)"),
    "io": ("msg_per_s", "records/s (higher is better)"),
    "latency": ("latency", "end-to-end latency, ms (lower is better)"),
    "memory": ("peak_rss_mb", "peak RSS, MB (lower is better)"),
    "join": ("msg_per_s", "messages/s (higher is better)"),
}


def chart(scenario: str, s: dict, path: Path, title: str) -> None:
    field, axis = AXES[scenario]
    rows = s["rows"]
    labels = [r["label"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    ys = range(len(rows))
    if field == "latency":
        p50 = [(r["latency_ms"] or {}).get("p50", 0) if r["ok"] else 0 for r in rows]
        p99 = [(r["latency_ms"] or {}).get("p99", 0) if r["ok"] else 0 for r in rows]
        ax.barh([y + 0.2 for y in ys], p99, height=0.4, label="p99", color="#d08c3a")
        ax.barh([y - 0.2 for y in ys], p50, height=0.4, label="p50", color="#3a7dd0")
        ax.set_xscale("symlog", linthresh=10)
        ax.legend(loc="lower right")
        values = p99
    else:
        values = [(r[field] or 0) if r["ok"] else 0 for r in rows]
        colors = ["#2e8b57" if r["contender"].startswith("sluice") else "#888888" for r in rows]
        colors = ["#444444" if r["contender"] == "ceiling" else c for r, c in zip(rows, colors, strict=True)]
        ax.barh(list(ys), values, color=colors)
    top = max(values, default=0) or 1
    for y, (r, v) in enumerate(zip(rows, values, strict=True)):
        text = "WRONG output" if not r["ok"] else f"{v:,.0f}"
        ax.text(v + top * 0.01 if v else top * 0.01, y, text, va="center", fontsize=8)
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(axis)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(json_path: str) -> None:
    src = Path(json_path)
    data = json.loads(src.read_text())
    made = {}
    for scenario, s in data["scenarios"].items():
        if not s["rows"]:
            continue
        name = f"{src.stem}-{scenario}.png"
        title = f"{scenario}: {s['description']}"
        chart(scenario, s, src.parent / name, title if len(title) < 110 else title[:107] + "...")
        made[scenario] = name
    print(json.dumps(made))


if __name__ == "__main__":
    main(sys.argv[1])
