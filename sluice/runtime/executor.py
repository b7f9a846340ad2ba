"""Runs one consumed batch through the dataflow graph, batch-at-a-time.

The graph is compiled once into ``_Node`` objects. A batch of Kafka messages is
deserialized into records ``(value, key, message)`` and each step maps the whole
list to a new list. When a user function raises, the step reports which record
failed (``StepFailed``); that record alone goes to the ``FailureRouter`` (in-place
retries, then dead letter / skip / stop), its outputs if a retry succeeds take its
place, and the step goes on with the records after it: order is kept and no
function is called twice for a record that did not fail.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from operator import methodcaller
from pathlib import Path
from types import MethodType
from typing import Any, TypeVar

import orjson

from sluice.dataflow import MapBatch, Sink, Source, Step, Stream, To
from sluice.dataflow.frames import NotColumnar
from sluice.dataflow.joins import WindowJoin
from sluice.dataflow.keyed import KeyedState
from sluice.dataflow.sinks import SinkRow
from sluice.dataflow.steps import Aggregate, Record, StepFailed
from sluice.dataflow.tables import Join
from sluice.errors import ConfigError, DeserializationError, EnvironmentalError, SinkUnavailableError
from sluice.errors.dead_letter import DeadLetterContext
from sluice.errors.policy import ErrorPolicy
from sluice.kafka.calls import produce_waiting
from sluice.runtime.async_bridge import AsyncBridge, is_async
from sluice.runtime.collector import size_checked
from sluice.runtime.failures import FailureRouter, IndexedFailure
from sluice.runtime.fusion import (
    DESERIALIZE,
    CollectLoop,
    FusedLoop,
    LoopSpec,
    fusable,
    generate,
    generate_collect,
)
from sluice.runtime.joins import JoinNode
from sluice.runtime.keyed_state import StateNode
from sluice.runtime.retry_topics import parse_retry_headers
from sluice.runtime.stateful import AggregateNode, Repartitioned
from sluice.runtime.tables import Tables
from sluice.runtime.tracker import Batch
from sluice.serde import RegistryFormat, deserializer, key_serializer, serializer

__all__ = ["Executor"]

logger = logging.getLogger(__name__)

Produce = Callable[..., None]
_T = TypeVar("_T")
#: the longest the wait for an unavailable sink goes without serving delivery reports
_WAIT_SLICE = 0.1


@dataclass
class _Node:
    step: Step
    stage: str
    children: list[_Node] = field(default_factory=list)
    emit: _Emitter | None = None
    write_batch: Callable[[list[SinkRow]], Any] | None = None
    plan: _SourcePlan | None = None
    aggregate: AggregateNode | None = None


def _merge(per_record: list[list[Record] | None], recovered: dict[int, list[Record]]) -> list[Record]:
    for index, outputs in recovered.items():
        per_record[index] = outputs
    return [r for outputs in per_record if outputs for r in outputs]


class _Emitter:
    """Produces the records reaching a ``To`` step, each acknowledged against its batch.

    Each output's delivery callback is ``batch.on_delivery`` bound to its source message
    (``MethodType(on_delivery, msg)(err, out)`` calls ``on_delivery(msg, err, out)``), so
    a refused output is traced to the record it came from. A bound method costs about
    half of a ``functools.partial`` to create and to call, once per output record.
    """

    def __init__(
        self, step: To, source: Source, produce: Produce, poll: Callable[[float], Any], router: FailureRouter
    ):
        self.step = step
        self.topic = step.topic
        value_spec = (
            step.value
            if step.value is not None
            else (source.value if isinstance(source.value, str) else "json")
        )
        self.writes_json = value_spec == "json"
        #: None: the values reaching this step are already the bytes to write (map_batch's NDJSON lines)
        self.serialize: Callable[[Any], Any] | None = serializer(value_spec)
        if step.key is not None:
            self.key_serialize: Callable[[Any], Any] | None = serializer(step.key, "key")
        elif step.keyed:
            self.key_serialize = key_serializer
        else:
            self.key_serialize = None if source.key == "bytes" else serializer(source.key, "key")
        self.produce = produce
        #: ``produce`` without the size check, and the size limit (``Executor.limit_sizes``): map_batch
        #: checks a whole batch's sizes at once
        self.unchecked = produce
        self.limit: int | None = None
        self._poll = poll
        self._router = router
        self.produced = 0
        #: the executor's wait for an unavailable dependency (the Schema Registry)
        self.wait: Callable[..., Any] | None = None

    def __call__(self, records: list[Record], batch: Batch) -> None:
        self._produce_all(records, len(records), batch)

    def emit_rows(self, values: list[Any], keys: list[Any] | None, sources: list[Any], batch: Batch) -> None:
        """Produce map_batch's rows: ``values[i]`` with key ``keys[i]`` (None: its source's) from ``sources[i]``.

        The values are the NDJSON lines to write and the keys the sources' bytes (the usual
        case): one loop with nothing per row but ``produce``. The topic's size limit is
        checked for the whole batch at once (the longest value and key), not by a wrapper
        per row; a batch that may hold a row too large takes the checked path.
        """
        if keys is not None or self.serialize is not None or self.key_serialize is not None:
            keys_out = map(_method(sources, "key"), sources) if keys is None else keys
            self._produce_all(zip(values, keys_out, sources, strict=True), len(values), batch)
            return
        keys = list(map(_method(sources, "key"), sources))
        produce = self.unchecked
        if self.limit is not None and (
            max(map(len, values), default=0) + max(map(len, filter(None, keys)), default=0) > self.limit
        ):
            produce = self.produce
        topic, on_delivery, count = self.topic, batch.on_delivery, len(values)
        batch.expect(count)
        start = 0
        while start < count:
            index = start
            try:
                for index in range(start, count):
                    msg = sources[index]
                    ts = msg.timestamp()[1]
                    produce(
                        topic,
                        values[index],
                        keys[index],
                        timestamp=ts if ts > 0 else 0,
                        headers=msg.headers(),
                        on_delivery=MethodType(on_delivery, msg),
                    )
                start = count
            except Exception as exc:  # noqa: BLE001 - queue full or produce refused: that row alone
                self.recover(index, (values[index], keys[index], sources[index]), exc, batch)
                start = index + 1
        self.produced += count

    def _produce_all(self, rows: Iterable[Record], count: int, batch: Batch) -> None:
        # ``for value, key, msg in rows`` unpacks at once: over a zip, no tuple is built per row
        topic, produce, ser, kser = self.topic, self.produce, self.serialize, self.key_serialize
        on_delivery = batch.on_delivery
        batch.expect(count)
        index = -1
        for value, key, msg in rows:
            index += 1
            try:
                ts = msg.timestamp()[1]
                produce(
                    topic,
                    value if ser is None else ser(value),
                    key if kser is None else kser(key),
                    timestamp=ts if ts > 0 else 0,
                    headers=msg.headers(),
                    on_delivery=MethodType(on_delivery, msg),
                )
            except Exception as exc:  # noqa: BLE001 - queue full, serialization failed or produce refused
                self.recover(index, (value, key, msg), exc, batch)
        self.produced += count

    def recover(self, index: int, record: Record, exc: Exception, batch: Batch) -> None:
        """``record`` (already expected by ``batch``) was not produced: wait for room, or the failure policy."""
        if isinstance(exc, BufferError):
            self._produce_one(record, batch)
        elif isinstance(exc, EnvironmentalError) and self.wait is not None:
            # the registry is down, not this record at fault: wait for it, never dead-letter
            policy = self.step.on_error or self._router.policy
            self.wait(
                self.step.name,
                policy,
                partial(self._produce_one, record, batch),
                exc,
                "this output",
                "a dependency",
            )
        else:
            batch.settle()
            self._failed(index, record, exc, batch)

    def _produce_one(self, record: Record, batch: Batch) -> list[Record]:
        """Produce one record, serving delivery reports while the producer queue is full."""
        value, key, msg = record
        ts = msg.timestamp()[1]
        payload = value if self.serialize is None else self.serialize(value)
        key_bytes = key if self.key_serialize is None else self.key_serialize(key)
        produce_waiting(
            self.produce,
            self._poll,
            self.topic,
            payload,
            key_bytes,
            timestamp=ts if ts > 0 else 0,
            headers=msg.headers(),
            on_delivery=MethodType(batch.on_delivery, msg),
        )
        return [record]

    def _failed(self, index: int, record: Record, exc: BaseException, batch: Batch) -> None:
        def retry(rec: Record) -> list[Record]:
            batch.expect(1)
            try:
                return self._produce_one(rec, batch)
            except BaseException:
                batch.settle()
                raise

        self._router.handle(
            "produce", self.step.name, self.step.on_error, [(index, record, exc)], retry, batch, backoff=False
        )


class _RepartitionEmitter(_Emitter):
    """Writes records to a repartition topic, with a header telling how the group key was serialized."""

    #: the windowed aggregation reading the topic: it refuses far-future records before they are written
    window: AggregateNode | None = None

    def __call__(self, records: list[Record], batch: Batch) -> None:
        if self.window is not None:
            records = self.window.drop_future(records, batch)
        super().__call__([(v, k, Repartitioned(m, k)) for v, k, m in records], batch)


def _fusable_chain(plan: _SourcePlan, ends: Callable[[_Node], bool]) -> tuple[list[_Node], _Node] | None:
    """The single chain of fusable steps from ``plan``'s source down to the first node that
    ``ends`` it, and that node; None when the graph branches, emits midway or has a step
    that cannot be fused."""
    if plan.raw_in or len(plan.nodes) != 1:
        return None
    chain: list[_Node] = []
    node = plan.nodes[0]
    while not ends(node):
        if not fusable(node.step) or len(node.children) != 1 or node.emit is not None:
            return None
        chain.append(node)
        node = node.children[0]
    return chain, node


@dataclass(frozen=True)
class _Fused:
    """A source's chain of fusable steps and its ``to()``, run by one generated loop."""

    nodes: list[_Node]
    emitter: _Emitter
    run: FusedLoop

    @classmethod
    def of(cls, plan: _SourcePlan) -> _Fused | None:
        """The fused form of ``plan``'s graph, or None when it is not one such chain."""
        found = _fusable_chain(plan, lambda node: node.emit is not None)
        if found is None:
            return None
        chain, node = found
        emitter = node.emit
        if type(emitter) is not _Emitter or node.children:
            return None
        spec = LoopSpec(
            [n.step for n in chain],
            plan.value_deser,
            plan.key_deser,
            emitter.topic,
            emitter.serialize,
            emitter.key_serialize,
        )
        return cls(chain, emitter, generate(spec))


@dataclass(frozen=True)
class _FusedAggregate:
    """A source's chain of fusable steps into an aggregation: one generated loop collects its records."""

    nodes: list[_Node]
    aggregate: _Node
    run: CollectLoop

    @classmethod
    def of(cls, plan: _SourcePlan) -> _FusedAggregate | None:
        """The fused form of ``plan``'s graph, or None when it is not ``source -> chain -> aggregation``."""
        found = _fusable_chain(plan, lambda node: node.aggregate is not None)
        if found is None:
            return None
        chain, node = found
        return cls(chain, node, generate_collect([n.step for n in chain], plan.value_deser, plan.key_deser))


class _SourcePlan:
    """Deserialization and the graph below one source."""

    def __init__(self, source: Source, nodes: list[_Node], router: FailureRouter):
        self.source = source
        self.nodes = nodes
        self.value_deser = deserializer(source.value)
        self.key_deser = None if source.key == "bytes" else deserializer(source.key, "key")
        self.json_fast_path = source.value == "json" and self.key_deser is None
        #: the only step is a map_batch reading JSON: hand it the raw bytes to read columnar
        self.raw_in = False
        # a built-in format fails the same way every time: retry without waiting (a Schema
        # Registry format too: an unreachable registry is not a record failure, it raises)
        self.deterministic = isinstance(source.value, str | RegistryFormat) and isinstance(
            source.key, str | RegistryFormat
        )
        value_name = (
            source.value if isinstance(source.value, str) else getattr(source.value, "__name__", "custom")
        )
        self.step_name = f"deserialize({value_name})"
        self._router = router
        #: the executor's wait for an unavailable dependency (the Schema Registry)
        self.wait: Callable[..., Any] = _unavailable
        #: the graph as one generated loop, when it is a single chain ending in a ``to()``
        self.fused: _Fused | None = None
        #: the graph's records up to its aggregation as one generated loop (``source -> chain -> window``)
        self.fused_aggregate: _FusedAggregate | None = None

    def nodes_to(self, step_name: str) -> list[_Node]:
        """The graph restricted to the path leading to ``step_name`` and everything below it."""
        path = _find_path(self.nodes, step_name)
        if not path:
            return self.nodes
        chain = path[-1]
        for node in reversed(path[:-1]):
            chain = replace(node, children=[chain])
        return [chain]

    def records(self, msgs: list[Any], batch: Batch) -> list[Record]:
        if self.raw_in:
            return [(m.value(), m.key(), m) for m in msgs]
        try:
            if self.json_fast_path:
                loads = orjson.loads
                return [(None if (v := m.value()) is None else loads(v), m.key(), m) for m in msgs]
            deser, kdeser = self.value_deser, self.key_deser
            if kdeser is None:
                return [(deser(m.value()), m.key(), m) for m in msgs]
            return [(deser(m.value()), kdeser(m.key()), m) for m in msgs]
        except Exception:  # noqa: BLE001 - isolate the records that cannot be deserialized
            return self._records_one_by_one(msgs, batch)

    def _deserialize(self, raw: Record) -> list[Record]:
        msg = raw[2]
        key = msg.key() if self.key_deser is None else self.key_deser(msg.key())
        return [(self.value_deser(msg.value()), key, msg)]

    def decode(self, msgs: list[Any], batch: Batch) -> list[Record]:
        """Deserialize ``msgs`` record by record, disposing of the ones that fail."""
        return self._records_one_by_one(msgs, batch)

    def _records_one_by_one(self, msgs: list[Any], batch: Batch) -> list[Record]:
        per_record: list[list[Record] | None] = []
        failures: list[IndexedFailure] = []
        for index, m in enumerate(msgs):
            raw = (m.value(), m.key(), m)
            try:
                per_record.append(self._deserialize(raw))
            except EnvironmentalError as exc:
                # the registry is down, not this record at fault: wait for it, never dead-letter
                per_record.append(self._wait_for_dependency(partial(self._deserialize, raw), exc))
            except Exception as exc:  # noqa: BLE001 - handed to the failure policy
                per_record.append(None)
                failures.append((index, raw, exc))
        return _merge(per_record, self._recover(failures, batch))

    def recover(self, msg: Any, exc: Exception, batch: Batch) -> list[Record]:
        """The records of ``msg``, whose deserialization raised ``exc``, after the failure policy."""
        raw = (msg.value(), msg.key(), msg)
        if isinstance(exc, EnvironmentalError):
            return self._wait_for_dependency(partial(self._deserialize, raw), exc)
        return self._recover([(0, raw, exc)], batch).get(0, [])

    def _wait_for_dependency(
        self, attempt: Callable[[], list[Record]], exc: EnvironmentalError
    ) -> list[Record]:
        policy = self.source.on_error or self._router.policy
        return self.wait(self.step_name, policy, attempt, exc, "this record", "a dependency")

    def _recover(self, failures: list[IndexedFailure], batch: Batch) -> dict[int, list[Record]]:
        return self._router.handle(
            "deserialize",
            self.step_name,
            self.source.on_error,
            failures,
            self._deserialize,
            batch,
            backoff=not self.deterministic,
        )


class _SinkDown(BaseException):
    """An unavailable sink outlasted ``retry_for`` inside the row fallback.

    A ``BaseException``: the failure router treats every ``Exception`` of a retried
    record as the record's fault and would dead-letter it; this one must pass through
    the router to stop the app instead.
    """

    def __init__(self, error: EnvironmentalError) -> None:
        super().__init__(error)
        self.error = error


def _unavailable(name: str, policy: ErrorPolicy, attempt: Any, first: EnvironmentalError, *_: Any) -> Any:
    raise first


def _never() -> bool:
    return False


def _nothing() -> None:
    return None


def _row(record: Record) -> SinkRow:
    value, key, msg = record
    return SinkRow(value, key, msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1], msg.headers())


def _not_a_row(msg: Any, value: Any) -> DeserializationError:
    """The error of a record that map_batch cannot make a frame row of (it is not a JSON object).

    Example:
        >>> from confluent_kafka import Message
        >>> print(_not_a_row(Message(topic="t", partition=0, offset=7), [1, 2]))
        map_batch reads each record as a frame row, so its value must be a JSON object; t[0]@7 holds a list ([1, 2]): write objects to this topic, or read records that are not with a per-record step (map, filter)
    """
    what = "no value (a tombstone)" if value is None else f"a {type(value).__name__} ({str(value)[:40]})"
    msg_text = (
        f"map_batch reads each record as a frame row, so its value must be a JSON object; "
        f"{msg.topic()}[{msg.partition()}]@{msg.offset()} holds {what}: write objects to this topic, "
        f"or read records that are not with a per-record step (map, filter)"
    )
    return DeserializationError(msg_text)


def _method(objects: list[Any], name: str) -> Callable[[Any], Any]:
    """The method ``name`` of the class of ``objects`` (all of one class), called as a function.

    ``map(Message.value, msgs)`` costs about half of ``map(methodcaller("value"), msgs)``.
    """
    return getattr(type(objects[0]), name) if objects else methodcaller(name)


def _find_path(nodes: list[_Node], step_name: str) -> list[_Node]:
    for node in nodes:
        if node.step.name == step_name:
            return [node]
        below = _find_path(node.children, step_name)
        if below:
            return [node, *below]
    return []


class Executor:
    """The compiled graph of every source; ``run`` processes one consumed batch."""

    def __init__(
        self,
        sources: list[Source],
        produce: Produce,
        poll: Callable[[float], Any],
        router: FailureRouter,
        app: str = "app",
        state_dir: Path = Path(".sluice-state"),
    ):
        self._router = router
        self._app = app
        self._state_dir = state_dir
        self.aggregates: list[AggregateNode] = []
        #: the tables of the graph's joins
        self.tables = Tables(state_dir)
        self.async_bridge = AsyncBridge()
        self._plans: dict[str, _SourcePlan] = {}
        self.emitters: list[_Emitter] = []
        self.batch_sinks: list[Any] = []
        #: set by the runner: True once the app is stopping (ends a wait for an unavailable sink)
        self.stopping: Callable[[], bool] = _never
        #: set by the runner: called every ``_WAIT_SLICE`` while a batch waits for an unavailable sink
        #: (to keep the consumer in its group past ``max.poll.interval.ms``)
        self.keep_alive: Callable[[], None] = _nothing
        #: while a batch waits for an unavailable sink: since when (monotonic) and why, for health reports
        self.waiting_since: float | None = None
        self.waiting_for: str | None = None
        # delivery reports are served only on the thread that polls (the one building the executor)
        self._poll_thread = threading.get_ident()
        self._poll = poll
        self._limits: dict[str, int] = {}  # output topics smaller than what the producer sends
        for source in sources:
            nodes = [self._compile(child, source, produce, poll) for child in source.root.children]
            plan = _SourcePlan(source, nodes, router)
            plan.wait = self.wait_until_available
            self._bind_map_batches(plan, nodes)
            plan.fused = _Fused.of(plan)
            plan.fused_aggregate = None if plan.fused is not None else _FusedAggregate.of(plan)
            for topic in source.topics:
                self._plans[topic] = plan
        self._single = next(iter(self._plans.values())) if len(self._plans) == 1 else None
        windowed = {t: n for n in self.aggregates if n.max_future is not None for t in n.input_topics}
        for emitter in self.emitters:
            if isinstance(emitter, _RepartitionEmitter):
                emitter.window = windowed.get(emitter.topic)

    def _compile(
        self, stream: Stream, source: Source, produce: Produce, poll: Callable[[float], Any]
    ) -> _Node:
        step = stream.step
        assert step is not None
        fn = getattr(step, "fn", None)
        if fn is not None and is_async(fn):
            step = replace(step, fn=self.async_bridge.wrap(fn))
        if isinstance(step, Join):
            step = self.tables.bind(step, source.topics)
        node = _Node(step, "sink" if isinstance(step, Sink) else "process")
        if isinstance(step, Sink):
            node.write_batch = getattr(step.fn, "write_batch", None)
            if node.write_batch is not None:
                self.batch_sinks.append(step.fn)
        if isinstance(step, To):
            emitter = _RepartitionEmitter if step.repartition else _Emitter
            node.emit = emitter(step, source, produce, poll, self._router)
            node.emit.wait = self.wait_until_available
            self.emitters.append(node.emit)
        if isinstance(step, Aggregate):
            kind: type[AggregateNode] = AggregateNode
            if isinstance(step, KeyedState):
                kind = StateNode
            elif isinstance(step, WindowJoin):
                kind = JoinNode
            node.aggregate = kind(step, self._app, self._state_dir, produce, poll, self._router)
            node.aggregate.input_topics = set(source.topics)
            self.aggregates.append(node.aggregate)
        node.children = [self._compile(child, source, produce, poll) for child in stream.children]
        return node

    def _bind_map_batches(self, plan: _SourcePlan, nodes: list[_Node]) -> None:
        """Give map_batch steps their plan and the columnar in/out paths where they apply."""
        json_source = plan.json_fast_path
        for node in nodes:
            self._bind_map_batches(plan, node.children)
            if not isinstance(node.step, MapBatch):
                continue
            node.plan = plan
            writes_only = node.children and all(
                child.emit is not None and not child.children and child.emit.writes_json
                for child in node.children
            )
            if writes_only:
                node.step = replace(node.step, raw_out=True)
                for child in node.children:
                    assert child.emit is not None
                    child.emit.serialize = None
            if json_source and len(nodes) == 1 and nodes is plan.nodes:
                node.step = replace(node.step, raw_in=True)
                plan.raw_in = True

    def emitter_for(self, topic: str) -> tuple[str, ErrorPolicy | None]:
        """The step name and policy of the ``to()`` writing ``topic`` (for refused outputs)."""
        for emitter in self.emitters:
            if emitter.topic == topic:
                return emitter.step.name, emitter.step.on_error
        return f"to({topic})", None

    @property
    def produced(self) -> int:
        return sum(e.produced for e in self.emitters)

    def run(self, msgs: list[Any], batch: Batch) -> None:
        """Process ``msgs`` (error-free Kafka messages); outputs are acknowledged against ``batch``."""
        if self._single is not None:
            self._run_plan(self._single, msgs, batch)
            return
        by_topic: dict[str, list[Any]] = {}
        for m in msgs:
            topic = m.topic()
            group = by_topic.get(topic)
            if group is None:
                group = by_topic[topic] = []
            group.append(m)
        for topic, group in by_topic.items():
            self._run_plan(self._plans[topic], group, batch)

    def _run_plan(self, plan: _SourcePlan, msgs: list[Any], batch: Batch) -> None:
        if plan.fused is not None:
            self._run_fused(plan, plan.fused, msgs, batch)
        elif plan.fused_aggregate is not None:
            self._run_fused_aggregate(plan, plan.fused_aggregate, msgs, batch)
        elif plan.raw_in:
            self._run_map_batch_messages(plan.nodes[0], msgs, batch)
        else:
            self._run_nodes(plan.nodes, plan.records(msgs, batch), batch)

    def _run_fused(self, plan: _SourcePlan, fused: _Fused, msgs: list[Any], batch: Batch) -> None:
        """The generated loop over ``msgs``; a record that fails meets the failure policy as in ``_run_nodes``."""
        emitter, start = fused.emitter, 0
        while start < len(msgs):
            produced, failed, stage, value, key, exc = fused.run(
                msgs, start, emitter.produce, batch.on_delivery
            )
            # delivery reports are served by poll(), never inside the loop: expecting them now is in time
            batch.expect(produced)
            emitter.produced += produced
            if exc is None:
                return
            assert isinstance(exc, Exception)
            msg = msgs[failed]
            if stage == DESERIALIZE:
                self._run_nodes(plan.nodes, plan.recover(msg, exc, batch), batch)
            elif stage <= len(fused.nodes):
                node = fused.nodes[stage - 1]
                out = self._continue_after(node, [(value, key, msg)], StepFailed(0, [], exc), batch)
                if out:
                    self._run_nodes(node.children, out, batch)
            else:
                batch.expect(1)
                emitter.produced += 1
                emitter.recover(0, (value, key, msg), exc, batch)
            start = failed + 1

    def _run_fused_aggregate(
        self, plan: _SourcePlan, fused: _FusedAggregate, msgs: list[Any], batch: Batch
    ) -> None:
        """The generated loop collects the aggregation's records; a failure meets the policy as in ``_run_nodes``.

        The records before a failed one are aggregated before it is handed to the policy:
        per partition, records reach the state in offset order, as on the general path.
        """
        start = 0
        while start < len(msgs):
            records: list[Record] = []
            failed, stage, value, key, exc = fused.run(msgs, start, records)
            if records:
                self._run_nodes([fused.aggregate], records, batch)
            if exc is None:
                return
            assert isinstance(exc, Exception)
            msg = msgs[failed]
            if stage == DESERIALIZE:
                self._run_nodes(plan.nodes, plan.recover(msg, exc, batch), batch)
            elif stage > len(fused.nodes):
                raise exc  # collecting the record failed (memory): no step's failure
            else:
                node = fused.nodes[stage - 1]
                out = self._continue_after(node, [(value, key, msg)], StepFailed(0, [], exc), batch)
                if out:
                    self._run_nodes(node.children, out, batch)
            start = failed + 1

    def run_parked(self, msg: Any, batch: Batch) -> None:
        """Run a record from a retry topic again, through the path of the step that failed."""
        headers = msg.headers()
        origin = DeadLetterContext.from_headers(headers)
        plan = self._plans.get(origin.topic) if origin is not None else None
        if origin is None or plan is None:
            unknown = origin.topic if origin is not None else "?"
            exc = LookupError(
                f"a record of retry topic {msg.topic()} comes from {unknown!r}, not a source of this app"
            )
            self._router.dispose("process", "retry", self._router.policy, msg, exc, 1, batch)
            return
        level, _due = parse_retry_headers(headers)
        nodes = plan.nodes if origin.stage == "deserialize" else plan.nodes_to(origin.step)
        self._router.origin, self._router.retry_level = origin, level
        try:
            self._run_nodes(nodes, plan.records([msg], batch), batch)
        finally:
            self._router.origin, self._router.retry_level = None, 0

    def _run_nodes(self, nodes: list[_Node], records: list[Record], batch: Batch) -> None:
        for node in nodes:
            if not records:
                return
            if node.emit is not None:
                node.emit(records, batch)
                out = records
            elif node.write_batch is not None:
                out = self._write_batch(node, records, batch)
            elif node.plan is not None:
                out = self._map_batch(node, records, batch)
            elif node.aggregate is not None:
                # in chunks: a stream-time jump may close more windows than memory should hold
                for chunk in node.aggregate.process(records, batch):
                    if node.children and chunk:
                        self._run_nodes(node.children, chunk, batch)
                continue
            else:
                try:
                    out = node.step.apply(records)
                except StepFailed as failed:
                    out = self._continue_after(node, records, failed, batch)
            if node.children and out:
                self._run_nodes(node.children, out, batch)

    def _write_batch(self, node: _Node, records: list[Record], batch: Batch) -> list[Record]:
        """One call for the whole batch; on failure, row by row to find the rows that fail.

        A sink that is unavailable (``EnvironmentalError``) is no row's fault: the whole
        batch is written again until it lands or the policy's ``retry_for`` is spent.
        """
        write = node.write_batch
        assert write is not None
        step = node.step
        try:
            self._write_rows(step, write, [_row(r) for r in records])
            return records
        except (EnvironmentalError, ConfigError):
            raise  # the sink stayed down past retry_for, or is misconfigured: stop, commit nothing past this batch
        except Exception:  # noqa: BLE001 - isolate the failing rows
            pass
        out: list[Record] = []

        def write_one(record: Record) -> list[Record]:
            try:
                self._write_rows(step, write, [_row(record)])
            except EnvironmentalError as exc:
                raise _SinkDown(exc) from exc
            return [record]

        try:
            for record in records:
                try:
                    out.extend(write_one(record))
                except Exception as exc:  # noqa: BLE001 - handed to the failure policy
                    recovered = self._router.handle(
                        "sink", step.name, step.on_error, [(0, record, exc)], write_one, batch
                    )
                    out.extend(recovered.get(0, ()))
        except _SinkDown as down:
            raise down.error from None
        return out

    def _write_rows(self, step: Step, write: Callable[[list[SinkRow]], Any], rows: list[SinkRow]) -> None:
        try:
            write(rows)
        except EnvironmentalError as exc:
            self._until_available(step, lambda: write(rows), exc, len(rows))

    def _until_available(
        self, step: Step, attempt: Callable[[], _T], first: EnvironmentalError, rows: int
    ) -> _T:
        """A sink's write, called again while the sink is unavailable (``wait_until_available``)."""
        policy = step.on_error or self._router.policy
        return self.wait_until_available(step.name, policy, attempt, first, f"these {rows} rows", "the sink")

    def wait_until_available(
        self,
        name: str,
        policy: ErrorPolicy,
        attempt: Callable[[], _T],
        first: EnvironmentalError,
        what: str,
        dependency: str,
    ) -> _T:
        """Call ``attempt`` again with the policy's backoff while it raises ``EnvironmentalError``.

        The batch waits meanwhile: no record is dead-lettered and no offset moves past it.

        Raises:
            EnvironmentalError: (``SinkUnavailableError`` for a sink, the first error's type
                otherwise) still unavailable after the policy's ``retry_for``, or the app is
                stopping: nothing of this batch or after it is committed.
        """
        started = self._router.clock.monotonic()
        logger.warning(
            "%s: %s; trying %s again for up to %gs (on_error retry_for): nothing is "
            "dead-lettered and no offset moves past them meanwhile",
            name,
            first,
            what,
            policy.retry_for,
        )
        last, tries = first, 1
        self.waiting_since, self.waiting_for = started, f"{name}: {first}"
        try:
            while True:
                waited = self._router.clock.monotonic() - started
                if waited >= policy.retry_for or self.stopping():
                    why = (
                        f"has been unavailable for {waited:.0f}s (on_error retry_for={policy.retry_for:g}s)"
                        if waited >= policy.retry_for
                        else f"was still unavailable after {waited:.0f}s when the app stopped"
                    )
                    msg = (
                        f"{name}: {dependency} {why}: {last}; stopping without committing this batch or "
                        f"anything after it (its records are consumed again on restart)"
                    )
                    kind = SinkUnavailableError if dependency == "the sink" else type(first)
                    raise kind(msg) from last
                self._wait(min(policy.delay(tries), policy.retry_for - waited))
                tries += 1
                try:
                    result = attempt()
                except EnvironmentalError as exc:
                    last = exc
                    self.waiting_for = f"{name}: {exc}"
                    continue
                logger.warning(
                    "%s: %s is back after %.1fs and %d tries; the waiting records go on",
                    name,
                    dependency,
                    self._router.clock.monotonic() - started,
                    tries,
                )
                return result
        finally:
            self.waiting_since = self.waiting_for = None

    def _wait(self, seconds: float) -> None:
        """Sleep in slices, serving delivery reports (on the polling thread) and the runner's keep-alive."""
        deadline = self._router.clock.monotonic() + seconds
        on_poll_thread = threading.get_ident() == self._poll_thread
        while (left := deadline - self._router.clock.monotonic()) > 0 and not self.stopping():
            if on_poll_thread:
                self._poll(min(left, _WAIT_SLICE))
                self.keep_alive()
            else:
                self._router.clock.sleep(min(left, _WAIT_SLICE))

    def _map_batch(self, node: _Node, records: list[Record], batch: Batch) -> list[Record]:
        """A micro-batch through the user's frame function: retries, then bisection to the failing rows."""
        step = node.step
        assert isinstance(step, MapBatch)
        if len(records) > step.max_rows:  # a consume can bring more than one frame's worth
            size = step.max_rows
            return [
                r
                for i in range(0, len(records), size)
                for r in self._map_batch(node, records[i : i + size], batch)
            ]
        try:
            return step.apply(records)
        except Exception as exc:  # noqa: BLE001 - retried, then bisected
            return self._map_batch_failed(node, records, exc, batch)

    def _run_map_batch_messages(self, node: _Node, msgs: list[Any], batch: Batch) -> None:
        """``raw_in``: the frame is read from the messages' bytes; no per-record tuple unless it fails.

        With ``raw_out`` too, the rows go to the topics as NDJSON lines, each with its source
        message's key, timestamp and headers, without a record per row either. Rows whose
        bytes do not decode meet the failure policy one by one (``_salvage``); the others
        are still read columnar, in order.
        """
        step = node.step
        assert isinstance(step, MapBatch)
        if len(msgs) > step.max_rows:
            for i in range(0, len(msgs), step.max_rows):
                self._run_map_batch_messages(node, msgs[i : i + step.max_rows], batch)
            return
        kind = step.kind()
        try:
            frame = kind.from_ndjson(map(_method(msgs, "value"), msgs), len(msgs))
        except NotColumnar:
            frame, msgs = self._salvage(node, kind, msgs, batch)
            if frame is None:
                return
        try:
            positions, values, keys = step.run(kind, frame)
            sources = [msgs[p] for p in positions] if positions is not None else [msgs[-1]] * len(values)
        except Exception as exc:  # noqa: BLE001 - retried, then bisected, as records
            out = self._map_batch_failed(node, [(m.value(), m.key(), m) for m in msgs], exc, batch)
        else:
            if not values or not node.children:
                return
            if step.raw_out:
                for child in node.children:
                    assert child.emit is not None
                    child.emit.emit_rows(values, keys, sources, batch)
                return
            keys_out = map(_method(sources, "key"), sources) if keys is None else keys
            out = list(zip(values, keys_out, sources, strict=True))
        if node.children and out:
            self._run_nodes(node.children, out, batch)

    def _salvage(self, node: _Node, kind: Any, msgs: list[Any], batch: Batch) -> tuple[Any, list[Any]]:
        """``(frame or None, its messages)`` once the rows of ``msgs`` that cannot be frame rows are disposed of.

        A row that does not decode (malformed JSON, bad UTF-8), or decodes to something
        that is not a JSON object (a tombstone, an array, a number), goes to the failure
        policy alone, as a deserialization failure with its own context (dead letter headers,
        original key, value and headers). The rest of the batch is read columnar again, in
        order: the user's function sees the frame it would have seen without those rows.
        Objects the reader still refuses (e.g. a field whose type changes between rows)
        go through the record path instead; then the frame is None.
        """
        plan = node.plan
        assert plan is not None
        policy = plan.source.on_error or self._router.policy
        good: list[Any] = []
        for value, _key, msg in plan.decode(msgs, batch):  # rows that do not decode are disposed of here
            if isinstance(value, dict):
                good.append(msg)
            else:
                self._router.dispose(
                    "deserialize", plan.step_name, policy, msg, _not_a_row(msg, value), 1, batch
                )
        if not good:
            return None, good
        try:
            return kind.from_ndjson(map(_method(good, "value"), good), len(good)), good
        except NotColumnar as exc:
            out = self._map_batch_failed(node, [(m.value(), m.key(), m) for m in good], exc, batch)
            if node.children and out:
                self._run_nodes(node.children, out, batch)
            return None, good

    def _map_batch_failed(
        self, node: _Node, records: list[Record], failure: Exception, batch: Batch
    ) -> list[Record]:
        step = node.step
        assert isinstance(step, MapBatch) and node.plan is not None
        if isinstance(failure, NotColumnar):
            # malformed bytes (or a tombstone): decode record by record, dead-lettering what fails
            records = node.plan.decode([r[2] for r in records], batch)
            step = replace(step, raw_in=False)
            try:
                return step.apply(records) if records else []
            except Exception as exc:  # noqa: BLE001 - handled below like any failure of the function
                failure = exc
        policy = step.on_error or self._router.policy
        for attempt in range(1, policy.retries + 1):
            self._router.sleep(policy.delay(attempt))
            try:
                return step.apply(records)
            except Exception as exc:  # noqa: BLE001 - next attempt, then bisection
                failure = exc
        return self._bisect(step, records, failure, 1 + policy.retries, batch)

    def _bisect(
        self, step: MapBatch, records: list[Record], failure: Exception, attempts: int, batch: Batch
    ) -> list[Record]:
        if len(records) == 1:
            policy = step.on_error or self._router.policy
            self._router.dispose("process", step.name, policy, records[0][2], failure, attempts, batch)
            return []
        middle = len(records) // 2
        out: list[Record] = []
        for half in (records[:middle], records[middle:]):
            try:
                out.extend(step.apply(half))
            except Exception as exc:  # noqa: BLE001 - narrow down to the failing rows
                out.extend(self._bisect(step, half, exc, attempts, batch))
        return out

    def plan_for(self, topic: str) -> _SourcePlan:
        return self._plans[topic]

    def run_record(self, plan: _SourcePlan, record: Record, batch: Batch) -> None:
        """Run one deserialized record through the whole graph (a worker's unit of work)."""
        self._run_nodes(plan.nodes, [record], batch)

    def flush_state(self) -> None:
        """Write the aggregations' buffered states to their changelogs (before a commit, revoke, stop)."""
        for node in self.aggregates:
            node.flush()

    @property
    def held_records(self) -> int:
        """Source records whose batches wait only for an aggregation's changelog flush (about)."""
        return sum(node.held_records for node in self.aggregates) if self.aggregates else 0

    def limit_sizes(self, limits: dict[str, int]) -> None:
        """Refuse outputs above their topic's size limit before producing them (``size_checked``)."""
        self._limits = limits
        for emitter in self.emitters:
            limit = limits.get(emitter.topic)
            if limit is not None:
                emitter.unchecked, emitter.limit = emitter.produce, limit
                emitter.produce = size_checked(emitter.produce, emitter.topic, limit)

    def rebind(self, produce: Produce, poll: Callable[[float], Any]) -> None:
        """Produce through a new producer from now on (exactly-once re-creates it after an abort)."""
        for emitter in self.emitters:
            limit = self._limits.get(emitter.topic)
            emitter.produce = produce if limit is None else size_checked(produce, emitter.topic, limit)
            emitter.unchecked = produce
            emitter._poll = poll
        for node in self.aggregates:
            node.rebind(produce, poll)

    @property
    def state_failure(self) -> Exception | None:
        return next((n.fatal for n in self.aggregates if n.fatal is not None), None)

    def close_sinks(self) -> None:
        """Close the batch sinks that have a ``close()``, and the event loop of async steps."""
        self.async_bridge.close()
        for sink in self.batch_sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()

    def _continue_after(
        self, node: _Node, records: list[Record], failed: StepFailed, batch: Batch
    ) -> list[Record]:
        """Hand each failed record to the router, in order, and apply the step to the rest."""
        step = node.step
        out = list(failed.done)
        offset = 0
        while True:
            index = offset + failed.index
            record = records[index]
            cause: Exception | None = failed.cause
            if node.stage == "sink" and isinstance(cause, EnvironmentalError):
                # a sink function saying its target is down: wait for it, as for a batch sink
                try:
                    out.extend(self._until_available(step, partial(step.apply_one, record), cause, 1))
                    cause = None
                except EnvironmentalError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the record's own failure: the policy below
                    cause = exc
            if cause is not None:
                recovered = self._router.handle(
                    node.stage, step.name, step.on_error, [(0, record, cause)], step.apply_one, batch
                )
                out.extend(recovered.get(0, ()))
            offset = index + 1
            try:
                out.extend(step.apply(records[offset:]))
                return out
            except StepFailed as again:
                failed = again
                out.extend(again.done)
