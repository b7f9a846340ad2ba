"""The executor (sluice.runtime.executor, fusion, parallel) on the real runtime, broker-free."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sluice import App
from sluice.testing import TestDriver

pytestmark = pytest.mark.memory


def test_a_graph_with_branches_runs_every_branch_in_order():
    app = App("branches")
    events = app.stream("events", value="json")
    events.filter(lambda e: e["kind"] == "a").map(lambda e: e["n"]).to("as")
    events.filter(lambda e: e["kind"] == "b").flat_map(lambda e: [e["n"]] * e["n"]).to("bs")
    seen: list[int] = []
    events.sink(lambda e: seen.append(e["n"]))
    with TestDriver(app) as driver:
        for n, kind in enumerate("abab"):
            driver.send("events", {"kind": kind, "n": n})
        assert [r.value for r in driver.output("as")] == [0, 2]
        assert [r.value for r in driver.output("bs")] == [1, 3, 3, 3]
    assert seen == [0, 1, 2, 3]


def test_the_loop_is_fused_for_a_filter_map_to_chain():
    """The executor compiles filter -> map -> to into one generated loop; the driver runs that code."""
    app = App("fusion")
    app.stream("in", value="json").filter(lambda v: v > 0).map(lambda v: v * 10).to("out")
    with TestDriver(app) as driver:
        for v in (1, -1, 2):
            driver.send("in", v)
        assert [r.value for r in driver.output("out")] == [10, 20]
        plans = driver.runner.executor._plans  # type: ignore[union-attr]
    fused = [p for p in plans.values() if getattr(p, "fused", None)]
    assert fused, "the chain was not fused"


def test_key_by_sets_the_output_key_and_partition():
    app = App("rekey")
    app.stream("in", value="json").key_by(lambda v: v["user"]).to("by-user", partitions=4)
    with TestDriver(app) as driver:
        for i in range(20):
            driver.send("in", {"user": f"u{i % 5}", "i": i})
        out = driver.output("by-user")
    assert {r.key for r in out} == {f"u{i}" for i in range(5)}
    for user in {r.key for r in out}:
        assert len({r.partition for r in out if r.key == user}) == 1
        assert [r.value["i"] for r in out if r.key == user] == sorted(
            r.value["i"] for r in out if r.key == user
        )


def test_map_batch_rows_keep_their_records_keys_and_timestamps():
    pl = pytest.importorskip("polars")
    app = App("frames")
    app.stream("in", value="json").map_batch(lambda df: df.filter(pl.col("n") % 2 == 1)).to("odd")
    with TestDriver(app) as driver:
        for n in range(6):
            driver.send("in", {"n": n}, key=f"k{n}", timestamp=1_000 + n)
        out = driver.output("odd")
    assert [(r.key, r.value["n"], r.timestamp) for r in out] == [
        (b"k1", 1, 1_001),
        (b"k3", 3, 1_003),
        (b"k5", 5, 1_005),
    ]


def test_async_steps_run_on_the_runtimes_event_loop():
    app = App("async")

    async def enrich(v: dict) -> dict:
        await asyncio.sleep(0)
        return {**v, "enriched": True}

    app.stream("in", value="json").map(enrich).to("out")
    with TestDriver(app) as driver:
        driver.send("in", {"n": 1})
        assert [r.value for r in driver.output("out")] == [{"n": 1, "enriched": True}]


def test_parallel_workers_keep_each_keys_order():
    app = App("parallel", concurrency=4, ordering="key")
    threads: set[str] = set()

    def work(v: dict) -> dict:
        threads.add(threading.current_thread().name)
        return v

    app.stream("in", value="json").map(work).to("out")
    with TestDriver(app) as driver:
        for i in range(200):
            driver.send("in", {"k": i % 8, "i": i}, key=f"k{i % 8}")
        out = driver.output("out")
    assert len(out) == 200
    for k in range(8):
        assert [r.value["i"] for r in out if r.value["k"] == k] == list(range(k, 200, 8))
    assert threading.current_thread().name not in threads  # ran on the worker threads
