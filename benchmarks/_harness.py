"""Run one contender in its own process: its throughput, its output's correctness, its peak RSS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._kafka import BROKERS, OffsetWatch, Verdict, unique_name, verify_output

__all__ = ["ROOT", "Contender", "Result", "run_contender"]

ROOT = Path(__file__).resolve().parent.parent

#: how often the parent asks the broker for the output topic's end offsets
WATCH_INTERVAL = 0.02


@dataclass(frozen=True)
class Contender:
    name: str
    module: str
    label: str


@dataclass
class Result:
    contender: str
    records: int
    expected_outputs: int
    ok: bool
    verdict: str
    seconds: float | None
    msg_per_s: float | None
    wall_seconds: float
    peak_rss_mb: float
    exit_code: int
    child: dict
    stderr_tail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _wait(pid: int, timeout: float) -> tuple[int, float] | None:
    """``(exit status, peak RSS in MiB)`` of ``pid`` once it exits, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def run_contender(
    contender: Contender,
    input_topic: str,
    output_topic: str,
    partitions: int,
    records: int,
    expected_ids: set[int],
    timeout: float,
    profile: str | None = None,
    brokers: str = BROKERS,
) -> Result:
    """Start the contender, wait until its output topic holds every expected record, then verify it.

    The clock runs from the contender's first consumed record (reported by the child
    on the system-wide monotonic clock) to the moment the parent sees the output topic's
    end offsets reach the expected count (polled every ``WATCH_INTERVAL``), so the
    group join is excluded and the end is the last output written to Kafka.
    """
    group = unique_name(f"bench-{contender.name}")
    cmd = [
        sys.executable,
        "-m",
        contender.module,
        "--brokers",
        brokers,
        "--input",
        input_topic,
        "--output",
        output_topic,
        "--group",
        group,
        "--records",
        str(records),
    ]
    if profile:
        cmd += ["--profile", profile]
    expected = len(expected_ids)
    watch = OffsetWatch(output_topic, partitions, brokers)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err)
        reached: float | None = None
        exited: tuple[int, float] | None = None
        while time.monotonic() - started < timeout:
            if watch.total() >= expected:
                reached = time.monotonic()
                break
            exited = _wait(proc.pid, 0)
            if exited is not None:
                break
            time.sleep(WATCH_INTERVAL)
        if exited is None:
            exited = _wait(proc.pid, 120 if reached else 0)
        if exited is None:
            proc.send_signal(signal.SIGTERM)
            exited = _wait(proc.pid, 30)
        if exited is None:
            proc.kill()
            exited = _wait(proc.pid, 30) or (-9, 0.0)
        proc.returncode = exited[0]
        out.seek(0)
        err.seek(0)
        child: dict = {}
        for line in out.read().splitlines():
            try:
                child.update(json.loads(line))
            except ValueError:
                continue
        stderr_tail = "\n".join(err.read().splitlines()[-20:])
    verdict: Verdict = verify_output(output_topic, partitions, expected_ids, brokers)
    first = child.get("first_consumed")
    seconds = reached - first if reached is not None and first is not None else None
    exit_code, rss = exited
    ok = verdict.ok and exit_code == 0 and child.get("consumed") == records
    text = verdict.describe()
    if exit_code != 0:
        text += f"; exit code {exit_code}"
    if child.get("consumed") != records:
        text += f"; consumed {child.get('consumed')} of {records}"
    return Result(
        contender=contender.name,
        records=records,
        expected_outputs=expected,
        ok=ok,
        verdict=text,
        seconds=seconds,
        msg_per_s=records / seconds if seconds else None,
        wall_seconds=(reached or time.monotonic()) - started,
        peak_rss_mb=rss,
        exit_code=exit_code,
        child=child,
        stderr_tail=stderr_tail,
    )
