"""Scenario "stateless": filter + map + to over JSON records, sluice against two hand-written loops.

The input topic holds ``--records`` JSON events of about 200 bytes on 4 partitions
(30% are clicks). Each contender, in its own process and consumer group, keeps the
clicks, maps them to ``{"id", "page", "user"}`` and writes them to its own output
topic, which is then read back and checked: exactly one record per click id.

Contenders:
    sluice       the public API: ``app.stream(...).filter(...).map(...).to(...)``
    hand         a careful confluent-kafka loop (batch consume, orjson, at-least-once commits)
    kafka-python the seed article's ``for message in consumer:`` loop (json, auto-commit)
    sluice-map-batch  the same pipeline as one ``map_batch`` (polars, columnar NDJSON in and out)
    hand-polars  the hand loop done columnar with polars: a floor for map_batch's machinery
    floor        the transport alone: consume every record, then produce pre-built outputs

``--pipeline heavy`` replaces the events and the filter + map with orders and real
per-record work (``benchmarks._heavy``: ten numeric expressions, two string
normalizations, a conditional; about 3 in 4 orders go out): ``clean`` per record for
sluice and the hand loop, ``clean_frame`` (polars) for map_batch and hand-polars, and
every output record is compared with ``clean`` of its input.

Throughput = input records / (time the output topic's end offsets reach the expected
count - time the contender consumed its first record): group join and process start
are excluded, identically for all. Peak RSS is the contender process's ``VmHWM``.

Usage:
    python -m benchmarks.stateless --records 1000000
    python -m benchmarks.stateless --records 20000 --no-save     # smoke: exits 1 on wrong output
    python -m benchmarks.stateless --pipeline heavy --records 300000 --rounds 3 \
        --contenders sluice,hand,sluice-map-batch,hand-polars --no-save
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks._harness import ROOT, Contender, Result, run_contender, snapshot
from benchmarks._heavy import expected_ids as heavy_ids
from benchmarks._heavy import make_order, verify_heavy
from benchmarks._kafka import (
    create_topics,
    delete_topics,
    expected_click_ids,
    make_event,
    produce_events,
    unique_name,
)

PARTITIONS = 4
CONTENDERS = {
    "sluice": Contender("sluice", "benchmarks.contenders.sluice_pipeline", "sluice (filter+map+to)"),
    "hand": Contender("hand", "benchmarks.contenders.hand_loop", "hand-written confluent-kafka loop"),
    "sluice-map-batch": Contender(
        "sluice-map-batch", "benchmarks.contenders.sluice_map_batch", "sluice map_batch (polars, columnar)"
    ),
    "hand-polars": Contender(
        "hand-polars", "benchmarks.contenders.hand_polars_loop", "hand-written columnar (polars) loop"
    ),
    "floor": Contender(
        "floor", "benchmarks.contenders.transport_floor", "consume all, then produce the outputs, no JSON"
    ),
    "kafka-python": Contender(
        "kafka-python", "benchmarks.contenders.kafka_python_loop", "seed article kafka-python loop"
    ),
}
GOALS = {
    "sluice/hand": 0.8,
    "sluice/kafka-python": 10.0,
    "sluice peak RSS MB": 300.0,
    "sluice-map-batch/sluice": 1.0,
}
#: ``--pipeline heavy``: where the per-record work dominates, columnar must pay off
HEAVY_GOALS = {"sluice-map-batch/sluice": 3.0, "sluice-map-batch/hand": 1.5}
#: contenders whose program has only the light pipeline
LIGHT_ONLY = ("floor", "kafka-python")
RESULTS = ROOT / "benchmarks" / "results"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _kafka_version() -> str:
    pom = (ROOT / "tools" / "kafka" / "pom.xml").read_text()
    start = pom.find("<kafka.version>") + len("<kafka.version>")
    return pom[start : pom.find("</kafka.version>")]


def machine_facts() -> dict:
    import confluent_kafka

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": _kafka_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka_python": _version("kafka-python"),
        "orjson": _version("orjson"),
        "sluice": _version("sluice-streams"),
    }


def _best(results: list[Result], name: str) -> Result | None:
    mine = [r for r in results if r.contender == name and r.msg_per_s]
    return max(mine, key=lambda r: r.msg_per_s) if mine else None


def _loops(rs: list[Result]) -> list[float]:
    return [x for x in map(loop_cpu, rs) if x is not None]


def _per_record(rs: list[Result]) -> list[float]:
    """Loop CPU microseconds per record counted by the clock (``records_before_clock`` left out)."""
    out = []
    for r in rs:
        loop = loop_cpu(r)
        if loop is not None:
            out.append(loop / (r.records - r.child.get("records_before_clock", 0)) * 1e6)
    return out


def summarize(results: list[Result], names: list[str], goals: dict[str, float] = GOALS) -> dict:
    best = {n: _best(results, n) for n in names}
    summary: dict = {"contenders": {}, "ratios": {}, "goals": {}}
    for n in names:
        rs = [r for r in results if r.contender == n]
        rates = [r.msg_per_s for r in rs if r.msg_per_s]
        summary["contenders"][n] = {
            "best_msg_per_s": round(best[n].msg_per_s) if best[n] else None,
            "median_msg_per_s": round(statistics.median(rates)) if rates else None,
            "all_msg_per_s": [round(x) for x in rates],
            "median_cpu_seconds": round(statistics.median(r.cpu_seconds for r in rs), 1) if rs else None,
            "peak_rss_mb": round(max(r.peak_rss_mb for r in rs), 1) if rs else None,
            "median_loop_cpu_seconds": round(statistics.median(loops), 2) if (loops := _loops(rs)) else None,
            "median_loop_cpu_us_per_record": round(statistics.median(per), 3)
            if (per := _per_record(rs))
            else None,
            "all_ok": all(r.ok for r in rs),
        }
        for phase in ("consume_only_msg_per_s", "produce_only_msg_per_s"):
            seen = [r.child[phase] for r in rs if phase in r.child]
            if seen:
                summary["contenders"][n][phase] = max(seen)
    summary["ratios_of_medians"] = {}
    pairs = (
        ("sluice", ("hand", "kafka-python")),
        ("sluice-map-batch", ("sluice", "hand", "hand-polars", "floor")),
        ("hand-polars", ("sluice", "hand")),
        ("hand", ("floor",)),
    )
    for mine, others in pairs:
        for other in others:
            m, o = best.get(mine), best.get(other)
            if m and o:
                summary["ratios"][f"{mine}/{other}"] = round(m.msg_per_s / o.msg_per_s, 3)
                mm, mo = (summary["contenders"][n]["median_msg_per_s"] for n in (mine, other))
                summary["ratios_of_medians"][f"{mine}/{other}"] = round(mm / mo, 3)
                cm, co = (summary["contenders"][n]["median_loop_cpu_us_per_record"] for n in (mine, other))
                if cm and co:
                    summary.setdefault("loop_cpu_ratios", {})[f"{mine}/{other}"] = round(co / cm, 3)
    for goal, bound in goals.items():
        if goal in summary["ratios"]:
            value = summary["ratios"][goal]
            median = summary["ratios_of_medians"][goal]
            summary["goals"][goal] = {
                "goal": f">= {bound}",
                "value": value,
                "met": value >= bound,
                "median": median,
                "median_met": median >= bound,
            }
        elif goal == "sluice peak RSS MB" and "sluice" in summary["contenders"]:
            value = summary["contenders"]["sluice"]["peak_rss_mb"]
            summary["goals"][goal] = {"goal": f"<= {bound}", "value": value, "met": value <= bound}
    return summary


def loop_cpu(r: Result) -> float | None:
    """CPU seconds of the contender's process from its first consumed record to its end (all its threads)."""
    first, finish = r.child.get("cpu_at_first"), r.child.get("cpu_at_finish")
    return finish - first if first is not None and finish is not None else None


def table(results: list[Result]) -> str:
    lines = [
        "| round | contender | msg/s | seconds | wall s (incl. start, join) | CPU s (user+sys) "
        "| loop CPU s | peak RSS MB | output |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(results):
        rate = f"{r.msg_per_s:,.0f}" if r.msg_per_s else "-"
        secs = f"{r.seconds:.2f}" if r.seconds else "-"
        loop = loop_cpu(r)
        lines.append(
            f"| {r.child.get('round', i)} | {r.contender} | {rate} | {secs} | {r.wall_seconds:.1f} "
            f"| {r.cpu_seconds:.1f} | {'-' if loop is None else f'{loop:.2f}'} | {r.peak_rss_mb:.0f} | {r.verdict} |"
        )
    return "\n".join(lines)


def goals_text(summary: dict) -> str:
    lines = []
    for n, c in summary["contenders"].items():
        lines.append(
            f"- {n}: best {c['best_msg_per_s']:,} msg/s (median {c['median_msg_per_s']:,}), "
            f"CPU {c['median_cpu_seconds']} s (median; loop {c['median_loop_cpu_seconds']} s, "
            f"{c['median_loop_cpu_us_per_record']} us/record), "
            f"peak RSS {c['peak_rss_mb']} MB"
            if c["best_msg_per_s"]
            else f"- {n}: no valid measurement"
        )
    for n, c in summary["contenders"].items():
        if "consume_only_msg_per_s" in c:
            lines.append(
                f"- {n} phases: consume only {c['consume_only_msg_per_s']:,} msg/s, "
                f"produce only {c['produce_only_msg_per_s']:,} msg/s (best of each)"
            )
    for name, value in summary["ratios"].items():
        median = summary["ratios_of_medians"][name]
        cpu = summary.get("loop_cpu_ratios", {}).get(name)
        by_cpu = f"; {cpu:.2f}x by loop CPU per record, medians" if cpu else ""
        lines.append(f"- {name}: {value:.2f}x (best of each; {median:.2f}x of the medians{by_cpu})")
    for name, g in summary["goals"].items():
        line = f"- goal {name} {g['goal']}: {g['value']} -> {'MET' if g['met'] else 'NOT MET'}"
        if "median" in g:
            line += f" (best of each); medians {g['median']} -> {'MET' if g['median_met'] else 'NOT MET'}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each contender (order rotates)")
    parser.add_argument(
        "--contenders",
        default="sluice,hand,kafka-python,sluice-map-batch",
        help="comma-separated subset of: " + ", ".join(CONTENDERS),
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per contender run")
    parser.add_argument("--profile", action="store_true", help="then profile sluice with pyinstrument")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument(
        "--pipeline",
        choices=("light", "heavy"),
        default="light",
        help="light: filter + map of events; heavy: real per-record work (benchmarks._heavy)",
    )
    parser.add_argument(
        "--sluice-ref",
        help="measure sluice/ as of this git commit (default: the working tree, copied at start)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {unknown}; choose from {list(CONTENDERS)}")
    heavy = args.pipeline == "heavy"
    if heavy and set(names) & set(LIGHT_ONLY):
        parser.error(f"--pipeline heavy: {sorted(set(names) & set(LIGHT_ONLY))} run only the light pipeline")
    timeout = args.timeout or max(120.0, args.records / 2_000)
    command = "python -m benchmarks.stateless " + shlex.join(sys.argv[1:] if argv is None else argv)
    facts = machine_facts()
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    facts["sluice_code"] = snapshot(workdir, args.sluice_ref)
    print(
        f"stateless ({args.pipeline}): {args.records:,} records, {PARTITIONS} partitions, "
        f"{args.rounds} round(s); {command}"
    )
    print(
        f"machine: {facts['nproc']} cpus ({facts['cpu']}), Python {facts['python']}, Kafka {facts['kafka']}"
    )
    print(f"sluice: {facts['sluice_code']}")

    input_topic = unique_name("bench-in")
    outputs: list[str] = []
    create_topics([input_topic], PARTITIONS)
    try:
        seconds = produce_events(input_topic, args.records, make=make_order if heavy else make_event)
        print(f"input: {input_topic} written in {seconds:.1f}s ({args.records / seconds:,.0f} msg/s)")
        expected_ids = heavy_ids(args.records) if heavy else expected_click_ids(args.records)
        checks = {"verify": verify_heavy, "extra_args": ["--pipeline", "heavy"]} if heavy else {}
        results: list[Result] = []
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in order:
                output = unique_name(f"bench-out-{name}")
                outputs.append(output)
                create_topics([output], PARTITIONS)
                r = run_contender(
                    CONTENDERS[name],
                    input_topic,
                    output,
                    PARTITIONS,
                    args.records,
                    expected_ids,
                    timeout,
                    cwd=workdir,
                    **checks,
                )
                r.child["round"] = rnd + 1
                results.append(r)
                rate = f"{r.msg_per_s:,.0f} msg/s" if r.msg_per_s else "no rate"
                print(f"  round {rnd + 1} {name:>12}: {rate}, peak RSS {r.peak_rss_mb:.0f} MB, {r.verdict}")
                if "consume_only_msg_per_s" in r.child:
                    print(
                        f"    {'':>12}  consume only {r.child['consume_only_msg_per_s']:,} msg/s, "
                        f"produce only {r.child['produce_only_msg_per_s']:,} msg/s"
                    )
                if not r.ok and r.stderr_tail:
                    print("    stderr:\n" + "\n".join("      " + line for line in r.stderr_tail.splitlines()))
        profile_path = None
        if args.profile:
            profile_path = RESULTS / "stateless-profile.txt"
            RESULTS.mkdir(parents=True, exist_ok=True)
            output = unique_name("bench-out-profile")
            outputs.append(output)
            create_topics([output], PARTITIONS)
            p = run_contender(
                CONTENDERS["sluice"],
                input_topic,
                output,
                PARTITIONS,
                args.records,
                expected_ids,
                timeout,
                profile=str(profile_path),
                cwd=workdir,
                **checks,
            )
            rate = f"{p.msg_per_s:,.0f} msg/s" if p.msg_per_s else "no rate"
            print(
                f"  profiled sluice run: {rate} (under pyinstrument), {p.verdict}; profile in {profile_path}"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.keep_topics:
            delete_topics([input_topic, *outputs])

    summary = summarize(results, names, HEAVY_GOALS if heavy else GOALS)
    print()
    print(table(results))
    print()
    print(goals_text(summary))
    if args.records < 500_000:
        print("(on a run this small, start-up effects dominate the rates: the goals are for 1M records)")
    if not args.no_save and heavy:
        print("(--pipeline heavy is not saved: run it with --no-save and keep the printed table)")
    elif not args.no_save:
        save(command, facts, args, results, summary)
    return 0 if all(r.ok for r in results) else 1


def save(command: str, facts: dict, args: argparse.Namespace, results: list[Result], summary: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    data = {
        "scenario": "stateless",
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "records": args.records,
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "method": (
            "msg/s = input records / (output end offsets reach the expected count - first record consumed); "
            "each contender in its own process and consumer group; peak RSS = VmHWM of that process"
        ),
        "machine": facts,
        "summary": summary,
        "runs": [r.as_dict() for r in results],
    }
    json_path = RESULTS / f"stateless-{stamp}.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md = (
        f"""# Benchmark "stateless" — {stamp}

`{command}`

{args.records:,} JSON records (~210 bytes, 30% clicks) on {PARTITIONS} partitions;
filter(type == "click") + map(id, page, user) + to(output topic). Each contender runs in
its own process and consumer group; its output topic is read back and checked
(exactly one record per click id).

- **sluice**: `app.stream(topic, value="json").filter(...).map(...).to(out)` (`benchmarks/contenders/sluice_pipeline.py`).
- **hand**: a careful confluent-kafka loop: `consume(num_messages=1000)`, orjson, `produce`
  + one `poll(0)` per batch, delivery callbacks checked, at-least-once async commits every
  second; same librdkafka settings as sluice (idempotent producer, `linger.ms=5`)
  (`benchmarks/contenders/hand_loop.py`).
- **kafka-python**: the seed article's loop: `for message in consumer:`, `value_deserializer`
  with `json.loads`, `KafkaProducer.send` with a `json.dumps` serializer, auto-commit
  (`benchmarks/contenders/kafka_python_loop.py`).

sluice code measured: {facts["sluice_code"]}.

msg/s = input records / (time the output topic's end offsets reach the expected count
minus time the contender consumed its first record). Group join and process start are
excluded, identically for all. CPU s = user + system CPU time of the contender's whole
process (start, join and shutdown included). Peak RSS = `VmHWM` of the contender's process.
Best of {args.rounds} round(s) per contender.

## Results

{table(results)}

{goals_text(summary)}

## Machine

| | |
|---|---|
"""
        + "\n".join(f"| {k} | {v} |" for k, v in facts.items())
        + "\n"
    )
    (RESULTS / f"stateless-{stamp}.md").write_text(md)
    print(f"\nwrote {json_path.relative_to(ROOT)} and {json_path.with_suffix('.md').relative_to(ROOT)}")


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"(benchmark took {time.monotonic() - started:.0f}s)")
    sys.exit(code)
