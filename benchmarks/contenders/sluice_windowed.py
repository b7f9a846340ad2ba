"""sluice, scenario "windowed": tumbling one-minute counts per user, final results only.

The input is keyed by user, so the grouping needs no repartition topic
(``key_by(..., repartition=False)``), as for the peers reading the same topic. When the
sluice being measured has no ``Stream.window``, the harness reports "not available yet".
Stopping and timing as in ``sluice_pipeline``.
"""

from __future__ import annotations

from benchmarks.contenders.sluice_pipeline import run
from sluice import App


def build(args) -> App:
    app = App(args.group, brokers=args.brokers, auto_offset_reset="earliest", progress_interval="1h")
    (
        app.stream(args.input, value="json")
        # the input is already keyed (and so partitioned) by user, as for the peers: no repartition topic
        .key_by(lambda e: e["user"], repartition=False)
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
