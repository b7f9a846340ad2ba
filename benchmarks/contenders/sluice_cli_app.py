"""The sluice contender as a module for ``sluice run benchmarks.contenders.sluice_cli_app:app --workers N``.

The CLI imports ``app`` from here in the supervisor and in every worker, so the
configuration comes from the environment: ``SLUICE_BENCH_SCENARIO`` (stateless |
windowed | io), ``SLUICE_BENCH_BROKERS``, ``_INPUT``, ``_OUTPUT``, ``_GROUP`` and
``_CONCURRENCY``. Each worker prints ``{"first_consumed": t}`` when its first batch
went through the graph (the harness keeps the earliest); the harness stops the
supervisor with SIGTERM once the output is complete.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from benchmarks.contenders import report_first, sluice_io, sluice_pipeline, sluice_windowed
from sluice import App

BUILDERS = {"stateless": sluice_pipeline.build, "windowed": sluice_windowed.build, "io": sluice_io.build}


def _first_consumed(app: App) -> None:
    while app.stats is None or app.stats.records_in == 0:
        time.sleep(0.001)
    report_first()


def _app_from_env() -> App:
    env = os.environ
    args = argparse.Namespace(
        brokers=env.get("SLUICE_BENCH_BROKERS", "127.0.0.1:9092"),
        input=env.get("SLUICE_BENCH_INPUT", "sluice-bench-unset"),
        output=env.get("SLUICE_BENCH_OUTPUT", "sluice-bench-unset-out"),
        group=env.get("SLUICE_BENCH_GROUP", "sluice-bench-unset"),
        concurrency=int(env.get("SLUICE_BENCH_CONCURRENCY", "64")),
        pipeline="light",  # sluice_pipeline.build reads it (--pipeline heavy is not run with --workers)
    )
    built = BUILDERS[env.get("SLUICE_BENCH_SCENARIO", "stateless")](args)
    if "SLUICE_WORKER_INDEX" in env:
        threading.Thread(target=_first_consumed, args=(built,), daemon=True).start()
    return built


app = _app_from_env()
