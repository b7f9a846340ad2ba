"""The same pipeline with ``map_batch`` (polars): filter + select on whole micro-batches.

The JSON records are read by polars' NDJSON reader and the rows written by its NDJSON
writer (sluice's columnar path), so no per-record Python dict is built. Timing and
stopping as in ``sluice_pipeline``.
"""

from __future__ import annotations

import threading
import time

import polars as pl

import sluice
from benchmarks.contenders import parse_args, peak_rss_mb, report
from benchmarks.contenders.sluice_pipeline import watch
from sluice import App


def clicks(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("type") == "click").select("id", "page", "user", "__sluice_row")


def build(args) -> App:
    app = App(args.group, brokers=args.brokers, auto_offset_reset="earliest", progress_interval="1h")
    app.stream(args.input, value="json").map_batch(clicks, max_rows=10_000, max_wait="50ms").to(args.output)
    return app


def main() -> None:
    args = parse_args(__doc__)
    app = build(args)
    threading.Thread(target=watch, args=(app, args.records), daemon=True).start()
    clean = app.run()
    stats = app.stats
    report(
        consumed=stats.records_in,
        batches=stats.batches,
        commits=stats.commits,
        paused=stats.paused,
        clean=clean,
        finished=time.monotonic(),
        peak_rss_mb=peak_rss_mb(),
        sluice=sluice.__file__,
    )


if __name__ == "__main__":
    main()
