"""Helpers to run sluice apps in tests: in a thread (semantics) or as a real process (faults)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sluice import App

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def running(app: App, ready_timeout: float = 30.0) -> Iterator[dict]:
    """Run ``app`` in a thread; stop it gracefully on exit. Yields a dict that gets 'result' or 'error'."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = app.run(install_signal_handlers=False)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        if not app.wait_ready(ready_timeout) and "error" not in outcome:
            raise TimeoutError(f"app {app.name} got no partitions within {ready_timeout}s")
        yield outcome
    finally:
        app.stop()
        thread.join(60)
        assert not thread.is_alive(), "app did not stop within 60s"


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition", outcome=None):
    """Poll ``predicate`` until true; fail at once if the app of ``outcome`` (from ``running``) died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if outcome and "error" in outcome:
            raise AssertionError(f"the app failed while waiting for {what}") from outcome["error"]
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s")


class AppProcess:
    """A ``sluice run`` process of an app module written to ``folder``."""

    def __init__(self, folder: Path, module: str, workers: int = 1, log_name: str | None = None):
        self.folder = folder
        self.module = module
        self.log_path = folder / (log_name or f"{module}-{time.monotonic_ns()}.log")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "run", f"{module}:app", "--workers", str(workers)],
            cwd=folder,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def write_app(folder: Path, module: str, source: str) -> str:
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return module
