"""``TestDriver``: an app's real runtime on an in-memory Kafka, stepped from the test's thread."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice._durations import parse_duration
from sluice.dataflow import Source, To
from sluice.dataflow.steps import Aggregate, Step
from sluice.dataflow.tables import Join, Table
from sluice.errors import ConfigError, SluiceError
from sluice.runtime.clock import Clock
from sluice.runtime.runner import Runner, RunStats
from sluice.runtime.topology import steps_below
from sluice.serde import FORMATS, deserializer, key_serializer, serializer
from sluice.testing._memory import MemoryBroker, MemoryClients, MemoryMessage, MemoryProducer

if TYPE_CHECKING:
    from sluice.app import App

__all__ = ["OutputRecord", "TestDriver"]

logger = logging.getLogger(__name__)

_IDLE_STEPS = 3  # loop iterations in a row that change nothing: the app has settled


@dataclass(frozen=True)
class OutputRecord:
    """A record read back from a topic of the driver.

    ``key`` and ``value`` are deserialized with the format of the ``.to()`` that wrote the
    topic (bytes with ``raw=True``, and for dead letters, which keep the consumed bytes).
    ``headers``: a dict of name to value, values decoded as UTF-8 where they are text
    (with ``raw=True``, the list of ``(name, bytes)`` pairs as on Kafka).
    """

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp: int
    headers: Any


class _SteppedClock:
    """The driver's wall clock: starts at the real time, moves only with ``advance`` and the runtime's sleeps."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.slept = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
            self.slept += seconds


class TestDriver:
    """Runs an app's real runtime (``sluice run``'s loop) on an in-memory Kafka, for unit tests.

    The app's consumer, producers and admin client are in-memory ones
    (``sluice.testing._memory``) behind the same methods as confluent-kafka's, so
    everything else is production code: the executor and its fused loops, the failure
    policy (retries, dead-letter and retry topics; backoffs and waits for an unavailable
    sink do not really sleep, they move the driver's clock), aggregations, windows and stream time, state stores (in a
    temporary directory) with their changelogs, repartition topics, and the committer,
    exactly-once included. The loop runs on a thread of its own, one iteration at a time
    when the driver says so: ``output()`` and ``dead_letters()`` first run it until every
    record sent is processed and committed, so what they return is deterministic.

    Args:
        app: the ``App`` as defined for production (its brokers are never contacted).
        partitions: partitions of each source topic (an int for all, or a dict per topic);
            output and internal topics get their sources' count, as in production.
        start_time: the driver's wall clock at start (seconds since the epoch; default
            now). It moves only with ``advance()`` and the runtime's retry backoffs.
        max_steps: loop iterations one settling may take before the driver gives up.

    Example:
        >>> from sluice import App
        >>> app = App("upper")
        >>> _ = app.stream("words", value="str").map(str.upper).to("shouted")
        >>> with TestDriver(app) as driver:
        ...     driver.send("words", "hello", key="k1", timestamp=1_000)
        ...     [rec] = driver.output("shouted")
        >>> rec.value, rec.key, rec.timestamp
        ('HELLO', b'k1', 1000)
    """

    __test__ = False  # a class named Test*: not a test case for pytest

    def __init__(
        self,
        app: App,
        *,
        partitions: int | dict[str, int] = 1,
        start_time: float | None = None,
        max_steps: int = 10_000,
    ) -> None:
        if not app.sources or not any(s.root.children for s in app.sources):
            msg = f"app {app.name!r} has no stream with steps: add app.stream('topic') and steps before testing it"
            raise ConfigError(msg)
        self.app = app
        self.clock = _SteppedClock(time.time() if start_time is None else float(start_time))
        self.broker = MemoryBroker(self.clock.time)
        self.max_steps = max_steps
        self._partitions = partitions
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runner: Runner | None = None
        self._thread: threading.Thread | None = None
        self._turn = threading.Condition()
        self._runner_turn = False
        self._finished = False
        self._closing = False
        self._error: BaseException | None = None
        self._input: MemoryProducer | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> TestDriver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(raise_errors=exc_info[0] is None)

    def start(self) -> None:
        """Create the source topics, start the runtime and run it to its first poll (``with`` calls it)."""
        app = self.app
        for source in app.sources:
            if not source.internal:
                for topic in source.topics:
                    self.broker.create_topic(topic, self._partitions_of(topic))
        for table in self._tables():
            self.broker.create_topic(table.topic, self._partitions_of(table.topic))
        self._tmp = tempfile.TemporaryDirectory(prefix=f"sluice-driver-{app.name}-")
        options = replace(app.options, commit_interval=0.0, poll_timeout=0.0)
        self._runner = Runner(
            app.name,
            app.settings,
            app.sources,
            options,
            app.error_policy,
            state_dir=Path(self._tmp.name) / "state",
            clients=MemoryClients(self.broker),
            clock=Clock(time=self.clock.time, monotonic=self.clock.monotonic, sleep=self.clock.sleep),
        )
        app._runner = self._runner  # app.stats works as after app.run()
        self._input = MemoryProducer(self.broker, {"partitioner": "murmur2_random"})
        self.broker.gate = self._gate
        self.broker.idle = self._idle
        self._runner_turn = True
        self._thread = threading.Thread(target=self._run, name=f"sluice-driver-{app.name}", daemon=True)
        self._thread.start()
        self._wait_for_turn()
        try:
            self._raise_if_failed()  # e.g. the graph refused by the topology checks
            self.settle()
        except BaseException:
            self.close(raise_errors=False)
            raise

    def close(self, raise_errors: bool = True) -> None:
        """Stop the runtime as ``sluice run`` stops on SIGTERM (commit, close the stores), then clean up."""
        if self._runner is None:
            return
        self._closing = True
        self._runner.stop()
        if not self._finished:
            self._step()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.broker.gate = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._runner = None
        if raise_errors:
            self._raise_if_failed()

    # ------------------------------------------------------------------ the runtime's thread
    def _run(self) -> None:
        assert self._runner is not None
        try:
            self._runner.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread, which raises it
            self._error = exc
        finally:
            with self._turn:
                self._finished = True
                self._runner_turn = False
                self._turn.notify_all()

    def _gate(self) -> None:
        """The runtime is at the top of a poll: hand the turn to the driver, wait for the next step."""
        if threading.current_thread() is not self._thread:
            return
        with self._turn:
            self._runner_turn = False
            self._turn.notify_all()
            self._turn.wait_for(lambda: self._runner_turn)

    def _idle(self, seconds: float) -> None:
        """The runtime waits for delivery reports while none can come (e.g. between retries of a
        sink that is unavailable): the time passes on the driver's clock."""
        if threading.current_thread() is self._thread:
            self.clock.sleep(seconds)

    def _wait_for_turn(self) -> None:
        with self._turn:
            self._turn.wait_for(lambda: not self._runner_turn)

    def _step(self) -> None:
        """Let the loop run one iteration: poll, process, produce, commit, back to the next poll."""
        with self._turn:
            if self._finished:
                return
            self._runner_turn = True
            self._turn.notify_all()
            self._turn.wait_for(lambda: not self._runner_turn)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._finished and self._runner is not None and not self._closing:
            msg = f"the runtime of app {self.app.name!r} stopped unexpectedly"
            raise SluiceError(msg)

    def settle(self) -> None:
        """Run the loop until every record sent is processed and committed and nothing moves any more.

        ``output()``, ``dead_letters()`` and ``advance()`` call it; call it yourself to look
        at ``app.stats`` or at side effects of sinks.

        Raises:
            SluiceError: the app failed (e.g. ``on_error(fail=True)``), or did not settle
                within ``max_steps`` iterations.
        """
        self._require_running()
        runner = self._runner
        assert runner is not None
        idle = 0
        for _ in range(self.max_steps):
            before = self.broker.version
            self._step()
            self._raise_if_failed()
            if self.broker.version != before or runner.tracker.in_flight:
                idle = 0
                if runner.tracker.in_flight and self.broker.version == before:
                    time.sleep(0.001)  # worker threads (concurrency > 1) still running
                continue
            idle += 1
            if idle >= _IDLE_STEPS and self._caught_up(runner):
                return
            if idle >= 100 * _IDLE_STEPS:
                break
        msg = (
            f"app {self.app.name!r} did not settle within {self.max_steps} loop iterations "
            f"({runner.tracker.in_flight} records in flight, lag {self._lag(runner)}); "
            "a step that never finishes, or a sink that never becomes available?"
        )
        raise SluiceError(msg)

    def _lag(self, runner: Runner) -> dict[str, int]:
        """Uncommitted records per consumed partition (partitions waiting for a parked record's due time excluded)."""
        lag: dict[str, int] = {}
        group = self.app.settings.group_id
        for t, p in sorted(runner.parts.assigned):
            if (t, p) in runner.parts.delayed:
                continue
            end = self.broker.end_offset(t, p, committed_only=True)
            committed = max(self.broker.committed(group, t, p), self.broker.topic(t).starts[p])
            if end > committed:
                lag[f"{t}[{p}]"] = end - committed
        return lag

    def _caught_up(self, runner: Runner) -> bool:
        return not runner.tracker.in_flight and not self._lag(runner)

    def _require_running(self) -> None:
        if self._runner is None:
            msg = "the TestDriver is not running: use it as `with TestDriver(app) as driver:`"
            raise SluiceError(msg)

    # ------------------------------------------------------------------ input
    def send(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        *,
        timestamp: int | None = None,
        headers: dict[str, str | bytes] | list[tuple[str, str | bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Produce one record to a source topic, as a producer would.

        Args:
            topic: a topic the app consumes.
            value: bytes as they are, or a value serialized with the stream's format
                (``app.stream(topic, value=...)``).
            key: bytes as they are, or serialized with the stream's key format (a str as UTF-8
                by default); it chooses the partition like the Java client's partitioner.
            timestamp: the record's timestamp, ms (default: the driver's clock).
            headers: header names and values (str or bytes).
            partition: the partition (default: by key).
        """
        self._require_running()
        source = self._source_of(topic)
        value_b = (
            value if isinstance(value, bytes) or value is None else _encode(source.value, value, "value")
        )
        key_b = key if isinstance(key, bytes) or key is None else _encode(source.key, key, "key")
        assert self._input is not None
        errors: list[Any] = []
        kwargs: dict[str, Any] = {"headers": headers, "timestamp": timestamp or 0}
        if partition is not None:
            kwargs["partition"] = partition
        self._input.produce(topic, value_b, key_b, on_delivery=lambda err, _m: errors.append(err), **kwargs)
        self._input.flush()
        if errors[0] is not None:
            msg = f"TestDriver.send to {topic!r} failed: {errors[0].str()}"
            raise SluiceError(msg)

    def advance(self, duration: str | timedelta | float) -> None:
        """Move the driver's wall clock (``"30s"``, a ``timedelta``, or seconds), then settle.

        The wall clock decides when a record parked in a retry topic is due and where
        ``window(max_future=...)`` draws the line; stream time moves only with record timestamps.
        """
        seconds = duration if isinstance(duration, (int, float)) else parse_duration(duration, "advance")
        self.clock.now += float(seconds)
        self.settle()

    # ------------------------------------------------------------------ output
    def output(self, topic: str, *, raw: bool = False) -> list[OutputRecord]:
        """What the app wrote to ``topic`` so far (committed), in offset order per partition.

        Readable after the driver closed too: then what the runtime committed before it stopped.

        Values and keys are deserialized with the format of the ``.to()`` writing the topic
        (a window's ``late=`` topic: JSON; other topics: bytes); ``raw=True`` returns the
        bytes and the headers as on Kafka.
        """
        self._settled()
        to = self._to_of(topic)
        value_de = key_de = None
        if to is not None and not raw:
            value_de, key_de = _output_formats(*to)
        elif not raw and topic in self._late_topics():
            value_de, key_de = deserializer("json"), deserializer("str", "key")
        return [_record(m, value_de, key_de, raw) for m in self._read(topic)]

    def dead_letters(self, topic: str | None = None, *, raw: bool = False) -> list[OutputRecord]:
        """The dead letters written so far: the consumed key and value (bytes), with the ``sluice.error.*`` headers.

        ``topic``: one dead-letter topic (default: every dead-letter topic of the app's policies).
        """
        self._settled()
        topics = [topic] if topic is not None else self._dead_letter_topics()
        return [_record(m, None, None, raw) for t in topics if t in self.broker.topics for m in self._read(t)]

    def topics(self) -> list[str]:
        """Every topic of the driver, the app's internal ones (repartition, changelog, retry, DLQ) included."""
        return list(self.broker.topics)

    def committed(self, topic: str) -> dict[int, int]:
        """The app's committed offset per partition of ``topic`` (-1001 when none)."""
        self._settled()
        t = self.broker.topic(topic)
        return {p: self.broker.committed(self.app.settings.group_id, topic, p) for p in range(len(t.logs))}

    @property
    def stats(self) -> RunStats:
        """The run's counters (``app.stats``): records in and out, dead letters, commits..."""
        self._require_running()
        assert self._runner is not None
        return self._runner.stats

    @property
    def slept(self) -> float:
        """Seconds the runtime waited (retry backoffs, an unavailable sink): the driver's clock moved by them instead."""
        return self.clock.slept

    @property
    def runner(self) -> Runner:
        """The running ``Runner`` (the runtime itself), for looking into it."""
        self._require_running()
        assert self._runner is not None
        return self._runner

    def _settled(self) -> None:
        """Settle a running driver; a closed one is read as the runtime left it (its last commit)."""
        if self._runner is None and self._thread is not None:
            return
        self._require_running()
        self.settle()

    def _read(self, topic: str) -> Iterator[MemoryMessage]:
        if topic not in self.broker.topics:
            known = ", ".join(sorted(self.broker.topics))
            msg = f"topic {topic!r} does not exist in the TestDriver (it has {known})"
            raise SluiceError(msg)
        yield from self.broker.read(topic, committed_only=True)

    # ------------------------------------------------------------------ the app's graph
    def _partitions_of(self, topic: str) -> int:
        if isinstance(self._partitions, int):
            return self._partitions
        return self._partitions.get(topic, 1)

    def _tables(self) -> list[Table]:
        """The tables the app's joins read (their topics are inputs, like the sources')."""
        tables: dict[str, Table] = {}
        for source in self.app.sources:
            for step in steps_below(source.root, Join):
                tables.setdefault(step.table.topic, step.table)
        return list(tables.values())

    def _source_of(self, topic: str) -> Source | Table:
        for source in self.app.sources:
            if topic in source.topics and not source.internal:
                return source
        for table in self._tables():
            if table.topic == topic:
                return table
        consumed = sorted({t for s in self.app.sources if not s.internal for t in s.topics})
        msg = f"TestDriver.send: app {self.app.name!r} does not consume {topic!r}; it consumes {', '.join(consumed)}"
        raise SluiceError(msg)

    def _to_of(self, topic: str) -> tuple[To, Source] | None:
        for source in self.app.sources:
            for step in steps_below(source.root, To):
                if step.topic == topic:
                    return step, source
        return None

    def _late_topics(self) -> set[str]:
        """Where windows write their late records (JSON values, the group key as UTF-8)."""
        return {
            step.late
            for s in self.app.sources
            for step in steps_below(s.root, Aggregate)
            if step.late is not None
        }

    def _dead_letter_topics(self) -> list[str]:
        """The dead-letter topics of the app's policy and of its streams' and steps' own."""
        policies = [self.app.error_policy]
        for source in self.app.sources:
            policies.append(source.on_error)
            policies.extend(step.on_error for step in steps_below(source.root, Step))
        names = [p.dead_letter or f"{self.app.name}.dlq" for p in policies if p is not None]
        return list(dict.fromkeys(names))


def _encode(spec: Any, value: Any, what: str) -> bytes | None:
    if isinstance(spec, str) and spec in FORMATS:
        if spec == "bytes":
            if isinstance(value, str):
                return value.encode("utf-8")
            return key_serializer(value) if what == "key" else serializer("json")(value)
        return serializer(spec, what)(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    msg = (
        f"TestDriver.send: the stream's {what} format {spec!r} has no serializer in the driver; "
        f"pass the {what} as bytes (got {type(value).__name__})"
    )
    raise ConfigError(msg)


def _output_formats(step: To, source: Source) -> tuple[Any, Any]:
    """Deserializers matching how the runtime's emitter serializes the step's values and keys."""
    value_spec = (
        step.value if step.value is not None else (source.value if isinstance(source.value, str) else "json")
    )
    value_de = deserializer(value_spec) if isinstance(value_spec, str) and value_spec in FORMATS else None
    if step.key is not None:
        key_spec = step.key
    elif step.keyed:
        key_spec = "str"  # key_by keys: a str as UTF-8 (anything else as JSON, which reads back as its text)
    else:
        key_spec = source.key
    key_de = deserializer(key_spec, "key") if isinstance(key_spec, str) and key_spec in FORMATS else None
    return value_de, key_de


def _record(m: MemoryMessage, value_de: Any, key_de: Any, raw: bool) -> OutputRecord:
    headers: Any = m.headers() or []
    if not raw:
        headers = {name: _text(value) for name, value in headers}
    key, value = m.key(), m.value()
    if not raw:
        key = key_de(key) if key_de is not None else key
        value = value_de(value) if value_de is not None else value
    return OutputRecord(m.topic(), m.partition(), m.offset(), key, value, m.timestamp()[1], headers)


def _text(value: bytes | None) -> str | bytes | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value
