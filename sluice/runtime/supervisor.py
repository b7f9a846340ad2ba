"""``--workers N``: N processes of the same app in one consumer group, stopped together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from sluice.metrics._aggregate import serve_worker_metrics

__all__ = ["run_workers"]

logger = logging.getLogger(__name__)


def run_workers(cli_args: list[str], workers: int, metrics_port: int | None = None) -> int:
    """Start ``workers`` processes running ``sluice <cli_args>``; return the exit code.

    SIGTERM/SIGINT are forwarded to every worker (each then drains and commits). If a
    worker fails, the others are stopped gracefully and its exit code is returned.
    With ``metrics_port``, this process serves the metrics, health and readiness of
    all workers there (each worker serves its own on ``127.0.0.1``, port ``metrics_port+1+i``).

    Raises:
        ConfigError: ``metrics_port`` cannot be bound (before any worker starts).
    """
    aggregator, ports = serve_worker_metrics(metrics_port, workers)
    procs: list[subprocess.Popen] = []
    for index in range(workers):
        env = {**os.environ, "SLUICE_WORKER_INDEX": str(index)}
        args = list(cli_args)
        if ports:
            args += ["--metrics-port", str(ports[index])]
            env["SLUICE_METRICS_HOST"] = "127.0.0.1"
        procs.append(subprocess.Popen([sys.executable, "-m", "sluice", *args], env=env))
    logger.info("started %d workers: pids %s", workers, ", ".join(str(p.pid) for p in procs))
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        while any(p.poll() is None for p in procs):
            for p in procs:
                rc = p.poll()
                if rc not in (None, 0) and not stopping:
                    logger.error("worker pid %d exited with %d; stopping the others", p.pid, rc)
                    code = rc
                    forward(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if aggregator is not None:
            aggregator.close()
    return code or max((p.returncode or 0) for p in procs)
