"""The sluice pipeline of ``sluice_pipeline`` with ``guarantee="exactly_once"`` (a transaction every 100 ms)."""

from __future__ import annotations

from benchmarks.contenders.sluice_pipeline import run
from sluice import App


def build(args) -> App:
    app = App(
        args.group,
        brokers=args.brokers,
        auto_offset_reset="earliest",
        progress_interval="1h",
        guarantee="exactly_once",
    )
    events = app.stream(args.input, value="json")
    events.filter(lambda e: e["type"] == "click").map(
        lambda e: {"id": e["id"], "page": e["page"], "user": e["user"]}
    ).to(args.output)
    return app


def main() -> None:
    run(build, __doc__)


if __name__ == "__main__":
    main()
