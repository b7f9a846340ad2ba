"""Build, start and stop a Confluent-compatible Schema Registry on loopback, for tests and the demo.

The server is Apicurio Registry (in-memory storage) serving the Confluent API at
``/apis/ccompat/v7``, built by Maven from Maven Central jars (``tools/registry/pom.xml``
says why this version). Used by the Makefile (``make registry-up``, ``make registry-down``)
and by the test harness (``tests/serde/conftest.py`` imports it).

The URL clients use is written to ``.registry/url`` (``SLUICE_REGISTRY_HOME`` moves that
folder). The process is stopped by the pid this script recorded, never by name. A registry
that fails to start prints the tail of its log and the command exits non-zero with a
one-line error.

Usage::

    python tools/registry/registryctl.py fetch
    python tools/registry/registryctl.py up | down | status
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _processes import alive, java, maven, port_open, read_pid  # noqa: E402

ROOT = HERE.parent.parent
TARGET = HERE / "target"
RUNNER = TARGET / "sluice-schema-registry-1-runner.jar"
STATE = Path(os.environ.get("SLUICE_REGISTRY_HOME", ROOT / ".registry"))
HOST = "127.0.0.1"
PORT = int(os.environ.get("SLUICE_REGISTRY_PORT", "8081"))
API_PATH = "/apis/ccompat/v7"
START_TIMEOUT_S = float(os.environ.get("SLUICE_REGISTRY_START_TIMEOUT", "120"))

PID_FILE = STATE / "registry.pid"
LOG_FILE = STATE / "registry.log"
URL_FILE = STATE / "url"


class RegistryCtlError(Exception):
    """A failure with a message meant for a person; printed on one line."""


def url() -> str:
    """The Confluent-compatible base URL clients pass as ``schema.registry`` ``url``."""
    return f"http://{HOST}:{PORT}{API_PATH}"


def fetch() -> None:
    """Build the registry with Maven (once; again only when its pom or sources changed)."""
    sources = [HERE / "pom.xml", *(p for p in (HERE / "src").rglob("*") if p.is_file())]
    if RUNNER.exists() and (TARGET / "lib").is_dir():
        built = RUNNER.stat().st_mtime
        if all(p.stat().st_mtime <= built for p in sources):
            return
    print(
        "building the Schema Registry with Maven (first run only, about 130 MB of jars)...", file=sys.stderr
    )
    maven(
        ["package", "-DskipTests"],
        HERE,
        purpose="build the Schema Registry",
        done=RUNNER.exists,
        error=RegistryCtlError,
    )


def _java() -> str:
    return java("the Schema Registry", RegistryCtlError)


def _read_pid() -> int | None:
    return read_pid(PID_FILE)


_alive = alive


def _port_open() -> bool:
    return port_open(HOST, PORT)


def _answers() -> bool:
    try:
        with urllib.request.urlopen(f"{url()}/subjects", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(lines: int = 25) -> str:
    try:
        return "\n".join(LOG_FILE.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _wait_ready(timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not _answers():
        if _read_pid() is None:
            print(_log_tail(), file=sys.stderr)
            raise RegistryCtlError(
                f"the Schema Registry exited during startup (log: {LOG_FILE}; last lines above)"
            )
        if time.monotonic() > deadline:
            print(_log_tail(), file=sys.stderr)
            raise RegistryCtlError(
                f"the Schema Registry did not answer GET {url()}/subjects within {timeout:.0f}s (log: {LOG_FILE}); "
                f"raise SLUICE_REGISTRY_START_TIMEOUT on a slow machine"
            )
        time.sleep(0.3)


def up() -> str:
    """Start the registry (or reuse the running one); return its URL, also written to ``.registry/url``."""
    if _read_pid() is not None:
        _wait_ready()
        return url()
    fetch()
    java = _java()
    if _port_open():
        raise RegistryCtlError(
            f"port {HOST}:{PORT} is already in use by another process (not a registry started by this script); "
            f"stop it, or set SLUICE_REGISTRY_PORT to another port"
        )
    STATE.mkdir(parents=True, exist_ok=True)
    args = [
        java,
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Dquarkus.http.port={PORT}",
        f"-Dquarkus.http.host={HOST}",
        "-jar",
        str(RUNNER),
    ]
    env = dict(os.environ)
    env.pop("CLASSPATH", None)
    with open(LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    PID_FILE.write_text(str(proc.pid))
    _wait_ready()
    URL_FILE.write_text(url() + "\n")
    return url()


def down(timeout: float = 30.0) -> None:
    """Stop the registry this script started (its schemas are in memory: they go with it)."""
    pid = _read_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    URL_FILE.unlink(missing_ok=True)


def running() -> bool:
    """Whether a registry started by this script is alive."""
    return _read_pid() is not None


def status() -> str:
    pid = _read_pid()
    return f"Schema Registry {url()}: " + (f"running (pid {pid})" if pid else "stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registryctl", description=__doc__.splitlines()[0])
    parser.add_argument("cmd", choices=("fetch", "up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            fetch()
        elif args.cmd == "up":
            print(f"Schema Registry ready on {up()}")
        elif args.cmd == "down":
            down()
            print("Schema Registry stopped")
        else:
            print(status())
    except RegistryCtlError as exc:
        print(f"registryctl: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
