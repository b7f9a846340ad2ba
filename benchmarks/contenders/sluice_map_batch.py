"""The same pipeline with ``map_batch`` (polars): filter + select on whole micro-batches.

The JSON records are read by polars' NDJSON reader and the rows written by its NDJSON
writer (sluice's columnar path), so no per-record Python dict is built. Timing and
stopping as in ``sluice_pipeline``. ``--pipeline heavy``: ``clean_frame`` of
``benchmarks._heavy`` (the same work as the per-record ``clean``, columnar).
"""

from __future__ import annotations

import polars as pl

from benchmarks._heavy import clean_frame
from benchmarks.contenders.sluice_pipeline import run
from sluice import App


def clicks(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("type") == "click").select("id", "page", "user", "__sluice_row")


def build(args) -> App:
    app = App(args.group, brokers=args.brokers, auto_offset_reset="earliest", progress_interval="1h")
    fn = clean_frame if args.pipeline == "heavy" else clicks
    app.stream(args.input, value="json").map_batch(fn, max_rows=10_000, max_wait="50ms").to(args.output)
    return app


def main() -> None:
    run(build, __doc__)


if __name__ == "__main__":
    main()
