from __future__ import annotations

import subprocess
import sys

from sluice import __version__


def test_cli_version_and_help():
    version = subprocess.run([sys.executable, "-m", "sluice", "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.strip() == f"sluice, version {__version__}"
    help_ = subprocess.run([sys.executable, "-m", "sluice", "--help"], capture_output=True, text=True)
    assert help_.returncode == 0
    assert "stream processing on Apache Kafka" in help_.stdout
