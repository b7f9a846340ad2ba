"""Operations: Prometheus metrics, ``/healthz`` and ``/readyz``, consumer-group lag, the ``sluice top`` view.

``App(..., metrics_port=9464)`` or ``sluice run module:app --metrics-port 9464`` serves:

- ``/metrics``: ``sluice_records_in_total{topic,partition}``, ``sluice_records_out_total{topic}``,
  ``sluice_dead_letters_total{stage,exception}``, ``sluice_consumer_lag{topic,partition}``,
  ``sluice_in_flight``, ``sluice_commit_offset{topic,partition}``, ``sluice_processing_seconds``,
  ``sluice_rebalances_total``, ``sluice_state_restore_remaining{store,partition}`` and more
  (see docs/operations.md);
- ``/healthz``: 200 while the poll loop comes back, 503 with a reason when it is stuck;
- ``/readyz``: 200 once partitions are assigned (and state restored), 503 with a reason
  before that, while every broker is down, and while stopping.

Example:
    >>> from sluice.metrics import check_port
    >>> check_port(0)
    0
"""

from sluice.metrics._aggregate import WorkerAggregator, merge_expositions, worker_ports
from sluice.metrics._runtime import STALL_SECONDS, RuntimeMetrics, start_metrics
from sluice.metrics._server import Endpoints, MetricsServer, check_port
from sluice.metrics.lag import GroupLag, GroupNotFoundError, PartitionLag, group_lag

__all__ = [
    "STALL_SECONDS",
    "Endpoints",
    "GroupLag",
    "GroupNotFoundError",
    "MetricsServer",
    "PartitionLag",
    "RuntimeMetrics",
    "WorkerAggregator",
    "check_port",
    "group_lag",
    "merge_expositions",
    "start_metrics",
    "worker_ports",
]
