"""The live terminal view behind ``sluice top``: what a running app does, about once a second.

Two sources of figures:

- ``MetricsSource``: the app's own endpoint (``--metrics-port``): per-partition lag,
  committed and end offsets, records in per partition, records out, in-flight,
  dead letters by stage and exception, rebalances, readiness.
- ``BrokerSource``: only the brokers (no endpoint needed): the group's committed and
  end offsets and lag per partition, the rate at which committed offsets advance,
  its state and members. What only the process knows (in-flight, dead letters,
  rebalances, outputs) is shown as ``-``.

Rates are differences between two consecutive samples divided by the time between them.

Example:
    >>> text = 'sluice_records_in_total{topic="t",partition="0"} 5.0\\nsluice_in_flight 2.0\\n'
    >>> sample = sample_from_metrics(text, {"status": "ready"}, "http://x")
    >>> sample.partitions[("t", 0)].records_in, sample.in_flight, sample.status
    (5.0, 2.0, 'ready')
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sluice.errors import SluiceError
from sluice.metrics.lag import GroupNotFoundError, group_lag, lag_admin

__all__ = ["BrokerSource", "MetricsSource", "PartitionRow", "TopSample", "render", "sample_from_metrics"]

TopicPartitionKey = tuple[str, int]


@dataclass
class PartitionRow:
    """One partition as seen by ``sluice top``; ``None``: not known from this source."""

    topic: str
    partition: int
    committed: float | None = None
    end: float | None = None
    lag: float | None = None
    records_in: float | None = None
    owner: str | None = None


@dataclass
class TopSample:
    """Everything one refresh shows."""

    source: str
    title: str = ""
    at: float = field(default_factory=time.monotonic)
    status: str | None = None
    reason: str | None = None
    partitions: dict[TopicPartitionKey, PartitionRow] = field(default_factory=dict)
    records_out: dict[str, float] | None = None
    in_flight: float | None = None
    dead_letters: dict[tuple[str, str], float] | None = None
    rebalances: float | None = None
    paused: bool | None = None
    workers: int | None = None
    error: str | None = None

    @property
    def records_in(self) -> float | None:
        values = [p.records_in for p in self.partitions.values() if p.records_in is not None]
        return sum(values) if values else None

    @property
    def committed_total(self) -> float | None:
        values = [p.committed for p in self.partitions.values() if p.committed is not None]
        return sum(values) if values else None

    @property
    def total_lag(self) -> float | None:
        values = [p.lag for p in self.partitions.values() if p.lag is not None]
        return sum(values) if values else None


def sample_from_metrics(text: str, ready: dict[str, Any] | None, source: str) -> TopSample:
    """Build a sample from a ``/metrics`` exposition (one app, or the merged workers of one)."""
    sample = TopSample(source)
    rows = sample.partitions
    out: dict[str, float] = {}
    dead: dict[tuple[str, str], float] = {}
    workers: set[str] = set()
    scalars: dict[str, float] = {}

    def row(labels: dict[str, str]) -> PartitionRow:
        tp = (labels.get("topic", "?"), int(labels.get("partition", "-1")))
        if tp not in rows:
            rows[tp] = PartitionRow(*tp)
        if "worker" in labels:
            rows[tp].owner = f"worker {labels['worker']}"
        return rows[tp]

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "worker" in s.labels:
                workers.add(s.labels["worker"])
            name = s.name
            if name == "sluice_records_in_total":
                r = row(s.labels)
                r.records_in = (r.records_in or 0.0) + s.value
            elif name == "sluice_consumer_lag":
                row(s.labels).lag = s.value
            elif name == "sluice_commit_offset":
                row(s.labels).committed = s.value
            elif name == "sluice_end_offset":
                row(s.labels).end = s.value
            elif name == "sluice_records_out_total":
                out[s.labels["topic"]] = out.get(s.labels["topic"], 0.0) + s.value
            elif name == "sluice_dead_letters_total":
                key = (s.labels["stage"], s.labels["exception"])
                dead[key] = dead.get(key, 0.0) + s.value
            elif name in ("sluice_in_flight", "sluice_rebalances_total", "sluice_paused", "sluice_workers"):
                scalars[name] = scalars.get(name, 0.0) + s.value
            elif name == "sluice_app" and not sample.title:
                sample.title = f"{s.labels.get('app')} (group {s.labels.get('group')})"
    sample.records_out = out
    sample.dead_letters = dead
    sample.in_flight = scalars.get("sluice_in_flight")
    sample.rebalances = scalars.get("sluice_rebalances_total")
    sample.paused = bool(scalars.get("sluice_paused")) if "sluice_paused" in scalars else None
    if "sluice_workers" in scalars:
        sample.workers = int(scalars["sluice_workers"])
    elif workers:
        sample.workers = len(workers)
    if ready is not None:
        sample.status = ready.get("status")
        sample.reason = ready.get("reason")
    return sample


def normalize_metrics_url(url: str) -> str:
    """``host:port``, ``http://host:port`` or ``.../metrics`` -> ``http://host:port`` (no path).

    Example:
        >>> normalize_metrics_url("127.0.0.1:9464"), normalize_metrics_url("http://h:1/metrics")
        ('http://127.0.0.1:9464', 'http://h:1')
    """
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    if url.endswith("/metrics"):
        url = url[: -len("/metrics")]
    return url


class MetricsSource:
    """Samples an app's ``/metrics`` and ``/readyz``."""

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.base = normalize_metrics_url(url)
        self.timeout = timeout

    @property
    def label(self) -> str:
        return f"{self.base}/metrics"

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def sample(self) -> TopSample:
        try:
            code, body = self._get("/metrics")
            if code != 200:
                return TopSample(self.label, error=f"{self.label} answered HTTP {code}")
            _code, ready_body = self._get("/readyz")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return TopSample(self.label, error=f"{self.label} unreachable: {reason}")
        try:
            ready = orjson.loads(ready_body)
        except orjson.JSONDecodeError:
            ready = None
        try:
            return sample_from_metrics(body.decode(), ready, self.label)
        except ValueError as exc:
            return TopSample(self.label, error=f"{self.label} is not a Prometheus endpoint: {exc}")


class BrokerSource:
    """Samples a consumer group's offsets from the brokers."""

    def __init__(
        self,
        group: str,
        brokers: str,
        topics: tuple[str, ...] = (),
        timeout: float = 5.0,
        kafka_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.group = group
        self.brokers = brokers
        self.kafka_config = dict(kafka_config or {})
        self.topics = topics
        self.timeout = timeout
        self._admin: AdminClient | None = None

    @property
    def label(self) -> str:
        return f"brokers {self.brokers}"

    def sample(self) -> TopSample:
        sample = TopSample(self.label, title=f"group {self.group}")
        try:
            if self._admin is None:
                self._admin = lag_admin(self.brokers, self.kafka_config, self.timeout, "sluice-top")
            report = group_lag(self.group, self.brokers, self.topics, self.timeout, admin=self._admin)
        except GroupNotFoundError:
            sample.status = "waiting"
            sample.reason = f"group {self.group!r} has no members and no committed offsets yet"
            return sample
        except SluiceError as exc:
            sample.error = str(exc)
            return sample
        sample.status = report.state
        sample.reason = f"{report.members} member{'s' if report.members != 1 else ''}"
        for p in report.partitions:
            sample.partitions[(p.topic, p.partition)] = PartitionRow(
                p.topic, p.partition, p.committed, p.end, p.lag, owner=p.member
            )
        return sample


# ---------------------------------------------------------------------- rendering


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}"


def _rate(now: float | None, before: float | None, seconds: float) -> float | None:
    if now is None or before is None or seconds <= 0:
        return None
    return max(0.0, (now - before) / seconds)


def render(sample: TopSample, previous: TopSample | None = None) -> RenderableType:
    """The view of ``sample``; rates need the ``previous`` one."""
    seconds = sample.at - previous.at if previous is not None else 0.0
    from_metrics = sample.records_out is not None
    header = Text()
    header.append("sluice top", style="bold")
    if sample.title:
        header.append(f"  {sample.title}")
    header.append(f"  via {sample.source}", style="dim")
    header.append(time.strftime("  %H:%M:%S"), style="dim")
    lines: list[RenderableType] = [header]
    if sample.error:
        lines.append(Text(f"error: {sample.error} (retrying)", style="bold red"))
        return Group(*lines)

    status = Text("status: ")
    style = "green" if sample.status in ("ready", "Stable") else "yellow"
    status.append(sample.status or "-", style=f"bold {style}")
    if sample.reason:
        status.append(f" ({sample.reason})")
    if sample.workers is not None:
        status.append(f"  workers: {sample.workers}")
    lines.append(status)

    if from_metrics:
        in_rate = _rate(sample.records_in, previous.records_in if previous else None, seconds)
        out_now = sum(sample.records_out.values()) if sample.records_out else 0.0
        out_before = (
            sum(previous.records_out.values())
            if previous is not None and previous.records_out is not None
            else None
        )
        out_rate = _rate(out_now, out_before, seconds)
        dead_total = sum(sample.dead_letters.values()) if sample.dead_letters else 0.0
    else:
        in_rate = _rate(sample.committed_total, previous.committed_total if previous else None, seconds)
        out_rate = None
        dead_total = None
    summary = Text()
    summary.append(f"in: {_num(in_rate)} rec/s   out: {_num(out_rate)} rec/s   ")
    summary.append(f"lag: {_num(sample.total_lag)}   in-flight: {_num(sample.in_flight)}")
    if sample.paused:
        summary.append(" (paused)", style="yellow")
    summary.append(f"   dead letters: {_num(dead_total)}   rebalances: {_num(sample.rebalances)}")
    lines.append(summary)

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Topic", no_wrap=True)
    table.add_column("Partition", justify="right")
    table.add_column("Committed", justify="right")
    table.add_column("End", justify="right")
    table.add_column("Lag", justify="right")
    table.add_column("In/s" if from_metrics else "Done/s", justify="right")
    table.add_column("Owner", no_wrap=True, overflow="ellipsis", max_width=40)
    for tp, row in sorted(sample.partitions.items()):
        before = previous.partitions.get(tp) if previous is not None else None
        if from_metrics:
            rate = _rate(row.records_in, before.records_in if before else None, seconds)
        else:
            rate = _rate(row.committed, before.committed if before else None, seconds)
        lag_style = "bold red" if row.lag else ""
        table.add_row(
            row.topic,
            str(row.partition),
            _num(row.committed),
            _num(row.end),
            Text(_num(row.lag), style=lag_style),
            _num(rate),
            row.owner or "",
        )
    if sample.partitions:
        lines.append(table)
    else:
        lines.append(Text("no partitions assigned", style="dim"))

    if from_metrics and sample.records_out:
        outs = ", ".join(f"{topic} {_num(n)}" for topic, n in sorted(sample.records_out.items()))
        lines.append(Text(f"records out: {outs}"))
    if sample.dead_letters:
        dead = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="dead letters", title_justify="left")
        dead.add_column("Stage", no_wrap=True)
        dead.add_column("Exception", no_wrap=True)
        dead.add_column("Count", justify="right")
        for (stage, exc), n in sorted(sample.dead_letters.items(), key=lambda kv: (-kv[1], kv[0])):
            dead.add_row(stage, exc, _num(n))
        lines.append(dead)
    if not from_metrics:
        lines.append(
            Text(
                "in-flight, outputs, dead letters and rebalances need the app's metrics endpoint "
                "(sluice run --metrics-port PORT, then sluice top --metrics HOST:PORT)",
                style="dim",
            )
        )
    return Group(*lines)
