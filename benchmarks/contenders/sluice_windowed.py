"""sluice, scenario "windowed": tumbling one-minute counts per user, final results only.

Written against the stateful API as specified (``Stream.window``); when the sluice
being measured has no ``Stream.window`` yet, the harness reports "not available yet"
instead of running this. Stopping and timing as in ``sluice_pipeline``.
"""

from __future__ import annotations

from benchmarks.contenders.sluice_pipeline import run
from sluice import App


def build(args) -> App:
    app = App(args.group, brokers=args.brokers, auto_offset_reset="earliest", progress_interval="1h")
    (
        app.stream(args.input, value="json")
        .key_by(lambda e: e["user"])
        .window(tumbling="1m", grace="0s")
        .count()
        .final()
        .to(args.output)
    )
    return app


def main() -> None:
    run(build, __doc__)


if __name__ == "__main__":
    main()
