"""sluice, scenario "io": a 20 ms blocking handler, ``concurrency=N`` (threads), key order.

``--scenario io``; ``--concurrency`` (default 64). The handler sleeps ``HANDLER_S`` and
returns ``{"id", "key"}``, written to the output keyed like the input, so the check can
see per-key order in the output partitions. Stopping and timing as in ``sluice_pipeline``.
"""

from __future__ import annotations

import time

from benchmarks.contenders import HANDLER_S
from benchmarks.contenders.sluice_pipeline import run
from sluice import App


def handle(e: dict) -> dict:
    time.sleep(HANDLER_S)
    return {"id": e["id"], "key": e["key"]}


def build(args) -> App:
    app = App(
        args.group,
        brokers=args.brokers,
        auto_offset_reset="earliest",
        progress_interval="1h",
        concurrency=args.concurrency,
        ordering="key",
    )
    app.stream(args.input, value="json").map(handle).to(args.output)
    return app


def main() -> None:
    run(build, __doc__)


if __name__ == "__main__":
    main()
