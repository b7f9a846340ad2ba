"""One contender process: start, watch its process tree's memory, stop, collect its report."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Finished", "Running"]

#: how often the process tree is re-listed (the RSS of known processes is read on every sample)
TREE_INTERVAL = 0.5


def _status_kb(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


@dataclass
class Finished:
    """What a contender process left: exit code, CPU, memory, its JSON lines, its stderr tail."""

    exit_code: int
    cpu_seconds: float
    peak_rss_mb: float
    child: dict
    first_consumed: float | None
    stderr_tail: str
    stopped_by_harness: bool

    @property
    def clean_exit(self) -> bool:
        """0, or the SIGTERM the harness sent (frameworks that exit by the signal's default)."""
        return self.exit_code == 0 or (self.stopped_by_harness and self.exit_code in (-15, 143))


@dataclass
class Running:
    """A started contender; ``sample()`` it while it runs, then ``stop()`` it."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # both live as long as the process and are closed by stop()
        self._out = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdout=self._out,
            stderr=self._err,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        self._pids = [self.proc.pid]
        self._listed = 0.0
        self.peak_rss_kb = 0
        self._stopped = False
        self._exit: tuple[int, float] | None = None

    def sample(self) -> None:
        """Note the process tree's resident memory (sum of ``VmRSS``; the peak is kept)."""
        now = time.monotonic()
        if now - self._listed >= TREE_INTERVAL:
            self._pids = _tree(self.proc.pid)
            self._listed = now
        total = sum(_status_kb(p, "VmRSS:") for p in self._pids)
        own_peak = _status_kb(self.proc.pid, "VmHWM:") if len(self._pids) == 1 else 0
        self.peak_rss_kb = max(self.peak_rss_kb, total, own_peak)

    def exited(self) -> bool:
        if self._exit is None:
            got, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if got == self.proc.pid:
                self._exit = (os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)
                self.proc.returncode = self._exit[0]
        return self._exit is not None

    def child_lines(self) -> list[dict]:
        """The JSON lines the contender printed so far."""
        self._out.flush()
        self._out.seek(0)
        lines = []
        for line in self._out.read().splitlines():
            with contextlib.suppress(ValueError):  # a line may start with terminal codes (Faust's spinner)
                value = json.loads(line[line.find("{") :])
                if isinstance(value, dict):
                    lines.append(value)
        self._out.seek(0, os.SEEK_END)
        return lines

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            self.sample()
            time.sleep(0.05)
        return True

    def stop(self, self_exit: bool, grace: float = 60.0) -> Finished:
        """Let it exit by itself (``self_exit``) or SIGTERM it; kill its whole session after ``grace``."""
        if not self.exited() and self_exit:
            self._wait(grace)
        if not self.exited():
            self._stopped = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            self._wait(grace)
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._wait(30)
        with contextlib.suppress(ProcessLookupError):  # workers a crashed supervisor left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        code, cpu = self._exit or (-9, 0.0)
        lines = self.child_lines()
        child: dict = {}
        for line in lines:
            child.update(line)
        firsts = [line["first_consumed"] for line in lines if "first_consumed" in line]
        self._err.seek(0)
        tail = "\n".join(self._err.read().splitlines()[-15:])
        self._out.close()
        self._err.close()
        reported = child.get("peak_rss_mb") or 0.0
        return Finished(
            exit_code=code,
            cpu_seconds=cpu,
            peak_rss_mb=max(self.peak_rss_kb / 1024, reported),
            child=child,
            first_consumed=min(firsts) if firsts else None,
            stderr_tail=tail,
            stopped_by_harness=self._stopped,
        )
