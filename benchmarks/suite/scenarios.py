"""The six scenarios: their inputs, their contenders' runs, their checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks._kafka import (
    BROKERS,
    create_topics,
    delete_topics,
    event_type,
    expected_click_ids,
    produce_events,
    unique_name,
)
from benchmarks.suite._proc import Running
from benchmarks.suite.checks import Check, check_clicks, check_io, check_join, check_windows
from benchmarks.suite.contenders import Contender
from benchmarks.suite.data import LatencyProbe, produce_io, produce_join, produce_windowed
from benchmarks.suite.runner import Row, Target, cleanup_group_topics, measure, percentiles, row_from

__all__ = ["FULL", "SMOKE", "Sizes", "run_scenario"]

PARTITIONS = 4
#: after the last worker of a group consumed, before the paced input starts
_SETTLE_S = 2.0


@dataclass(frozen=True)
class Sizes:
    """Input sizes of one suite run."""

    stateless: int
    windowed: int
    windowed_keys: int
    io: int
    io_keys: int
    latency_rate: int
    latency_seconds: float
    memory: int
    memory_cap_s: float
    join: int
    join_keys: int
    #: a run whose output stopped growing this long is over (Kafka Streams emits on its 30 s commits)
    stall_s: float = 45.0

    def describe(self) -> dict[str, str]:
        return {
            "stateless": f"{self.stateless:,} JSON records (~200 B) on {PARTITIONS} partitions, filter + map + produce",
            "windowed": f"{self.windowed:,} records, {self.windowed_keys:,} keys, tumbling 1 min, grace 0, final counts",
            "io": f"20 ms handler, {self.io:,} records, {self.io_keys} keys, concurrency 64 where the system has any",
            "latency": f"stateless pipeline, input produced at {self.latency_rate:,}/s for {self.latency_seconds:g} s; "
            "end-to-end p50/p99 from produce() to the output's arrival",
            "memory": f"stateless pipeline on a {self.memory:,}-record backlog; peak RSS of the process tree "
            f"(run stopped {self.memory_cap_s:g} s after its first record if not done)",
            "join": f"{self.join:,} JSON records keyed by user enriched from a {self.join_keys:,}-key table "
            f"(its topic written first, both on {PARTITIONS} partitions), left join; the clock runs from the "
            "first record of either topic (sluice: from its assignment) to the last output",
        }


FULL = Sizes(1_000_000, 1_000_000, 10_000, 3_000, 200, 10_000, 60, 5_000_000, 60, 1_000_000, 100_000)
SMOKE = Sizes(5_000, 5_000, 200, 300, 200, 1_000, 2, 20_000, 6, 5_000, 500, stall_s=40.0)


def _each(contenders: list[Contender], parallel: int, fn: Callable[[Contender], Row]) -> list[Row]:
    if parallel <= 1:
        rows = []
        for c in contenders:
            rows.append(fn(c))
            _print_row(rows[-1])
        return rows
    with ThreadPoolExecutor(parallel) as pool:
        rows = list(pool.map(fn, contenders))
    for r in rows:
        _print_row(r)
    return rows


def _print_row(r: Row) -> None:
    rate = f"{r.msg_per_s:,.0f} msg/s" if r.msg_per_s else "-"
    lat = f", p50 {r.latency_ms['p50']:.0f} ms p99 {r.latency_ms['p99']:.0f} ms" if r.latency_ms else ""
    print(
        f"  {r.scenario:>9} {r.contender:>13}: {rate}{lat}, peak RSS {r.peak_rss_mb:.0f} MB, {r.verdict}",
        flush=True,
    )
    if not r.ok and r.stderr_tail:
        print(
            "    stderr:\n" + "\n".join("      " + line for line in r.stderr_tail.splitlines()[-8:]),
            flush=True,
        )


def _timeout(records: int) -> float:
    return max(120.0, records / 2_000)


def stateless(
    contenders: list[Contender], sizes: Sizes, cwd: Path, parallel: int, extra: list[str]
) -> tuple[list[Row], dict]:
    topic = unique_name("bench-in-stateless")
    create_topics([topic], PARTITIONS)
    try:
        secs = produce_events(topic, sizes.stateless)
        ids = expected_click_ids(sizes.stateless)
        target = Target(
            topic,
            PARTITIONS,
            sizes.stateless,
            len(ids),
            lambda out: check_clicks(out, PARTITIONS, ids),
            _timeout(sizes.stateless),
        )
        rows = _each(contenders, parallel, lambda c: measure("stateless", c, target, cwd, extra_args=extra))
        return rows, {"input_seconds": round(secs, 1)}
    finally:
        delete_topics([topic])


def windowed(
    contenders: list[Contender], sizes: Sizes, cwd: Path, parallel: int, extra: list[str]
) -> tuple[list[Row], dict]:
    topic = unique_name("bench-in-windowed")
    create_topics([topic], PARTITIONS)
    try:
        t0 = time.monotonic()
        data = produce_windowed(topic, sizes.windowed, sizes.windowed_keys, PARTITIONS)
        input_seconds = round(time.monotonic() - t0, 1)
        target = Target(
            topic,
            PARTITIONS,
            data.total,
            len(data.expected),
            lambda out: check_windows(out, PARTITIONS, data.expected),
            _timeout(sizes.windowed) * 2,
            stall_seconds=sizes.stall_s,
        )
        rows = _each(contenders, parallel, lambda c: measure("windowed", c, target, cwd, extra_args=extra))
        info = {
            "input_seconds": input_seconds,
            "base_ms": data.base_ms,
            "windows_expected": len(data.expected),
            "flush_records": data.flush_records,
        }
        return rows, info
    finally:
        delete_topics([topic])


def io(
    contenders: list[Contender], sizes: Sizes, cwd: Path, parallel: int, extra: list[str]
) -> tuple[list[Row], dict]:
    topic = unique_name("bench-in-io")
    create_topics([topic], PARTITIONS)
    try:
        produce_io(topic, sizes.io, sizes.io_keys)
        target = Target(
            topic,
            PARTITIONS,
            sizes.io,
            sizes.io,
            lambda out: check_io(out, PARTITIONS, sizes.io),
            300,
            stall_seconds=sizes.stall_s,
        )
        rows = _each(
            contenders,
            parallel,
            lambda c: measure("io", c, target, cwd, extra_args=["--concurrency", "64", *extra]),
        )
        return rows, {}
    finally:
        delete_topics([topic])


def memory(
    contenders: list[Contender], sizes: Sizes, cwd: Path, parallel: int, extra: list[str]
) -> tuple[list[Row], dict]:
    topic = unique_name("bench-in-memory")
    create_topics([topic], PARTITIONS)
    try:
        secs = produce_events(topic, sizes.memory)
        ids = expected_click_ids(sizes.memory)
        target = Target(
            topic,
            PARTITIONS,
            sizes.memory,
            len(ids),
            lambda out: check_clicks(out, PARTITIONS, ids, complete=False),
            sizes.memory_cap_s + 180,
            cap_seconds=sizes.memory_cap_s,
            stall_seconds=sizes.stall_s,
        )
        rows = _each(contenders, parallel, lambda c: measure("memory", c, target, cwd, extra_args=extra))
        return rows, {"input_seconds": round(secs, 1)}
    finally:
        delete_topics([topic])


def join(
    contenders: list[Contender], sizes: Sizes, cwd: Path, parallel: int, extra: list[str]
) -> tuple[list[Row], dict]:
    table, stream = unique_name("bench-in-join-table"), unique_name("bench-in-join")
    create_topics([table, stream], PARTITIONS)
    try:
        t0 = time.monotonic()
        data = produce_join(table, stream, sizes.join, sizes.join_keys)
        input_seconds = round(time.monotonic() - t0, 1)
        target = Target(
            stream,
            PARTITIONS,
            sizes.join,
            sizes.join,
            lambda out: check_join(out, PARTITIONS, data.records, data.keys),
            _timeout(sizes.join) * 2,
            stall_seconds=sizes.stall_s,
        )
        rows = _each(
            contenders,
            parallel,
            lambda c: measure("join", c, target, cwd, extra_args=["--table", table, *extra]),
        )
        return rows, {"input_seconds": input_seconds, "table_keys": data.keys}
    finally:
        delete_topics([table, stream])


def _latency_one(c: Contender, sizes: Sizes, cwd: Path, brokers: str = BROKERS) -> Row:
    """One contender on its own fresh input topic, fed at a fixed rate."""
    topic, output = unique_name("bench-in-latency"), unique_name(f"bench-out-{c.name}")
    group = unique_name(f"bench-{c.name}")
    create_topics([topic, output], PARTITIONS, brokers)
    probe = LatencyProbe(topic, output, PARTITIONS, brokers)
    common = [
        "--brokers",
        brokers,
        "--input",
        topic,
        "--output",
        output,
        "--group",
        group,
        "--records",
        str(10**12),
    ]
    run = Running(c.argv("latency", common), c.cwd or cwd, c.env("latency", brokers, topic, output, group))
    try:

        def ready() -> bool:
            """Warm: the first output arrived and every worker consumed (its partitions assigned)."""
            run.sample()
            if run.exited():
                return True
            if c.name == "ceiling":
                return any("first_consumed" in x for x in run.child_lines())
            if not probe.arrived:
                return False
            return c.workers == 1 or sum("first_consumed" in x for x in run.child_lines()) >= c.workers

        warm_from = time.monotonic()
        warm = probe.warm_up(ready, timeout=120)
        warm_seconds = time.monotonic() - warm_from
        if warm and c.workers > 1:
            # the last member's assignment ended the rebalance; its first fetches follow
            time.sleep(_SETTLE_S)
        sent = probe.run(sizes.latency_rate, sizes.latency_seconds) if warm and not run.exited() else 0
        clicks = {i for i in range(sent) if event_type(i) == "click"} | probe.ping_ids()
        deadline = time.monotonic() + 60
        while c.name != "ceiling" and time.monotonic() < deadline and not clicks <= probe.arrived.keys():
            run.sample()
            time.sleep(0.05)
        if c.name == "ceiling":
            time.sleep(1.0)
        fin = run.stop(self_exit=False)
        probe.close()
        if c.name == "ceiling":
            consumed = fin.child.get("consumed")
            total = sent + probe.pings
            check = Check(
                consumed == total and fin.child.get("offset_gaps") == 0, f"consumed {consumed} of {total}"
            )
            if not check.ok:
                check = Check(False, "WRONG: " + check.text)
            latency = fin.child.get("latency_ms")
        else:
            check = (
                check_clicks(output, PARTITIONS, clicks)
                if warm
                else Check(False, "WRONG: no output within 120 s")
            )
            timed = [
                (probe.arrived[i] - probe.sent[i]) * 1000
                for i in probe.sent
                if i in probe.arrived and event_type(i) == "click"
            ]
            latency = percentiles(timed)
        row = row_from("latency", c, fin, check)
        row.records = sent
        row.extra["warm_up_seconds"] = round(warm_seconds, 1)
        row.latency_ms = {k: round(v, 1) for k, v in latency.items()} if latency else None
        if row.ok and not latency:
            row.ok, row.verdict = False, row.verdict + "; no latency measured"
        return row
    finally:
        probe.close()
        delete_topics([topic, output], brokers)
        cleanup_group_topics(group, brokers)


def latency(
    contenders: list[Contender], sizes: Sizes, cwd: Path, parallel: int, extra: list[str]
) -> tuple[list[Row], dict]:
    del extra  # the latency runs are not profiled
    return _each(contenders, parallel, lambda c: _latency_one(c, sizes, cwd)), {}


SCENARIO_FUNCS = {
    "stateless": stateless,
    "windowed": windowed,
    "io": io,
    "latency": latency,
    "memory": memory,
    "join": join,
}


def run_scenario(
    name: str,
    contenders: list[Contender],
    sizes: Sizes,
    cwd: Path,
    parallel: int = 1,
    extra: list[str] | None = None,
) -> tuple[list[Row], dict]:
    """Run scenario ``name`` for ``contenders``; returns their rows and facts about the input.

    ``extra``: more arguments for every contender program (e.g. ``--profile PATH``).
    """
    return SCENARIO_FUNCS[name](contenders, sizes, cwd, parallel, extra or [])
