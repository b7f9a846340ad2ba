"""sluice, scenario "join": each ``--input`` record enriched with its user's row of ``--table``.

``app.table(--table)`` and ``stream.join(users, fn, how="left")``: the stream is keyed by
user id and co-partitioned with the table, so the lookup needs no repartition. The table
is read (time-synchronized) into RocksDB as the first records meet it, so reading the table
is part of the measured time: the clock starts when the app has its partitions (before
its first fetch; the other contenders start theirs at their first record of either
topic), and the app stops once ``--records`` stream records were consumed.
"""

from __future__ import annotations

import tempfile
import threading
import time

import sluice
from benchmarks.contenders import parse_args, peak_rss_mb, report, report_first
from sluice import App


def enrich(order: dict, user: dict | None) -> dict:
    if user is None:
        return {**order, "name": None, "tier": None}
    return {**order, "name": user["name"], "tier": user["tier"]}


def build(args) -> App:
    app = App(
        args.group,
        brokers=args.brokers,
        auto_offset_reset="earliest",
        progress_interval="1h",
        state_dir=tempfile.mkdtemp(prefix="sluice-join-"),
    )
    users = app.table(args.table, value="json")
    app.stream(args.input, value="json").join(users, enrich, how="left").to(args.output)
    return app


def watch(app: App, records: int) -> None:
    app.wait_ready(120)
    report_first()
    while app.stats is None or app.stats.records_in < records:
        time.sleep(0.02)
    app.stop()


def main() -> None:
    args = parse_args(__doc__)
    app = build(args)
    threading.Thread(target=watch, args=(app, args.records), daemon=True).start()
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
        clean = app.run()
        profiler.stop()
        with open(args.profile, "w") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        clean = app.run()
    stats = app.stats
    report(
        consumed=stats.records_in,
        batches=stats.batches,
        commits=stats.commits,
        clean=clean,
        finished=time.monotonic(),
        peak_rss_mb=peak_rss_mb(),
        sluice=sluice.__file__,
    )


if __name__ == "__main__":
    main()
