"""Logging of ``sluice run``: ``--log-format text|json`` and ``--log-level``.

The JSON format writes one object per line, for log shippers: ``ts`` (ISO 8601,
UTC), ``level``, ``logger``, ``pid``, ``worker`` (with ``--workers``), ``message``
and, for errors, ``exception`` (the traceback).

Example:
    >>> import logging
    >>> record = logging.LogRecord("sluice.runtime", logging.INFO, "x.py", 1, "assigned %s", ("t[0]",), None)
    >>> line = JsonFormatter().format(record)
    >>> import json; json.loads(line)["message"], json.loads(line)["level"]
    ('assigned t[0]', 'info')
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Literal

import orjson

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per log record."""

    def __init__(self) -> None:
        super().__init__()
        worker = os.environ.get("SLUICE_WORKER_INDEX")
        self.worker = int(worker) if worker and worker.isdigit() else None

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, fmt: Literal["text", "json"] | str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt``; librdkafka's own log lines only from warnings up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_sluice", False):
            root.removeHandler(old)
    handler._sluice = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("sluice.kafka.librdkafka").setLevel(max(logging.WARNING, root.level))
