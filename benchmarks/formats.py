"""Avro (Schema Registry) against JSON: the stateless pipeline and the serde alone, on the same records.

Two input topics hold the same ``--records`` events (``benchmarks._kafka.make_event``):
one as JSON, one as Avro in the Schema Registry wire format (written by confluent-kafka's
``AvroSerializer``). Measured in one run:

- **pipeline**: the stateless scenario (filter clicks, map to ``{id, page, user}``, to an
  output topic) by sluice over JSON (``benchmarks.contenders.sluice_pipeline``) and over
  Avro (``benchmarks.contenders.sluice_avro``: ``value="avro"`` in and out), each in its
  own process, timed and checked like ``benchmarks.stateless``;
- **serde**: sluice's own deserializer and serializer functions for each format called
  on the same records in this process (decode every input record, encode every output).

The registry is the project's (``tools/registry``), started if not running, or ``--registry``.

Usage:
    python -m benchmarks.formats --records 200000
    python -m benchmarks.formats --records 20000 --rounds 1 --no-save     # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import io
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks._harness import ROOT, Contender, Result, run_contender, snapshot
from benchmarks._kafka import (
    BROKERS,
    Verdict,
    create_topics,
    delete_topics,
    expected_click_ids,
    input_producer,
    make_event,
    produce_events,
    read_topic,
    unique_name,
    verify_output,
)
from benchmarks.contenders.sluice_avro import CLICK_SCHEMA
from benchmarks.stateless import machine_facts

PARTITIONS = 4
SERDE_REPEATS = 5
RESULTS = ROOT / "benchmarks" / "results"
CONTENDERS = {
    "json": Contender("sluice-json", "benchmarks.contenders.sluice_pipeline", "sluice, value='json'"),
    "avro": Contender("sluice-avro", "benchmarks.contenders.sluice_avro", "sluice, value='avro'"),
}
EVENT_SCHEMA = {
    "type": "record",
    "name": "Event",
    "namespace": "sluice.bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "type", "type": "string"},
        {"name": "page", "type": "string"},
        {"name": "user", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "session", "type": "string"},
        {"name": "ua", "type": "string"},
        {"name": "ref", "type": "string"},
        {"name": "country", "type": "string"},
    ],
}


def _registryctl():
    spec = importlib.util.spec_from_file_location(
        "registryctl", ROOT / "tools" / "registry" / "registryctl.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def produce_avro_events(topic: str, records: int, url: str) -> tuple[float, int]:
    """The events of ``produce_events`` as Avro (Confluent wire format); return (seconds, total value bytes)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serialize = AvroSerializer(SchemaRegistryClient({"url": url}), orjson.dumps(EVENT_SCHEMA).decode())
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = input_producer()
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))

    size = 0
    t0 = time.monotonic()
    for i in range(records):
        event = make_event(i)
        value = serialize(event, ctx)
        size += len(value)
        while True:
            try:
                producer.produce(topic, value, event["user"].encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or errors:
        msg = f"producing the Avro input failed: {remaining} not delivered, errors {errors[:3]}"
        raise RuntimeError(msg)
    return time.monotonic() - t0, size


def verify_avro(topic: str, partitions: int, expected_ids: set[int], brokers: str = BROKERS) -> Verdict:
    """``verify_output`` for Avro outputs: wire-format header, then the Click record."""
    import fastavro

    parsed = fastavro.parse_schema(CLICK_SCHEMA)
    seen: set[int] = set()
    count = duplicates = malformed = 0
    for msg in read_topic(topic, partitions, brokers):
        count += 1
        data = msg.value()
        try:
            if data[:1] != b"\x00":
                raise ValueError("no magic byte")
            value = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed)
            ident = value["id"]
            if not value["page"].startswith("/products/"):
                malformed += 1
        except (ValueError, KeyError, TypeError, EOFError, IndexError):
            malformed += 1
            continue
        if ident in seen:
            duplicates += 1
        else:
            seen.add(ident)
    return Verdict(
        records=count,
        expected=len(expected_ids),
        unique_ids=len(seen),
        duplicates=duplicates,
        missing=len(expected_ids - seen),
        unexpected=len(seen - expected_ids),
        malformed=malformed,
    )


def serde_rates(input_topics: dict[str, str], records: int, url: str) -> dict[str, dict[str, float]]:
    """Records per second of sluice's deserializer (every input) and serializer (every click output)."""
    from sluice.serde import deserializer, serializer
    from sluice.serde.registry import RegistryFormat, registry_settings

    settings = registry_settings({"url": url})
    raw = {fmt: [m.value() for m in read_topic(topic, PARTITIONS)] for fmt, topic in input_topics.items()}
    out_topic = unique_name("bench-serde")
    readers = {
        "json": deserializer("json"),
        "avro": RegistryFormat("avro", input_topics["avro"], "value", settings).deserializer(),
    }
    writers = {
        "json": serializer("json"),
        "avro": RegistryFormat("avro", out_topic, "value", settings, CLICK_SCHEMA).serializer(),
    }
    # confluent-kafka's own serializers called per record: what sluice's Avro fast path saves
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = SchemaRegistryClient({"url": url})
    in_ctx = SerializationContext(input_topics["avro"], MessageField.VALUE)
    out_ctx = SerializationContext(out_topic, MessageField.VALUE)
    plain_reader = AvroDeserializer(client, conf={"subject.name.strategy.type": "TOPIC"})
    plain_writer = AvroSerializer(
        client, orjson.dumps(CLICK_SCHEMA).decode(), conf={"subject.name.strategy.type": "TOPIC"}
    )
    readers["avro-confluent"] = lambda v: plain_reader(v, in_ctx)
    writers["avro-confluent"] = lambda v: plain_writer(v, out_ctx)
    raw["avro-confluent"] = raw["avro"]
    rates: dict[str, dict[str, float]] = {}
    for fmt in ("json", "avro", "avro-confluent"):
        decode, encode = readers[fmt], writers[fmt]
        decode(raw[fmt][0])  # the first call fetches the schema: not part of the per-record cost
        values = [decode(v) for v in raw[fmt]]
        clicks = [
            {"id": e["id"], "page": e["page"], "user": e["user"]} for e in values if e["type"] == "click"
        ]
        encode(clicks[0])
        decode_s = encode_s = float("inf")
        # CPU time, best of several: on a shared machine wall time measures the neighbours too
        for _ in range(SERDE_REPEATS):
            t0 = time.process_time()
            for v in raw[fmt]:
                decode(v)
            decode_s = min(decode_s, time.process_time() - t0)
            t0 = time.process_time()
            for c in clicks:
                encode(c)
            encode_s = min(encode_s, time.process_time() - t0)
        rates[fmt] = {
            "decode_per_s": len(values) / decode_s,
            "encode_per_s": len(clicks) / encode_s,
            "bytes_per_record": sum(map(len, raw[fmt])) / len(raw[fmt]),
        }
    assert len(raw["json"]) == len(raw["avro"]) == records, "both inputs hold every record"
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each format (order alternates)")
    parser.add_argument("--registry", help="a Confluent-compatible registry URL (default: tools/registry's)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per contender run")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.formats " + shlex.join(sys.argv[1:] if argv is None else argv)
    timeout = args.timeout or max(120.0, args.records / 1_000)
    url = args.registry or _registryctl().up()
    # the Avro contender reads its registry from sluice's environment variable
    os.environ["SLUICE_SCHEMA_REGISTRY_URL"] = url
    facts = machine_facts()
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    facts["sluice_code"] = snapshot(workdir, None)
    print(f"formats: {args.records:,} records, {PARTITIONS} partitions, {args.rounds} round(s); {command}")
    print(f"registry: {url}; sluice: {facts['sluice_code']}")

    inputs = {"json": unique_name("bench-in-json"), "avro": unique_name("bench-in-avro")}
    outputs: list[str] = []
    create_topics(inputs.values(), PARTITIONS)
    results: list[Result] = []
    try:
        seconds = produce_events(inputs["json"], args.records)
        print(f"input json: {inputs['json']} written in {seconds:.1f}s")
        seconds, _size = produce_avro_events(inputs["avro"], args.records, url)
        print(f"input avro: {inputs['avro']} written in {seconds:.1f}s")
        expected_ids = expected_click_ids(args.records)
        for rnd in range(args.rounds):
            order = ["json", "avro"] if rnd % 2 == 0 else ["avro", "json"]
            for fmt in order:
                output = unique_name(f"bench-out-{fmt}")
                outputs.append(output)
                create_topics([output], PARTITIONS)
                r = run_contender(
                    CONTENDERS[fmt],
                    inputs[fmt],
                    output,
                    PARTITIONS,
                    args.records,
                    expected_ids,
                    timeout,
                    cwd=workdir,
                    verify=verify_avro if fmt == "avro" else verify_output,
                )
                r.child["round"] = rnd + 1
                results.append(r)
                rate = f"{r.msg_per_s:,.0f} msg/s" if r.msg_per_s else "no rate"
                print(f"  round {rnd + 1} {fmt:>4}: {rate}, CPU {r.cpu_seconds:.1f} s, {r.verdict}")
                if not r.ok and r.stderr_tail:
                    print("    stderr:\n" + "\n".join("      " + line for line in r.stderr_tail.splitlines()))
        serde = serde_rates(inputs, args.records, url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        delete_topics([*inputs.values(), *outputs])

    text = report(results, serde, args.records)
    print()
    print(text)
    if not args.no_save:
        save(command, facts, args, text)
    return 0 if all(r.ok for r in results) else 1


def report(results: list[Result], serde: dict[str, dict[str, float]], records: int) -> str:
    lines = [
        "| round | format | msg/s | seconds | CPU s (user+sys) | peak RSS MB | output |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rate = f"{r.msg_per_s:,.0f}" if r.msg_per_s else "-"
        secs = f"{r.seconds:.2f}" if r.seconds else "-"
        lines.append(
            f"| {r.child.get('round')} | {r.contender} | {rate} | {secs} | {r.cpu_seconds:.1f} "
            f"| {r.peak_rss_mb:.0f} | {r.verdict} |"
        )
    best = {}
    median = {}
    cpu = {}
    for name in ("sluice-json", "sluice-avro"):
        rates = [r.msg_per_s for r in results if r.contender == name and r.msg_per_s and r.ok]
        best[name] = max(rates) if rates else None
        median[name] = statistics.median(rates) if rates else None
        cpu[name] = min((r.cpu_seconds for r in results if r.contender == name and r.ok), default=None)
    lines.append("")
    if best["sluice-json"] and best["sluice-avro"]:
        lines.append(
            f"- pipeline: Avro {best['sluice-avro']:,.0f} msg/s vs JSON {best['sluice-json']:,.0f} msg/s "
            f"(best of each): **{best['sluice-avro'] / best['sluice-json']:.2f}x** "
            f"({median['sluice-avro'] / median['sluice-json']:.2f}x of the medians); CPU seconds of the "
            f"whole process (start and group join included), least of each: Avro {cpu['sluice-avro']:.1f} s, "
            f"JSON {cpu['sluice-json']:.1f} s"
        )
    lines += [
        "",
        "| serde (this process) | JSON (sluice: orjson) | Avro (sluice) | Avro/JSON "
        "| Avro (confluent-kafka's serializers per record) |",
        "|---|---:|---:|---:|---:|",
    ]
    for what, key in (("decode, records/s", "decode_per_s"), ("encode, records/s", "encode_per_s")):
        j, a, c = serde["json"][key], serde["avro"][key], serde["avro-confluent"][key]
        lines.append(f"| {what} | {j:,.0f} | {a:,.0f} | {a / j:.2f}x | {c:,.0f} |")
    j, a = serde["json"]["bytes_per_record"], serde["avro"]["bytes_per_record"]
    lines.append(f"| input value size, bytes | {j:.0f} | {a:.0f} | {a / j:.2f}x | {a:.0f} |")
    lines.append(
        f"\n({records:,} records; serde decode = every input record, encode = every click output, "
        f"records per CPU second, best of {SERDE_REPEATS})"
    )
    return "\n".join(lines)


def _load_note(facts: dict) -> str:
    load, cpus = facts["load_average_at_start"][0], facts["nproc"]
    if load <= cpus:
        return ""
    return (
        f"\nThe machine was shared (load average {load} on {cpus} CPUs at the start): wall-clock rates vary "
        f"between rounds with the neighbours' load; the CPU seconds and the serde table (CPU time) are steadier.\n"
    )


def save(command: str, facts: dict, args: argparse.Namespace, text: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    md = (
        f"""# Benchmark "formats": Avro (Schema Registry) vs JSON — {stamp}

`{command}`

The stateless scenario (filter clicks, map to `{{id, page, user}}`, to an output topic) over the
same {args.records:,} events on {PARTITIONS} partitions, once as JSON
(`app.stream(t, value="json")`, `benchmarks/contenders/sluice_pipeline.py`) and once as Avro in
the Schema Registry wire format (`app.stream(t, value="avro")` and
`.to(out, value="avro", schema=CLICK_SCHEMA)`, `benchmarks/contenders/sluice_avro.py`), each in
its own process, timed and checked as in `benchmarks/stateless.py` (msg/s = input records /
(output end offsets reach the expected count - first record consumed)). The serde table calls
sluice's deserializer and serializer functions on the same records in one process. Registry:
the project's Apicurio Registry (`make registry-up`) on loopback; schemas are fetched once per id.
sluice code measured: {facts["sluice_code"]}.

## Results

{text}
{_load_note(facts)}
## Machine

| | |
|---|---|
"""
        + "\n".join(f"| {k} | {v} |" for k, v in facts.items())
        + "\n"
    )
    path = RESULTS / f"formats-{stamp}.md"
    path.write_text(md)
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"(benchmark took {time.monotonic() - started:.0f}s)")
    sys.exit(code)
