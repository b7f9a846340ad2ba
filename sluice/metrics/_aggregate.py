"""``sluice run --workers N --metrics-port P``: one endpoint for all the workers.

Each worker process serves its own metrics on ``127.0.0.1`` only, on port ``P+1+i``
(``i`` = worker index; free ports when ``P`` is 0). The parent serves ``P``: a scrape
of ``/metrics`` scrapes every worker, adds a ``worker="i"`` label to each sample and
returns one exposition, plus ``sluice_workers`` and ``sluice_worker_up{worker}``.
``/healthz`` and ``/readyz`` are healthy/ready only when every worker is. This keeps
prometheus-client's multiprocess mode (shared mmap files, no custom collectors) out
of the picture, and a worker's metrics die with it instead of lingering.

Example:
    >>> text = "# TYPE a_total counter\\na_total {}\\n"
    >>> merged = merge_expositions({0: text.format(2), 1: text.format(3)})
    >>> sorted((s.name, s.labels["worker"], float(s.value)) for s in merged["a"].samples)
    [('a_total', '0', 2.0), ('a_total', '1', 3.0)]
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from sluice.metrics._server import MetricsServer

__all__ = ["WorkerAggregator", "merge_expositions", "serve_worker_metrics", "worker_ports"]

logger = logging.getLogger(__name__)

#: Seconds a worker's endpoint may be unreachable after start before /healthz says so.
START_GRACE = 30.0
_TIMEOUT = 3.0


def worker_ports(port: int, workers: int) -> list[int]:
    """The metrics port of each worker: ``port+1+i``, or free ports when ``port`` is 0.

    Example:
        >>> worker_ports(9464, 3)
        [9465, 9466, 9467]
    """
    if port:
        return [port + 1 + i for i in range(workers)]
    ports = []
    sockets = []
    try:
        for _ in range(workers):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def merge_expositions(texts: dict[int, str]) -> dict[str, Metric]:
    """Parse each worker's Prometheus text and merge the families, labelling samples ``worker``."""
    merged: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            for s in family.samples:
                into.samples.append(
                    Sample(s.name, {**s.labels, "worker": str(worker)}, s.value, s.timestamp, s.exemplar)
                )
    return merged


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class WorkerAggregator:
    """The parent's endpoints: every worker's metrics, health and readiness, combined."""

    def __init__(self, ports: list[int], host: str = "127.0.0.1") -> None:
        self.urls = [f"http://{host}:{port}" for port in ports]
        self.started = time.monotonic()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sluice-scrape")
        self.server: MetricsServer | None = None

    def _fetch_all(self, path: str) -> list[tuple[int, bytes] | Exception]:
        def fetch(url: str) -> tuple[int, bytes] | Exception:
            try:
                return _get(url + path)
            except (OSError, ValueError) as exc:
                return exc

        return list(self._pool.map(fetch, self.urls))

    def metrics(self) -> bytes:
        texts: dict[int, str] = {}
        up = GaugeMetricFamily(
            "sluice_worker_up", "1 when the worker's own endpoint answered", labels=["worker"]
        )
        for index, result in enumerate(self._fetch_all("/metrics")):
            ok = not isinstance(result, Exception) and result[0] == 200
            up.add_metric([str(index)], 1 if ok else 0)
            if ok:
                texts[index] = result[1].decode()
        families = list(merge_expositions(texts).values())
        families.append(GaugeMetricFamily("sluice_workers", "Worker processes started", value=len(self.urls)))
        families.append(up)
        registry = CollectorRegistry()
        registry.register(_Fixed(families))
        return generate_latest(registry)

    def _combine(self, path: str, status_ok: str) -> tuple[bool, dict[str, Any]]:
        workers: dict[str, Any] = {}
        reasons: list[str] = []
        starting = time.monotonic() - self.started < START_GRACE
        for index, result in enumerate(self._fetch_all(path)):
            if isinstance(result, Exception):
                reason = f"endpoint {self.urls[index]} unreachable ({result})"
                workers[str(index)] = {"status": "unreachable", "reason": reason}
                if not (starting and path == "/healthz"):
                    reasons.append(f"worker {index}: {reason}")
                continue
            code, body = result
            try:
                detail = orjson.loads(body)
            except orjson.JSONDecodeError:
                detail = {"status": f"HTTP {code}"}
            workers[str(index)] = detail
            if code != 200:
                reasons.append(f"worker {index}: {detail.get('reason', detail.get('status'))}")
        if reasons:
            status = "unhealthy" if path == "/healthz" else "not ready"
            return False, {"status": status, "reason": "; ".join(reasons), "workers": workers}
        return True, {"status": status_ok, "workers": workers}

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self._combine("/healthz", "ok")

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self._combine("/readyz", "ready")

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        self.server = MetricsServer(self, port, host)
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self._pool.shutdown(wait=False)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def serve_worker_metrics(port: int | None, workers: int) -> tuple[WorkerAggregator | None, list[int]]:
    """The supervisor's entry point: serve the workers' combined metrics on ``port``.

    Returns the aggregator (``None`` without a port) and each worker's own port.
    """
    if port is None:
        return None, []
    aggregator = WorkerAggregator([])
    server = aggregator.serve(port, os.environ.get("SLUICE_METRICS_HOST") or "0.0.0.0")
    ports = worker_ports(port, workers)  # after binding: a free port is never the parent's own
    aggregator.urls = [f"http://127.0.0.1:{p}" for p in ports]
    logger.info(
        "metrics of %d workers on %s/metrics (each worker's own on port %s)",
        workers,
        server.url,
        ", ".join(map(str, ports)),
    )
    return aggregator, ports
