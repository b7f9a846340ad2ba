"""Run one contender in its own process: its throughput, its output's correctness, its peak RSS."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._kafka import BROKERS, OffsetWatch, Verdict, unique_name, verify_output

__all__ = ["ROOT", "Contender", "Result", "run_contender", "snapshot"]

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
    cpu_seconds: float
    exit_code: int
    child: dict
    stderr_tail: str

    def as_dict(self) -> dict:
        return asdict(self)


def snapshot(dest: Path, ref: str | None) -> str:
    """Copy ``sluice/`` and ``benchmarks/`` into ``dest`` (the contenders' working directory).

    The copy, first on the children's ``sys.path``, keeps every run of one benchmark on
    the same code while ``sluice/`` is being edited. ``ref``: take ``sluice/`` from that
    git commit instead of the working tree. Returns a description of what was copied.
    """
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.pyc", ".venv*", "target")
    shutil.copytree(ROOT / "benchmarks", dest / "benchmarks", ignore=ignore)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    if ref is None:
        shutil.copytree(ROOT / "sluice", dest / "sluice", ignore=ignore)
        dirty = git("status", "--porcelain", "--", "sluice")
        return f"working tree at {git('rev-parse', '--short', 'HEAD')}" + (
            " with uncommitted changes in sluice/" if dirty else ""
        )
    commit = git("rev-parse", "--short", ref)
    archive = subprocess.run(["git", "archive", commit, "sluice"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return f"commit {commit} ({git('log', '-1', '--format=%s', commit)})"


def _wait(pid: int, timeout: float) -> tuple[int, float] | None:
    """``(exit code, CPU seconds user+sys)`` of ``pid`` once it exits, or None after ``timeout``.

    (Its ``ru_maxrss`` is not used: Linux carries the parent's peak RSS into the child's.)
    """
    deadline = time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _vmhwm_mb(pid: int) -> float:
    """Peak RSS so far of a running process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


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
    cwd: Path = ROOT,
    verify: Callable[[str, int, set[int], str], Verdict] = verify_output,
    extra_args: list[str] | None = None,
) -> Result:
    """Start the contender, wait until its output topic holds every expected record, then verify it.

    The clock runs from the contender's first consumed record (reported by the child
    on the system-wide monotonic clock) to the moment the parent sees the output topic's
    end offsets reach the expected count (polled every ``WATCH_INTERVAL``), so the
    group join is excluded and the end is the last output written to Kafka.

    Peak RSS is the child's ``VmHWM``: reported by the child as it exits, and sampled
    by the parent while it runs (the larger is kept). ``verify`` checks the output topic
    (default: JSON records ``{"id", "page", "user"}``). ``extra_args`` are added to the
    contender's command line (e.g. ``["--pipeline", "heavy"]``).
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
    cmd += extra_args or []
    expected = len(expected_ids)
    watch = OffsetWatch(output_topic, partitions, brokers)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        reached: float | None = None
        exited: tuple[int, float] | None = None
        sampled_rss = 0.0
        while time.monotonic() - started < timeout:
            if watch.total() >= expected:
                reached = time.monotonic()
                break
            sampled_rss = max(sampled_rss, _vmhwm_mb(proc.pid))
            exited = _wait(proc.pid, 0)
            if exited is not None:
                break
            time.sleep(WATCH_INTERVAL)
        if exited is None:
            sampled_rss = max(sampled_rss, _vmhwm_mb(proc.pid))
            exited = _wait(proc.pid, 120 if reached else 0)
        if exited is None:
            proc.send_signal(signal.SIGTERM)
            exited = _wait(proc.pid, 30)
        if exited is None:
            proc.kill()
            exited = _wait(proc.pid, 30)
        exit_code, cpu = (-9, 0.0) if exited is None else exited
        proc.returncode = exit_code
        out.seek(0)
        err.seek(0)
        child: dict = {}
        for line in out.read().splitlines():
            try:
                child.update(json.loads(line))
            except ValueError:
                continue
        stderr_tail = "\n".join(err.read().splitlines()[-20:])
    verdict: Verdict = verify(output_topic, partitions, expected_ids, brokers)
    first = child.get("first_consumed")
    seconds = reached - first if reached is not None and first is not None else None
    rss = max(sampled_rss, child.get("peak_rss_mb") or 0.0)
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
        msg_per_s=(records - child.get("records_before_clock", 0)) / seconds if seconds else None,
        wall_seconds=(reached or time.monotonic()) - started,
        peak_rss_mb=rss,
        cpu_seconds=cpu,
        exit_code=exit_code,
        child=child,
        stderr_tail=stderr_tail,
    )
