"""The JSON Lines sink: one line per record, appended, flushed and fsynced once per batch."""

from __future__ import annotations

import errno
import logging
import os
import string
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from sluice.dataflow.sinks import SinkRow
from sluice.errors import ConfigError
from sluice.sinks._errors import SinkError, SinkRowError, SinkUnavailableError, disk_unavailable
from sluice.sinks._schema import where

__all__ = ["JsonlSink"]

logger = logging.getLogger(__name__)

_FIELDS = ("topic", "partition")
_NEWLINE = orjson.OPT_APPEND_NEWLINE


def _template_fields(template: str) -> set[str]:
    try:
        return {
            field for _text, field, _spec, _conv in string.Formatter().parse(template) if field is not None
        }
    except ValueError as exc:
        msg = f"sinks.jsonl({template!r}): the path is not a valid template ({exc}); write e.g. 'out/{{topic}}-{{partition}}.jsonl'"
        raise ConfigError(msg) from exc


def _key_text(key: Any) -> Any:
    if isinstance(key, bytes | bytearray):
        return bytes(key).decode("utf-8", "backslashreplace")
    return key


class JsonlSink:
    """Appends each batch to JSON Lines files; see :func:`sluice.sinks.jsonl`."""

    def __init__(self, path: str | os.PathLike[str], *, envelope: bool = False) -> None:
        self.template = os.fspath(path)
        fields = _template_fields(self.template)
        unknown = sorted(fields - set(_FIELDS))
        if unknown:
            msg = (
                f"sinks.jsonl({self.template!r}): unknown template field {{{unknown[0]}}}; "
                "the path may use {topic} and {partition}"
            )
            raise ConfigError(msg)
        self.envelope = envelope
        self._templated = bool(fields)
        self._paths: dict[tuple[str, int], str] = {}
        self._files: dict[str, BinaryIO] = {}
        self._pid = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"sinks.jsonl({self.template!r})"

    def _path(self, topic: str, partition: int) -> str:
        path = self._paths.get((topic, partition))
        if path is None:
            path = self._paths[topic, partition] = self.template.format(topic=topic, partition=partition)
        return path

    def _file(self, path: str) -> BinaryIO:
        if self._pid != os.getpid():
            # files inherited through fork() belong to the parent
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(path)
        if f is None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            created = not target.exists()
            # unbuffered: a failed write leaves no bytes in a Python buffer that a later flush would append
            f = self._files[path] = open(target, "ab", buffering=0)  # noqa: SIM115 - closed in close()
            if created:
                # the new name must survive a crash too, not only the bytes
                fd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return f

    def _encode(self, rows: Sequence[SinkRow]) -> list[bytes]:
        dumps = orjson.dumps
        try:
            if self.envelope:
                return [
                    dumps(
                        {
                            "topic": r.topic,
                            "partition": r.partition,
                            "offset": r.offset,
                            "timestamp": r.timestamp,
                            "key": _key_text(r.key),
                            "value": r.value,
                        },
                        option=_NEWLINE,
                    )
                    for r in rows
                ]
            return [dumps(r.value, option=_NEWLINE) for r in rows]
        except orjson.JSONEncodeError:
            for r in rows:
                try:
                    dumps(r.value)
                except orjson.JSONEncodeError as exc:
                    msg = (
                        f"jsonl file {self._path(r.topic, r.partition)!r}: record {where(r)}: the value "
                        f"{r.value!r:.80} cannot be written as JSON ({exc}); turn it into JSON types with a map"
                    )
                    raise SinkRowError(msg) from exc
            raise

    def write_batch(self, rows: Sequence[SinkRow]) -> None:
        """Append ``rows``, one JSON line each; return once the file is flushed and fsynced.

        Raises:
            SinkRowError: a value cannot be encoded as JSON (nothing of the batch was written).
            SinkUnavailableError: the disk is full, failing or read-only (ENOSPC, EIO,
                EROFS...): no record is at fault; what was appended is cut off again and the
                files are opened anew on the next write.
            SinkError: a file could not be written (what was appended is cut off again).
        """
        if not rows:
            return
        lines = self._encode(rows)
        if self._templated:
            chunks: dict[str, list[bytes]] = {}
            for row, line in zip(rows, lines, strict=True):
                path = self._path(row.topic, row.partition)
                chunk = chunks.get(path)
                if chunk is None:
                    chunks[path] = [line]
                else:
                    chunk.append(line)
        else:
            chunks = {self.template: lines}
        with self._lock:
            written: list[tuple[BinaryIO, int]] = []
            try:
                for path, chunk in chunks.items():
                    f = self._file(path)
                    written.append((f, os.fstat(f.fileno()).st_size))
                    data = memoryview(b"".join(chunk))
                    while data:
                        n = f.write(data)
                        if not n:  # a regular file never takes nothing: do not spin
                            raise OSError(errno.EIO, f"writing {f.name} made no progress")
                        data = data[n:]
                    os.fsync(f.fileno())
            except OSError as exc:
                for f, size in written:
                    try:
                        if os.fstat(f.fileno()).st_size != size:
                            f.truncate(size)
                    except OSError:
                        logger.exception("jsonl: could not cut %s back to %d bytes", f.name, size)
                msg = f"jsonl sink {self.template!r}: writing {len(rows)} records failed: {exc}"
                if disk_unavailable(exc):
                    # the next write opens the files again: the disk may be remounted, the file replaced
                    self._close_files()
                    raise SinkUnavailableError(msg) from exc
                raise SinkError(msg) from exc

    def close(self) -> None:
        """Close the files (a later write opens them again, appending)."""
        with self._lock:
            self._close_files()

    def _close_files(self) -> None:
        files, self._files = self._files, {}
        if self._pid == os.getpid():
            for f in files.values():
                try:
                    f.close()
                except OSError:
                    logger.warning("jsonl: closing %s failed", f.name, exc_info=True)
