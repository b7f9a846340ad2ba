"""The Parquet sink: batches appended durably to a staging Arrow stream, turned into a Parquet file at each rotation.

A Parquet file is readable only once its footer is written, so a batch written as a
row group of an open Parquet file is not durable: a crash before the footer loses
it, after its offsets were committed. Instead each batch is appended to
``.staging/<stem>.arrows`` (Arrow IPC stream format: readable up to the last
complete batch even without its end) and fsynced. At rotation or close the staging
file becomes ``part-<stem>.parquet``: written under a temporary name, fsynced,
renamed, then the staging file is deleted. A staging file whose writer died is
converted by the next writer of the directory; its lock (``flock``, released by the
kernel when a process dies) tells orphans from files in use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.dataflow.sinks import SinkRow
from sluice.errors import ConfigError
from sluice.sinks._errors import SinkError, SinkUnavailableError, disk_unavailable
from sluice.sinks._schema import Column, Kind, Shape, infer_columns, kinds_from_schema, no_columns_error
from sluice.sinks._units import parse_size

__all__ = ["ParquetSink", "recover_staging"]

logger = logging.getLogger(__name__)

STAGING = ".staging"
_ARROW_TYPES: dict[Kind, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "str": pa.string(),
    "json": pa.string(),
    "bytes": pa.binary(),
}
_COMPRESSIONS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_in_message(exc: BaseException) -> bool:
    """Arrow's I/O errors carry the errno in their text only: ``[errno 28] No space left on device``."""
    text = str(exc)
    return any(f"[errno {code}]" in text.lower() for code in (28, 5, 30, 122))


def _parquet_path(staging: Path) -> Path:
    return staging.parent.parent / f"part-{staging.stem}.parquet"


def _convert(staging: Path, compression: str) -> Path | None:
    """Turn a staging Arrow stream into its Parquet file (idempotent); return the Parquet path, if any rows."""
    target = _parquet_path(staging)
    if target.exists():
        return target
    batches: list[pa.RecordBatch] = []
    schema = None
    try:
        with pa.memory_map(str(staging)) as source:
            reader = pa.ipc.open_stream(source)
            schema = reader.schema
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError):
                    # a batch torn by a crash: it was never acknowledged, so never committed
                    logger.warning("parquet: %s ends with an incomplete batch; it is dropped", staging)
                    break
    except (pa.ArrowInvalid, OSError):
        logger.warning("parquet: %s holds no complete batch; removed", staging)
    if schema is None or not batches:
        return None
    table = pa.Table.from_batches(batches, schema=schema)
    temporary = target.with_name(f".{target.name}.tmp")
    pq.write_table(table, temporary, compression=compression)
    with open(temporary, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(temporary, target)
    _fsync_dir(target.parent)
    return target


def recover_staging(directory: str | os.PathLike[str], compression: str = "zstd") -> list[Path]:
    """Turn the staging files left by dead writers of ``directory`` into Parquet files; return those files.

    Files still locked by a live writer are left alone.
    """
    staging_dir = Path(directory) / STAGING
    done: list[Path] = []
    if not staging_dir.is_dir():
        return done
    for path in sorted(staging_dir.iterdir()):
        if path.suffix not in (".arrows", ".new"):
            continue
        try:
            f = open(path, "rb")  # noqa: SIM115 - held for its lock, closed below
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            if not path.exists():
                continue  # converted by another process meanwhile
            if path.suffix == ".arrows":
                converted = _convert(path, compression)
                if converted is not None:
                    logger.info(
                        "parquet: recovered %s from a stopped writer into %s", path.name, converted.name
                    )
                    done.append(converted)
            path.unlink(missing_ok=True)
            _fsync_dir(staging_dir)
        finally:
            f.close()
    return done


@dataclass
class _Stage:
    path: Path
    file: BinaryIO
    writer: pa.ipc.RecordBatchStreamWriter
    size: int = 0


class ParquetSink:
    """Writes batches to rotated Parquet files; see :func:`sluice.sinks.parquet`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        rotate: str | int = "100MB",
        schema: Mapping[str, Any] | None = None,
        compression: str = "zstd",
    ) -> None:
        label = f"sinks.parquet({os.fspath(directory)!r})"
        self.directory = Path(directory)
        self.rotate = parse_size(rotate, "rotate")
        if compression not in _COMPRESSIONS:
            msg = f"{label}: compression={compression!r} must be one of {', '.join(_COMPRESSIONS)}"
            raise ConfigError(msg)
        self.compression = compression
        self.schema = kinds_from_schema(schema, label) if schema is not None else None
        if self.schema is not None and any(kind == "any" for _name, kind in self.schema):
            msg = f"{label}: schema types must be int, float, bool, str, dict, list or bytes ('any' has no Parquet type)"
            raise ConfigError(msg)
        self.table = str(self.directory)
        self._shape: Shape | None = None
        self._arrow_schema: pa.Schema | None = None
        self._json: list[int] = []
        self._stage: _Stage | None = None
        self._pid = 0
        #: a staging file was abandoned on a failing disk: recover it on the next write
        self._recover = False
        self._lock = threading.Lock()
        self.files: list[Path] = []

    def __repr__(self) -> str:
        return f"sinks.parquet({str(self.directory)!r}, rotate={self.rotate})"

    # ------------------------------------------------------------------ schema
    def _open_shape(self, rows: Sequence[SinkRow]) -> Shape:
        columns = self.schema
        if columns is None:
            columns = infer_columns([r.value for r in rows], ())
            if columns is None:
                raise no_columns_error("parquet", self.table, rows, ())
        shape = Shape(
            "parquet",
            self.table,
            [Column(n, k, str(_ARROW_TYPES[k]).upper()) for n, k in columns],
            (),
            label=f"parquet files in {self.table!r}",
        )
        self._arrow_schema = pa.schema(
            [
                pa.field(n, _ARROW_TYPES[k], metadata={"sluice.type": "json"} if k == "json" else None)
                for n, k in columns
            ]
        )
        self._json = [i for i, (_n, k) in enumerate(columns) if k == "json"]
        return shape

    # ------------------------------------------------------------------ staging files
    def _open_stage(self) -> _Stage:
        assert self._arrow_schema is not None
        staging_dir = self.directory / STAGING
        staging_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        new = staging_dir / f"{stem}.new"
        f = open(new, "wb")  # noqa: SIM115 - the stage's file, closed when the stage is finished
        # locked before it gets the name other writers' recovery looks for
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        path = new.with_suffix(".arrows")
        os.replace(new, path)
        _fsync_dir(staging_dir)
        writer = pa.ipc.new_stream(f, self._arrow_schema)
        return _Stage(path, f, writer)

    def _finish_stage(self) -> None:
        stage, self._stage = self._stage, None
        if stage is None:
            return
        try:
            with contextlib.suppress(pa.ArrowException, OSError, ValueError):
                stage.writer.close()
                stage.file.flush()
            target = _convert(stage.path, self.compression)
            if target is not None:
                self.files.append(target)
                logger.info("parquet: wrote %s (%d bytes staged)", target, stage.size)
            stage.path.unlink(missing_ok=True)
            _fsync_dir(stage.path.parent)
        finally:
            stage.file.close()

    # ------------------------------------------------------------------ writing
    def _record_batch(self, shape: Shape, rows: Sequence[SinkRow]) -> pa.RecordBatch:
        cols = list(shape.check(rows)[1])
        if self._json:
            dumps = orjson.dumps
            for index in self._json:
                cols[index] = [None if v is None else dumps(v).decode() for v in cols[index]]
        assert self._arrow_schema is not None
        try:
            arrays = [pa.array(col, type=f.type) for col, f in zip(cols, self._arrow_schema, strict=True)]
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise shape.explain(rows, cols, exc, nul_in_text=False) or SinkError(
                f"parquet files in {self.table!r}: the batch of {len(rows)} rows cannot be converted to Arrow: {exc}"
            ) from exc
        return pa.RecordBatch.from_arrays(arrays, schema=self._arrow_schema)

    def write_batch(self, rows: Sequence[SinkRow]) -> None:
        """Append ``rows`` to the staging file and fsync it; rotate to a Parquet file past ``rotate`` bytes.

        Raises:
            SinkRowError: a record does not fit the columns (nothing of the batch was written).
            SinkUnavailableError: the disk is full, failing or read-only (ENOSPC, EIO,
                EROFS...): no record is at fault; the staging file is closed and turned
                into its Parquet file by the next write.
            SinkError: the file could not be written (what was appended is cut off again).
        """
        if not rows:
            return
        with self._lock:
            if self._pid != os.getpid() or self._recover:
                # the staging file of a parent process (fork), or ours abandoned on a full disk
                if self._pid != os.getpid():
                    self._stage, self._pid = None, os.getpid()
                try:
                    self.files.extend(recover_staging(self.directory, self.compression))
                except OSError as exc:
                    if disk_unavailable(exc) or _disk_in_message(exc):
                        raise self._unavailable(exc, len(rows)) from exc
                    raise
                self._recover = False
            if self._shape is None:
                self._shape = self._open_shape(rows)
            batch = self._record_batch(self._shape, rows)
            stage = self._stage
            if stage is None:
                try:
                    stage = self._stage = self._open_stage()
                except OSError as exc:
                    if disk_unavailable(exc):
                        raise self._unavailable(exc, len(rows)) from exc
                    raise
            before = stage.file.tell()
            try:
                stage.writer.write_batch(batch)
                stage.file.flush()
                os.fsync(stage.file.fileno())
            except (OSError, pa.ArrowException) as exc:
                with contextlib.suppress(OSError):
                    stage.file.truncate(before)
                    stage.file.seek(before)
                if disk_unavailable(exc) or _disk_in_message(exc):
                    # converting now would meet the same full disk: the next write recovers the file
                    self._abandon_stage()
                    raise self._unavailable(exc, len(rows)) from exc
                # the stream writer's state is unknown after a failed write: start a new file
                self._finish_stage()
                msg = f"parquet files in {self.table!r}: writing {len(rows)} rows failed, nothing written: {exc}"
                raise SinkError(msg) from exc
            stage.size = stage.file.tell()
            if stage.size >= self.rotate:
                self._finish_stage()

    def _abandon_stage(self) -> None:
        """Close the staging file without converting it (the disk is full); the next write recovers it."""
        stage, self._stage = self._stage, None
        self._recover = True
        if stage is None:
            return
        for close in (stage.writer.close, stage.file.close):
            try:
                close()
            except (OSError, pa.ArrowException, ValueError):
                logger.debug("parquet: closing %s on a failing disk failed", stage.path, exc_info=True)

    def _unavailable(self, exc: BaseException, rows: int) -> SinkUnavailableError:
        return SinkUnavailableError(
            f"parquet files in {self.table!r}: the disk is unavailable, {rows} rows not written: {exc}"
        )

    def close(self) -> None:
        """Turn the current staging file into its Parquet file."""
        with self._lock:
            if self._pid == os.getpid():
                self._finish_stage()
            self._stage = None
