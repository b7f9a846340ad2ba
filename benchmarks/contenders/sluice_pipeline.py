"""The sluice pipeline: filter + map + to, through the public API.

``--pipeline heavy``: ``map(clean).filter(keep)`` of ``benchmarks._heavy`` instead.

A watcher thread notes when the first records were consumed (``app.stats.records_in``
becomes non-zero, i.e. after the first batch went through the graph; it polls every
millisecond until then; the harness leaves that batch's records out of the rate) and calls ``app.stop()`` once ``--records`` were consumed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import sluice
from benchmarks._heavy import clean, keep
from benchmarks.contenders import parse_args, peak_rss_mb, report, report_first
from sluice import App


def build(args) -> App:
    app = App(args.group, brokers=args.brokers, auto_offset_reset="earliest", progress_interval="1h")
    events = app.stream(args.input, value="json")
    if args.pipeline == "heavy":
        events.map(clean).filter(keep).to(args.output)
        return app
    events.filter(lambda e: e["type"] == "click").map(
        lambda e: {"id": e["id"], "page": e["page"], "user": e["user"]}
    ).to(args.output)
    return app


def watch(app: App, records: int) -> None:
    while app.stats is None or app.stats.records_in == 0:
        time.sleep(0.001)
    # the clock starts once the first batch went through: those records are not counted
    report_first(before=app.stats.records_in)
    while app.stats.records_in < records:
        time.sleep(0.02)
    app.stop()


def run(build_app: Callable[[Any], App], doc: str) -> None:
    """Run the app ``build_app`` makes until ``--records`` were consumed, then report (shared by contenders)."""
    args = parse_args(doc)
    app = build_app(args)
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
        paused=stats.paused,
        clean=clean,
        finished=time.monotonic(),
        peak_rss_mb=peak_rss_mb(),
        sluice=sluice.__file__,
    )


def main() -> None:
    run(build, __doc__)


if __name__ == "__main__":
    main()
