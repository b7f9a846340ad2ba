"""Install, start and stop a throwaway PostgreSQL server on loopback, for tests, benchmarks and demos.

Used by the Makefile (``make postgres-up`` / ``make postgres-down``) and by the test
harness (``tests/sinks/conftest.py`` imports it to stop and restart the server).
Standard library only.

- ``up``: installs the Debian package ``postgresql`` when no ``initdb`` is found (as
  root, with apt-get), creates a fresh data directory under ``.postgres/`` (or
  ``SLUICE_PG_HOME``; in the temporary directory when the repository sits where the
  ``postgres`` user cannot reach it) (trust
  authentication: for local tests only), starts the server on ``127.0.0.1:25432``
  (``SLUICE_PG_PORT``), waits until it accepts connections and prints its DSN. A
  server already started by this script is reused.
- ``stop`` / ``start``: stop the server (fast shutdown) keeping its data / start it
  again on that data (the tests use them to take the database away mid-stream).
- ``down``: stop it and delete its data directory.

Every process is stopped by the pid this script recorded, never by name. As root, the
server runs as the ``postgres`` system user (PostgreSQL refuses to run as root).

Usage::

    python tools/postgres/pgctl.py up | down | stop | start | status | dsn
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _processes import alive, port_open  # noqa: E402
from _processes import read_pid as _read_pid  # noqa: E402

ROOT = HERE.parent.parent
HOST = "127.0.0.1"
# below the ephemeral port range (32768-60999), where a client socket could hold it
PORT = int(os.environ.get("SLUICE_PG_PORT", "25432"))
USER = "postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class PgCtlError(Exception):
    """A failure with a message meant for a person; printed on one line."""


def dsn() -> str:
    """The connection string of the server this script runs."""
    return f"postgresql://{USER}@{HOST}:{PORT}/postgres"


def data_dir() -> Path:
    return HOME / "data"


def pid_file() -> Path:
    return HOME / "postgres.pid"


def log_file() -> Path:
    return HOME / "postgres.log"


# --------------------------------------------------------------------------- binaries


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.parent.name))


def bin_dir(install: bool = True) -> Path:
    """The folder holding ``initdb`` and ``postgres``; installs PostgreSQL when missing and allowed."""
    given = os.environ.get("SLUICE_PG_BIN")
    if given:
        if not (Path(given) / "initdb").exists():
            raise PgCtlError(f"SLUICE_PG_BIN={given} has no initdb; point it at PostgreSQL's bin folder")
        return Path(given)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path and (Path(on_path).resolve().parent / "postgres").exists():
        return Path(on_path).resolve().parent
    if not install:
        raise PgCtlError("PostgreSQL is not installed (no initdb found); run: make postgres-up")
    _install()
    return bin_dir(install=False)


def _install() -> None:
    if shutil.which("apt-get") is None:
        raise PgCtlError(
            "PostgreSQL is not installed and apt-get is not available: install PostgreSQL "
            "(initdb, postgres) and set SLUICE_PG_BIN to its bin folder"
        )
    if os.geteuid() != 0:
        raise PgCtlError(
            "PostgreSQL is not installed: run `sudo apt-get install -y postgresql` once, then retry"
        )
    print("installing PostgreSQL from Debian packages (first run only)...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        proc = subprocess.run(args, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            print(tail, file=sys.stderr)
            raise PgCtlError(f"`{' '.join(args)}` failed (exit {proc.returncode}; last lines above)")


# --------------------------------------------------------------------------- processes


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        raise PgCtlError(
            f"running as root, but there is no '{USER}' system user to run PostgreSQL as "
            "(the Debian package creates it: apt-get install postgresql)"
        ) from None


def _as_user(account: pwd.struct_passwd | None) -> dict:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


_alive = alive


def read_pid() -> int | None:
    """The pid of the running server started by this script, or None."""
    return _read_pid(pid_file())


def _port_open(port: int) -> bool:
    return port_open(HOST, port)


def _log_tail(lines: int = 20) -> str:
    try:
        return "\n".join(log_file().read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _chown_tree(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is None:
        return
    for p in [path, *path.rglob("*")]:
        os.chown(p, account.pw_uid, account.pw_gid)


def _reachable_by(path: Path, account: pwd.struct_passwd | None) -> bool:
    """Whether ``account`` can traverse every folder above ``path`` (a CI clone may sit in a 0700 folder)."""
    if account is None:
        return True
    for parent in path.resolve().parents:
        st = parent.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == account.pw_uid and st.st_mode & 0o100)):
            return False
    return True


def _default_home() -> Path:
    """``.postgres/`` in the repository, or, when the ``postgres`` user cannot reach it (a clone
    inside a private folder), a folder of the system's temporary directory named after the clone."""
    given = os.environ.get("SLUICE_PG_HOME")
    if given:
        return Path(given)
    home = ROOT / ".postgres"
    if os.geteuid() != 0:
        return home
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        return home
    if _reachable_by(home, account):
        return home
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"sluice-postgres-{digest}"


HOME = _default_home()


def _initdb(binaries: Path, account: pwd.struct_passwd | None) -> None:
    data = data_dir()
    if data.exists():
        shutil.rmtree(data)
    if not _reachable_by(HOME, account):
        raise PgCtlError(
            f"the '{USER}' user cannot reach {HOME} (a parent folder is not searchable by it); "
            "set SLUICE_PG_HOME to a folder it can reach, e.g. /tmp/sluice-postgres"
        )
    data.mkdir(parents=True, mode=0o700)
    _chown_tree(data, account)
    proc = subprocess.run(
        [
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        cwd=data,
        **_as_user(account),
    )
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr).strip()[-2000:], file=sys.stderr)
        raise PgCtlError(f"initdb of {data} failed (exit {proc.returncode}; output above)")


def _check_port_free() -> None:
    if _port_open(PORT):
        raise PgCtlError(
            f"port {HOST}:{PORT} is already in use by another process (not a server started by this script); "
            "stop it, or set SLUICE_PG_PORT to another port"
        )


def _launch(binaries: Path, account: pwd.struct_passwd | None) -> int:
    _check_port_free()
    settings = {
        "listen_addresses": HOST,
        "port": str(PORT),
        "unix_socket_directories": "",
        "max_connections": "100",
        "shared_buffers": "128MB",
        "logging_collector": "off",
    }
    args = [str(binaries / "postgres"), "-D", str(data_dir())]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    with open(log_file(), "ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=data_dir(),
            start_new_session=True,
            **_as_user(account),
        )
    pid_file().write_text(str(proc.pid))
    return proc.pid


def _wait_ready(binaries: Path, pid: int, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not _alive(pid):
            print(_log_tail(), file=sys.stderr)
            raise PgCtlError(f"PostgreSQL exited during startup (log: {log_file()}; last lines above)")
        ready = subprocess.run(
            [str(binaries / "pg_isready"), "-q", "-h", HOST, "-p", str(PORT), "-U", USER, "-t", "1"],
            capture_output=True,
        )
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            print(_log_tail(), file=sys.stderr)
            raise PgCtlError(
                f"PostgreSQL did not accept connections on {HOST}:{PORT} within {timeout:.0f}s (log: {log_file()})"
            )
        time.sleep(0.2)


# --------------------------------------------------------------------------- commands


def up() -> str:
    """Start a fresh server (or reuse the running one); return its DSN."""
    pid = read_pid()
    if pid is not None:
        _wait_ready(bin_dir(install=False), pid)
        return dsn()
    _check_port_free()
    binaries = bin_dir()
    account = _run_as()
    HOME.mkdir(parents=True, exist_ok=True)
    _initdb(binaries, account)
    pid = _launch(binaries, account)
    _wait_ready(binaries, pid)
    return dsn()


def start() -> str:
    """Start the server again on its existing data (after ``stop``); return its DSN."""
    pid = read_pid()
    binaries = bin_dir(install=False)
    if pid is None:
        if not (data_dir() / "PG_VERSION").exists():
            raise PgCtlError(f"no PostgreSQL data in {data_dir()}; run `pgctl.py up` first")
        pid = _launch(binaries, _run_as())
    _wait_ready(binaries, pid)
    return dsn()


def stop(mode: str = "fast", timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the server by its pid: ``fast`` (SIGINT: abort sessions, clean shutdown) or ``immediate``."""
    pid = read_pid()
    if pid is None:
        pid_file().unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    pid_file().unlink(missing_ok=True)


def down() -> None:
    """Stop the server and delete its data."""
    stop()
    shutil.rmtree(data_dir(), ignore_errors=True)
    log_file().unlink(missing_ok=True)
    if HOME.name.startswith("sluice-postgres-") and HOME.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(HOME, ignore_errors=True)


def status() -> str:
    pid = read_pid()
    state = f"running (pid {pid})" if pid else "stopped"
    return f"PostgreSQL {HOST}:{PORT} ({data_dir()}): {state}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgctl", description=__doc__.splitlines()[0])
    parser.add_argument("cmd", choices=("up", "down", "stop", "start", "status", "dsn"))
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            print(f"PostgreSQL ready: {up()}")
        elif args.cmd == "start":
            print(f"PostgreSQL ready: {start()}")
        elif args.cmd == "stop":
            stop()
            print("PostgreSQL stopped (data kept)")
        elif args.cmd == "down":
            down()
            print("PostgreSQL stopped")
        elif args.cmd == "status":
            print(status())
        elif args.cmd == "dsn":
            print(dsn())
    except PgCtlError as exc:
        print(f"pgctl: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
