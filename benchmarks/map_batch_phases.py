"""Where map_batch's time goes, without the broker: CPU per record, phase by phase.

Real consumed ``Message`` objects (the input topic is written, then read back once)
run through sluice's own ``Executor`` for the per-record pipeline (the fused loop) and
for ``map_batch``, producing into a producer that is connected to nothing (``produce``
costs what it costs, nothing is sent; the queue is purged between rounds). Then the
map_batch path is timed phase by phase: values joined and read by polars (decode), the
user's function, the rows back to NDJSON lines (encode), and the ``produce`` loop.
The figures are CPU time (``time.process_time``, every thread of the process), the
best of ``--rounds`` interleaved rounds: on a shared machine the minimum is the
least disturbed measure.

Run: ``.venv/bin/python -m benchmarks.map_batch_phases [--pipeline light|heavy] [--records N]``
(needs the broker only to write and read the input once).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from types import MethodType
from typing import Any

import polars as pl
from confluent_kafka import Message, Producer

from benchmarks._heavy import clean, clean_frame, keep, make_order
from benchmarks._kafka import (
    create_topics,
    delete_topics,
    make_event,
    produce_events,
    read_topic,
    unique_name,
)
from benchmarks.contenders.sluice_map_batch import clicks
from sluice import App
from sluice.runtime.executor import Executor
from sluice.runtime.tracker import Batch

PARTITIONS = 4
#: the output topics' size limit on a broker with default settings (what ``size_checked`` gets)
DEFAULT_LIMIT = 1_048_588 - 1024


def _unconnected() -> Producer:
    return Producer(
        {
            "bootstrap.servers": "127.0.0.1:1",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "message.timeout.ms": 600_000,
            "log_level": 0,
        }
    )


def _executor(build: Callable[[App], None], producer: Producer) -> Executor:
    app = App("phases", brokers="127.0.0.1:1")
    build(app)
    # one source: the executor runs every batch through its plan, whatever topic the messages say
    executor = Executor(app.sources, producer.produce, producer.poll, None)  # type: ignore[arg-type]
    executor.limit_sizes({"out": DEFAULT_LIMIT})
    return executor


def _pipelines(heavy: bool) -> dict[str, tuple[Callable[[App], None], int]]:
    def per_record(app: App) -> None:
        events = app.stream("in", value="json")
        if heavy:
            events.map(clean).filter(keep).to("out")
        else:
            events.filter(lambda e: e["type"] == "click").map(
                lambda e: {"id": e["id"], "page": e["page"], "user": e["user"]}
            ).to("out")

    def columnar(app: App) -> None:
        app.stream("in", value="json").map_batch(clean_frame if heavy else clicks, max_rows=10_000).to("out")

    return {"per-record (fused)": (per_record, 1_000), "map_batch": (columnar, 10_000)}


def _phases(msgs: list[Any], fn: Callable[[Any], Any], producer: Producer) -> dict[str, float]:
    """The map_batch path by hand, phase by phase (CPU seconds for all of ``msgs``)."""
    spent = dict.fromkeys(("decode", "function", "encode", "produce"), 0.0)

    def on_delivery(*_: Any) -> None:
        return None

    produce = producer.produce
    for i in range(0, len(msgs), 10_000):
        batch = msgs[i : i + 10_000]
        t0 = time.process_time()
        df = pl.read_ndjson(io.BytesIO(b"\n".join(map(Message.value, batch))))
        df = df.with_columns(pl.Series("__sluice_row", range(len(batch))))
        t1 = time.process_time()
        out = fn(df)
        t2 = time.process_time()
        positions = out["__sluice_row"].to_list()
        buffer = io.BytesIO()
        out.drop("__sluice_row").write_ndjson(buffer)
        lines = buffer.getvalue().split(b"\n")
        lines.pop()
        t3 = time.process_time()
        for line, p in zip(lines, positions, strict=True):
            m = batch[p]
            ts = m.timestamp()[1]
            produce(
                "out",
                line,
                m.key(),
                timestamp=ts,
                headers=m.headers(),
                on_delivery=MethodType(on_delivery, m),
            )
        t4 = time.process_time()
        for name, a, b in (("decode", t0, t1), ("function", t1, t2), ("encode", t2, t3), ("produce", t3, t4)):
            spent[name] += b - a
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", choices=("light", "heavy"), default="light")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    heavy = args.pipeline == "heavy"
    topic = unique_name("phases-in")
    create_topics([topic], PARTITIONS)
    try:
        produce_events(topic, args.records, make=make_order if heavy else make_event)
        msgs = list(read_topic(topic, PARTITIONS))
    finally:
        delete_topics([topic])
    producer = _unconnected()
    runs = {name: (_executor(build, producer), size) for name, (build, size) in _pipelines(heavy).items()}
    best: dict[str, float] = {}
    phases: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (executor, size) in runs.items():
            started = time.process_time()
            for i in range(0, len(msgs), size):
                executor.run(msgs[i : i + size], Batch(size))
            best[name] = min(best.get(name, float("inf")), time.process_time() - started)
            producer.purge()
            producer.poll(0)
        for name, spent in _phases(msgs, clean_frame if heavy else clicks, producer).items():
            phases[name] = min(phases.get(name, float("inf")), spent)
        producer.purge()
        producer.poll(0)
    n = len(msgs)
    print(f"{args.pipeline} pipeline, {n:,} records, CPU us per input record (best of {args.rounds}):")
    for name, seconds in best.items():
        print(f"  {name:20s} {seconds / n * 1e6:6.2f}")
    print("  map_batch by phase:")
    for name, seconds in phases.items():
        print(f"    {name:18s} {seconds / n * 1e6:6.2f}")
    ratio = best["per-record (fused)"] / best["map_batch"]
    print(f"  per-record / map_batch: {ratio:.2f}x")


if __name__ == "__main__":
    main()
