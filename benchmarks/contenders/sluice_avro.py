"""The stateless pipeline over Avro: filter + map + to, records in the Schema Registry wire format.

The same pipeline and records as ``sluice_pipeline`` (JSON), read with
``value="avro"`` and written with ``value="avro"`` and the output schema below. The
registry URL comes from ``SLUICE_SCHEMA_REGISTRY_URL`` (set by ``benchmarks.formats``).
"""

from __future__ import annotations

from benchmarks.contenders.sluice_pipeline import run
from sluice import App

CLICK_SCHEMA = {
    "type": "record",
    "name": "Click",
    "namespace": "sluice.bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "page", "type": "string"},
        {"name": "user", "type": "string"},
    ],
}


def build(args) -> App:
    app = App(args.group, brokers=args.brokers, auto_offset_reset="earliest", progress_interval="1h")
    events = app.stream(args.input, value="avro")
    events.filter(lambda e: e["type"] == "click").map(
        lambda e: {"id": e["id"], "page": e["page"], "user": e["user"]}
    ).to(args.output, value="avro", schema=CLICK_SCHEMA)
    return app


def main() -> None:
    run(build, __doc__)


if __name__ == "__main__":
    main()
