"""``--workers N``: N processes of the same app in one consumer group, stopped together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

__all__ = ["run_workers"]

logger = logging.getLogger(__name__)


def run_workers(cli_args: list[str], workers: int) -> int:
    """Start ``workers`` processes running ``sluice <cli_args>``; return the exit code.

    SIGTERM/SIGINT are forwarded to every worker (each then drains and commits). If a
    worker fails, the others are stopped gracefully and its exit code is returned.
    """
    procs: list[subprocess.Popen] = []
    for index in range(workers):
        env = {**os.environ, "SLUICE_WORKER_INDEX": str(index)}
        procs.append(subprocess.Popen([sys.executable, "-m", "sluice", *cli_args], env=env))
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
    return code or max((p.returncode or 0) for p in procs)
