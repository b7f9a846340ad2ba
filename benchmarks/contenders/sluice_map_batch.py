"""The same pipeline with ``map_batch`` (polars): filter + select on whole micro-batches.

The JSON records are read by polars' NDJSON reader and the rows written by its NDJSON
writer (sluice's columnar path), so no per-record Python dict is built. Timing and
stopping as in ``sluice_pipeline``.
"""

from __future__ import annotations

import polars as pl

from benchmarks.contenders.sluice_pipeline import run
from sluice import App


def clicks(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("type") == "click").select("id", "page", "user", "__sluice_row")


def build(args) -> App:
    app = App(args.group, brokers=args.brokers, auto_offset_reset="earliest", progress_interval="1h")
    app.stream(args.input, value="json").map_batch(clicks, max_rows=10_000, max_wait="50ms").to(args.output)
    return app


def main() -> None:
    run(build, __doc__)


if __name__ == "__main__":
    main()
