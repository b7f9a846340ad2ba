"""Process and build helpers shared by the service scripts (kafkactl, registryctl, pgctl).

The scripts run as files (``python tools/kafka/kafkactl.py up``) and are loaded by tests with
``importlib``; each puts this folder on ``sys.path`` before importing this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child, stopped but not yet reaped, is reaped and not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # reaped between the two checks (ENOENT, or ESRCH while reading)
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def read_pid(pid_file: Path) -> int | None:
    """The pid written in ``pid_file`` if that process still runs, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def java(needed_by: str, error: type[Exception]) -> str:
    """The ``java`` executable (``$JAVA_HOME`` first), or ``error`` saying how to install one."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise error(
            f"Java is not installed: {needed_by} needs a JRE 17+ (apt-get install openjdk-17-jre-headless)"
        )
    return found


def maven(goals: list[str], cwd: Path, *, purpose: str, done, error: type[Exception]) -> None:
    """Run Maven quietly in ``cwd``; on failure print its last lines and raise ``error``.

    ``purpose`` completes "it is needed to ..." / "Maven could not ..." (e.g. "fetch the Kafka
    jars"); ``done()`` says whether the build produced what was wanted.
    """
    if shutil.which("mvn") is None:
        raise error(
            f"Maven (mvn) is not installed: it is needed to {purpose}; install it (apt-get install maven)"
        )
    proc = subprocess.run(["mvn", "-q", "-B", *goals], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0 or not done():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        print(tail, file=sys.stderr)
        raise error(
            f"Maven could not {purpose} (see the lines above); check the network and ~/.m2/settings.xml"
        )
