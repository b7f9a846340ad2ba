"""Run one contender on one scenario's input: time it, sample its memory, check its output."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from benchmarks._kafka import BROKERS, OffsetWatch, create_topics, delete_topics, unique_name
from benchmarks.suite._proc import Finished, Running
from benchmarks.suite.checks import Check
from benchmarks.suite.contenders import Contender

__all__ = ["Row", "Target", "cleanup_group_topics", "measure", "percentiles", "row_from"]

WATCH_INTERVAL = 0.02


@dataclass
class Row:
    """One contender's result in one scenario."""

    scenario: str
    contender: str
    label: str
    ok: bool
    verdict: str
    version: str = ""
    records: int = 0
    seconds: float | None = None
    msg_per_s: float | None = None
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    latency_ms: dict | None = None
    exit_code: int = 0
    extra: dict = field(default_factory=dict)
    stderr_tail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """What a run is waiting for and how its output is judged."""

    input_topic: str
    partitions: int
    records: int
    expected_outputs: int
    check: Callable[[str], Check]
    timeout: float
    cap_seconds: float | None = None
    records_arg: int | None = None
    #: stop waiting when the output has not grown for this long (it had some output)
    stall_seconds: float = 45.0


def percentiles(values: list[float]) -> dict | None:
    if len(values) < 2:
        return None
    cuts = statistics.quantiles(values, n=100)
    return {"p50": cuts[49], "p99": cuts[98], "max": max(values), "n": len(values)}


def cleanup_group_topics(group: str, brokers: str = BROKERS) -> None:
    """Delete the internal topics (changelogs, repartitions) a framework made for ``group``."""
    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 4})
    names = [t for t in admin.list_topics(timeout=10).topics if group in t]
    delete_topics(names, brokers)


def row_from(scenario: str, c: Contender, fin: Finished, check: Check) -> Row:
    ok = check.ok and fin.clean_exit
    verdict = check.text + ("" if fin.clean_exit else f"; exit code {fin.exit_code}")
    return Row(
        scenario=scenario,
        contender=c.name,
        label=c.label,
        ok=ok,
        verdict=verdict,
        version=str(fin.child.get("version", "")),
        cpu_seconds=round(fin.cpu_seconds, 2),
        peak_rss_mb=round(fin.peak_rss_mb, 1),
        exit_code=fin.exit_code,
        stderr_tail="" if ok else fin.stderr_tail,
    )


def _ceiling_check(fin: Finished, records: int) -> Check:
    consumed, gaps = fin.child.get("consumed"), fin.child.get("offset_gaps")
    if consumed == records and gaps == 0:
        return Check(True, f"ok (consumed {consumed}, offsets contiguous)")
    return Check(False, f"WRONG: consumed {consumed} of {records}, {gaps} offset gaps")


def measure(
    scenario: str,
    c: Contender,
    t: Target,
    cwd: Path,
    brokers: str = BROKERS,
    extra_args: list[str] | None = None,
) -> Row:
    """Run ``c`` on ``t.input_topic`` until its output holds ``t.expected_outputs`` records.

    Seconds = (output complete, seen by polling the output's end offsets every 20 ms)
    - (the contender's first consumed record, as it reported it on the monotonic
    clock). The ceiling writes no output: its own last consumed record ends its clock.
    With ``cap_seconds`` (scenario memory) the run is stopped that long after its first
    record even if unfinished.
    """
    output = unique_name(f"bench-out-{c.name}")
    group = unique_name(f"bench-{c.name}")
    create_topics([output], t.partitions, brokers)
    common = ["--brokers", brokers, "--input", t.input_topic, "--output", output, "--group", group]
    common += ["--records", str(t.records_arg or t.records), *(extra_args or [])]
    run = Running(
        c.argv(scenario, common), c.cwd or cwd, c.env(scenario, brokers, t.input_topic, output, group)
    )
    watch = OffsetWatch(output, t.partitions, brokers)
    reached: float | None = None
    first: float | None = None
    last_check = 0.0
    seen_outputs, grew = 0, time.monotonic()
    try:
        while time.monotonic() - run.started < t.timeout:
            run.sample()
            now = time.monotonic()
            if now - last_check > 0.5 and (first is None or c.name == "ceiling"):
                last_check = now
                lines = run.child_lines()
                firsts = [x["first_consumed"] for x in lines if "first_consumed" in x]
                first = min(firsts) if firsts else None
                lasts = [x["last_consumed"] for x in lines if "last_consumed" in x]
                if c.name == "ceiling" and lasts:
                    reached = lasts[-1]
                    break
            if c.name != "ceiling":
                outputs = watch.total()
                if outputs >= t.expected_outputs:
                    reached = time.monotonic()
                    break
                if outputs > seen_outputs:
                    seen_outputs, grew = outputs, now
                elif seen_outputs and now - grew > t.stall_seconds:
                    break
            if run.exited():
                break
            if t.cap_seconds is not None and first is not None and now - first > t.cap_seconds:
                break
            time.sleep(WATCH_INTERVAL)
        fin = run.stop(self_exit=c.self_exit and reached is not None)
        if c.name == "ceiling" and reached is None and "last_consumed" in fin.child:
            reached = fin.child["last_consumed"]
        check = _ceiling_check(fin, t.records) if c.name == "ceiling" else t.check(output)
        if t.cap_seconds is not None and c.name == "ceiling" and reached is None:
            check = Check(
                fin.child.get("offset_gaps") == 0,
                f"consumed {fin.child.get('consumed')} (stopped at the cap)",
            )
        row = row_from(scenario, c, fin, check)
        if reached is None and t.cap_seconds is None and not row.ok:
            waited = time.monotonic() - run.started
            row.verdict = f"unfinished after {waited:.0f} s ({'timeout' if waited >= t.timeout else 'output stalled'}): {row.verdict}"
        first = fin.first_consumed or first
        row.records = t.records
        if reached is not None and first is not None and reached > first:
            row.seconds = round(reached - first, 3)
            row.msg_per_s = round(t.records / (reached - first), 1)
        elif row.ok and t.cap_seconds is None:
            row.ok, row.verdict = False, row.verdict + "; no timing (first record or end not seen)"
        row.extra["wall_seconds"] = round(time.monotonic() - run.started, 1)
        row.extra["completed"] = reached is not None
        return row
    finally:
        delete_topics([output], brokers)
        cleanup_group_topics(group, brokers)
