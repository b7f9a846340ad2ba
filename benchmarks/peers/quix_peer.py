"""Quix Streams peer: the benchmark pipelines as the Quix Streams docs write them.

Run in ``benchmarks/.venv-quix`` (``make bench-peers``):
``python -m benchmarks.peers.quix_peer --scenario stateless|windowed --input T --output O --group G ...``.
The app runs until the harness sends SIGTERM (Quix Streams' own graceful stop).

- stateless: ``sdf[sdf["type"] == "click"][["id", "page", "user"]].to_topic(out)``.
- windowed: ``sdf.tumbling_window(60_000, grace_ms=0).count().final(closing_strategy=
  "partition")`` on the message key (the input is keyed by user, so no ``group_by``
  repartition is needed), then ``{"key", "start", "end", "value"}`` to the output, keyed
  by the group key. ``closing_strategy="partition"``: windows close on the partition's
  stream time, like Kafka Streams (the default, "key", closes a key's windows only when
  that key gets a later record, so each key's last window would stay open).
- join: ``sdf.join_asof(users, how="left", on_merge=enrich)``, Quix Streams' stream-table
  enrichment (the ``--table`` topic as the right side, kept in its state store; each record
  takes its key's latest row stamped at or before it). ``join_lookup`` needs an external
  lookup service (Quix's configuration service), so the as-of join is the one that
  applies. The clock starts at the first record of either topic.
"""

from __future__ import annotations

import tempfile
import time
from importlib.metadata import version
from typing import Any

from quixstreams import Application

from benchmarks.contenders import WINDOW_MS, parse_args, peak_rss_mb, report, report_first


def enrich(order: dict, user: dict | None) -> dict:
    """``on_merge`` of the join: a new dict (Quix forbids mutating either side)."""
    if user is None:
        return {**order, "name": None, "tier": None}
    return {**order, "name": user["name"], "tier": user["tier"]}


class FirstSeen:
    """An ``sdf.update`` step that reports the first record and counts them all."""

    def __init__(self) -> None:
        self.consumed = 0

    def __call__(self, _value: Any) -> None:
        if self.consumed == 0:
            report_first()
        self.consumed += 1


def main() -> None:
    args = parse_args(__doc__)
    app = Application(
        broker_address=args.brokers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-peer-"),
        loglevel="WARNING",
    )
    source = app.topic(args.input, key_deserializer="str", value_deserializer="json")
    sink = app.topic(args.output, key_serializer="str", value_serializer="json")
    seen = FirstSeen()
    sdf = app.dataframe(source).update(seen)
    if args.scenario == "stateless":
        sdf = sdf[sdf["type"] == "click"]
        sdf = sdf[["id", "page", "user"]]
    elif args.scenario == "windowed":
        sdf = (
            sdf.tumbling_window(duration_ms=WINDOW_MS, grace_ms=0).count().final(closing_strategy="partition")
        )
        sdf = sdf.apply(
            lambda w, key, _ts, _headers: {
                "key": key,
                "start": w["start"],
                "end": w["end"],
                "value": w["value"],
            },
            metadata=True,
        )
    elif args.scenario == "join":
        users = app.dataframe(app.topic(args.table, key_deserializer="str", value_deserializer="json"))
        sdf = sdf.join_asof(users.update(seen), how="left", on_merge=enrich)
    else:
        msg = f"Quix Streams processes one record at a time per partition: no scenario {args.scenario!r}"
        raise SystemExit(msg)
    sdf.to_topic(sink)
    report(version=f"quixstreams {version('quixstreams')}")
    app.run()
    report(consumed=seen.consumed, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
