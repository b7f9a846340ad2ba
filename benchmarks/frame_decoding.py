"""JSON records to a polars frame and back: columnar NDJSON vs per-record orjson dicts.

This isolates the decode/encode choice that ``map_batch`` makes (no broker involved:
the Kafka side is measured by ``benchmarks.stateless``). Ratios are within one run.

Run: ``.venv/bin/python -m benchmarks.frame_decoding``; writes
``benchmarks/results/frame-decoding-<date>.md``.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import platform
import time
from pathlib import Path

import orjson
import polars as pl

from benchmarks._kafka import make_event

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(fn, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rows = 10_000
    raw = [orjson.dumps(make_event(i)) for i in range(rows)]
    ndjson_in = best_of(lambda: pl.read_ndjson(io.BytesIO(b"\n".join(raw))))
    dicts_in = best_of(lambda: pl.DataFrame([orjson.loads(b) for b in raw]))
    df = pl.read_ndjson(io.BytesIO(b"\n".join(raw)))
    ndjson_out = best_of(lambda: [line.encode() for line in df.write_ndjson().split("\n") if line])
    dicts_out = best_of(lambda: [orjson.dumps(d) for d in df.to_dicts()])
    lines = [
        f"# JSON <-> polars frame, {rows:,} records of ~200 B ({dt.date.today()})",
        "",
        "Command: `.venv/bin/python -m benchmarks.frame_decoding`",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, polars {pl.__version__}; best of 7.",
        "",
        "| direction | columnar NDJSON (polars) | per-record orjson + dicts | ratio |",
        "|---|---:|---:|---:|",
        f"| bytes -> frame | {ndjson_in / rows * 1e6:.2f} us/record | {dicts_in / rows * 1e6:.2f} us/record "
        f"| {dicts_in / ndjson_in:.1f}x |",
        f"| frame -> bytes | {ndjson_out / rows * 1e6:.2f} us/record | {dicts_out / rows * 1e6:.2f} us/record "
        f"| {dicts_out / ndjson_out:.1f}x |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"frame-decoding-{dt.date.today()}.md").write_text(text)


if __name__ == "__main__":
    main()
