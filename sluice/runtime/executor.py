"""Runs one consumed batch through the dataflow graph, batch-at-a-time.

The graph is compiled once into ``_Node`` objects. A batch of Kafka messages is
deserialized into records ``(value, key, message)`` and each step maps the whole
list to a new list. When a step raises for the batch, it is re-run record by record
to isolate the failing records, which go to the failure handler; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.dataflow import Source, Step, Stream, To
from sluice.dataflow.steps import Failure, Record
from sluice.runtime.tracker import Batch
from sluice.serde import deserializer, key_serializer, serializer

__all__ = ["Executor", "FailureHandler"]

#: ``handler(stage, step_name, failures)``; stage is deserialize | process | produce | sink.
FailureHandler = Callable[[str, str, list[Failure]], None]
Produce = Callable[..., None]


@dataclass
class _Node:
    step: Step
    children: list[_Node] = field(default_factory=list)
    emit: Callable[[list[Record], Batch], None] | None = None


class _Emitter:
    """Produces the records reaching a ``To`` step, each acknowledged against its batch."""

    def __init__(
        self,
        step: To,
        source: Source,
        produce: Produce,
        poll: Callable[[float], Any],
        on_failures: FailureHandler,
    ):
        self.topic = step.topic
        value_spec = (
            step.value
            if step.value is not None
            else (source.value if isinstance(source.value, str) else "json")
        )
        self.serialize = serializer(value_spec)
        if step.keyed:
            self.key_serialize: Callable[[Any], Any] | None = key_serializer
        else:
            self.key_serialize = None if source.key == "bytes" else serializer(source.key, "key")
        self.step_name = step.name
        self._produce = produce
        self._poll = poll
        self._on_failures = on_failures

    def __call__(self, records: list[Record], batch: Batch) -> None:
        topic, produce, ser, kser = self.topic, self._produce, self.serialize, self.key_serialize
        callback = batch.on_delivery
        failures: list[Failure] = []
        batch.expect(len(records))
        for record in records:
            value, key, msg = record
            try:
                ts = msg.timestamp()[1]
                produce(
                    topic,
                    ser(value),
                    key if kser is None else kser(key),
                    timestamp=ts if ts > 0 else 0,
                    headers=msg.headers(),
                    on_delivery=callback,
                )
            except BufferError:
                self._produce_when_room(record, batch)
            except Exception as exc:  # noqa: BLE001 - serialization or produce refused: a failed record
                batch.pending -= 1
                failures.append((record, exc))
        if failures:
            self._on_failures("produce", self.step_name, failures)

    def _produce_when_room(self, record: Record, batch: Batch) -> None:
        """The producer queue is full: serve delivery reports until it has room."""
        value, key, msg = record
        ts = msg.timestamp()[1]
        while True:
            self._poll(0.05)
            try:
                self._produce(
                    self.topic,
                    self.serialize(value),
                    key if self.key_serialize is None else self.key_serialize(key),
                    timestamp=ts if ts > 0 else 0,
                    headers=msg.headers(),
                    on_delivery=batch.on_delivery,
                )
                return
            except BufferError:
                continue


class _TopicPlan:
    """Deserialization and the graph below one source."""

    def __init__(self, source: Source, nodes: list[_Node], on_failures: FailureHandler):
        self.source = source
        self.nodes = nodes
        self.value_deser = deserializer(source.value)
        self.key_deser = None if source.key == "bytes" else deserializer(source.key, "key")
        self.json_fast_path = source.value == "json"
        self._on_failures = on_failures

    def records(self, msgs: list[Any]) -> list[Record]:
        try:
            if self.json_fast_path and self.key_deser is None:
                loads = orjson.loads
                return [(None if (v := m.value()) is None else loads(v), m.key(), m) for m in msgs]
            deser, kdeser = self.value_deser, self.key_deser
            if kdeser is None:
                return [(deser(m.value()), m.key(), m) for m in msgs]
            return [(deser(m.value()), kdeser(m.key()), m) for m in msgs]
        except Exception:  # noqa: BLE001 - isolate the records that cannot be deserialized
            return self._records_one_by_one(msgs)

    def _records_one_by_one(self, msgs: list[Any]) -> list[Record]:
        out: list[Record] = []
        failures: list[Failure] = []
        deser, kdeser = self.value_deser, self.key_deser
        for m in msgs:
            try:
                out.append((deser(m.value()), m.key() if kdeser is None else kdeser(m.key()), m))
            except Exception as exc:  # noqa: BLE001 - handed to the failure policy
                failures.append(((m.value(), m.key(), m), exc))
        if failures:
            self._on_failures(
                "deserialize",
                f"deserialize({self.source.value if isinstance(self.source.value, str) else 'custom'})",
                failures,
            )
        return out


class Executor:
    """The compiled graph of every source; ``run`` processes one consumed batch."""

    def __init__(
        self,
        sources: list[Source],
        produce: Produce,
        poll: Callable[[float], Any],
        on_failures: FailureHandler,
    ):
        self._on_failures = on_failures
        self._plans: dict[str, _TopicPlan] = {}
        self.emitters: list[_Emitter] = []
        for source in sources:
            nodes = [self._compile(child, source, produce, poll) for child in source.root.children]
            plan = _TopicPlan(source, nodes, on_failures)
            for topic in source.topics:
                self._plans[topic] = plan
        self._single = next(iter(self._plans.values())) if len(self._plans) == 1 else None

    def _compile(
        self, stream: Stream, source: Source, produce: Produce, poll: Callable[[float], Any]
    ) -> _Node:
        step = stream.step
        assert step is not None
        node = _Node(step)
        if isinstance(step, To):
            emitter = _Emitter(step, source, produce, poll, self._on_failures)
            self.emitters.append(emitter)
            node.emit = emitter
        node.children = [self._compile(child, source, produce, poll) for child in stream.children]
        return node

    def run(self, msgs: list[Any], batch: Batch) -> None:
        """Process ``msgs`` (error-free Kafka messages); outputs are acknowledged against ``batch``."""
        if self._single is not None:
            plan = self._single
            self._run_nodes(plan.nodes, plan.records(msgs), batch)
            return
        by_topic: dict[str, list[Any]] = {}
        for m in msgs:
            topic = m.topic()
            group = by_topic.get(topic)
            if group is None:
                group = by_topic[topic] = []
            group.append(m)
        for topic, group in by_topic.items():
            plan = self._plans[topic]
            self._run_nodes(plan.nodes, plan.records(group), batch)

    def _run_nodes(self, nodes: list[_Node], records: list[Record], batch: Batch) -> None:
        for node in nodes:
            if not records:
                return
            if node.emit is not None:
                node.emit(records, batch)
                out = records
            else:
                try:
                    out = node.step.apply(records)
                except Exception:  # noqa: BLE001 - isolate the failing records
                    out, failures = node.step.apply_each(records)
                    stage = "sink" if type(node.step).__name__ == "Sink" else "process"
                    self._on_failures(stage, node.step.name, failures)
            if node.children and out:
                self._run_nodes(node.children, out, batch)
