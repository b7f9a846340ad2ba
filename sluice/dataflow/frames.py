"""Micro-batches as DataFrames: polars, pandas or pyarrow, each an optional extra.

A frame is built from a list of values (dicts) or, for JSON sources, straight from the
records' bytes by the library's own NDJSON reader (no per-record Python dict). A hidden
column ``__sluice_row`` carries each row's position in the micro-batch so the rows the
user's function returns can be traced back to their input record (key, timestamp,
headers, offset). Output rows become JSON values, or NDJSON lines written by the
library when the next step only writes them to a topic.

Example:
    >>> frame = FrameKind.of("polars")
    >>> df = frame.from_values([{"a": 1}, {"a": 2}])
    >>> frame.rows(df.filter(df["a"] > 1), as_json=False)
    ([1], [{'a': 2}])
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sluice.errors import ConfigError

__all__ = ["ROW_COLUMN", "Frame", "FrameKind"]

ROW_COLUMN = "__sluice_row"
Frame = Literal["polars", "pandas", "arrow"]
_MODULES = {"polars": "polars", "pandas": "pandas", "arrow": "pyarrow"}
_EXTRAS = {"polars": "polars", "pandas": "pandas", "arrow": "arrow"}


class NotColumnar(Exception):
    """The batch's bytes could not be read as NDJSON by the frame library (malformed, not objects...)."""


@dataclass(frozen=True)
class FrameKind:
    """Conversions between records and one DataFrame library."""

    name: str
    lib: Any

    @classmethod
    def of(cls, frame: str) -> FrameKind:
        """Load the library of ``frame``; a clear error names the extra to install when it is missing."""
        if frame not in _MODULES:
            msg = f"frame={frame!r} must be one of 'polars', 'pandas', 'arrow'"
            raise ConfigError(msg)
        try:
            lib = importlib.import_module(_MODULES[frame])
        except ImportError as exc:
            msg = (
                f"map_batch(frame={frame!r}) needs {_MODULES[frame]}, which is not installed: "
                f"pip install 'sluice-streams[{_EXTRAS[frame]}]'"
            )
            raise ConfigError(msg) from exc
        return cls(frame, lib)

    # ------------------------------------------------------------------ in
    def from_values(self, values: list[Any]) -> Any:
        """A frame of ``values`` (dicts), with the hidden row column."""
        positions = list(range(len(values)))
        if self.name == "polars":
            return self.lib.DataFrame(values).with_columns(self.lib.Series(ROW_COLUMN, positions))
        if self.name == "pandas":
            df = self.lib.DataFrame.from_records(values)
            df[ROW_COLUMN] = positions
            return df
        table = self.lib.Table.from_pylist(values)
        return table.append_column(ROW_COLUMN, self.lib.array(positions))

    def from_ndjson(self, values: Iterable[bytes | None], count: int) -> Any:
        """A frame read by the library from ``count`` records' JSON bytes (one object per record).

        The bytes are joined and read by one call of the library's reader: no Python
        object per record. ``values`` may be a lazy iterable (``map(Message.value, msgs)``).

        Raises:
            NotColumnar: a value is not a JSON object (malformed, a tombstone, a scalar), or
                the reader refused the batch: the caller decodes record by record instead.

        Example:
            >>> FrameKind.of("polars").from_ndjson([b'{"a": 1}', b'{"a": 2}'], 2)["__sluice_row"].to_list()
            [0, 1]
            >>> FrameKind.of("polars").from_ndjson([b'{"a": 1}', None], 2)
            Traceback (most recent call last):
            ...
            sluice.dataflow.frames.NotColumnar: a record of the batch has no value (a tombstone): ...
        """
        try:
            data = b"\n".join(values)  # type: ignore[arg-type]  # a None raises: handled below
        except TypeError as exc:
            msg = f"a record of the batch has no value (a tombstone): {exc}"
            raise NotColumnar(msg) from exc
        try:
            if self.name == "polars":
                df = self.lib.read_ndjson(io.BytesIO(data))
            elif self.name == "pandas":
                df = self.lib.read_json(io.BytesIO(data), lines=True)
            else:
                import pyarrow.json as pa_json

                df = pa_json.read_json(io.BytesIO(data))
        except Exception as exc:
            raise NotColumnar(str(exc)) from exc
        if _height(self.name, df) != count:
            msg = f"{count} records gave {_height(self.name, df)} rows"
            raise NotColumnar(msg)
        if self.name == "polars":
            # a Series from a range is built natively, about 5x faster than from a list of ints
            return df.with_columns(self.lib.Series(ROW_COLUMN, range(count)))
        if self.name == "pandas":
            df[ROW_COLUMN] = range(count)
            return df
        return df.append_column(ROW_COLUMN, self.lib.array(range(count)))

    # ------------------------------------------------------------------ out
    def check(self, df: Any, fn_name: str) -> None:
        expected = {"polars": "DataFrame", "pandas": "DataFrame", "arrow": "Table"}[self.name]
        if type(df).__name__ != expected:
            msg = f"map_batch function {fn_name} returned {type(df).__name__}, not a {self.name} {expected}"
            raise TypeError(msg)

    def rows(self, df: Any, as_json: bool) -> tuple[list[int] | None, list[Any]]:
        """``(input positions or None, values)``: values are dicts, or NDJSON lines when ``as_json``."""
        name = self.name
        columns = list(df.columns) if name != "arrow" else df.column_names
        positions: list[int] | None = None
        if ROW_COLUMN in columns:
            if name == "polars":
                positions = df[ROW_COLUMN].to_list()
                df = df.drop(ROW_COLUMN)
            elif name == "pandas":
                positions = df[ROW_COLUMN].tolist()
                df = df.drop(columns=[ROW_COLUMN])
            else:
                positions = df.column(ROW_COLUMN).to_pylist()
                df = df.drop_columns([ROW_COLUMN])
        if as_json and name == "polars":
            # bytes split at once: no str line and no encode per row (JSON escapes newlines in strings)
            buffer = io.BytesIO()
            df.write_ndjson(buffer)
            lines = buffer.getvalue().split(b"\n")
            lines.pop()  # after the last newline
            return positions, lines
        if as_json and name == "pandas":
            text = df.to_json(orient="records", lines=True, date_format="iso")
            return positions, [line.encode() for line in text.split("\n") if line]
        if name == "polars":
            return positions, df.to_dicts()
        if name == "pandas":
            text = df.to_json(orient="records", date_format="iso")
            return positions, orjson.loads(text)
        rows = df.to_pylist()
        return positions, [orjson.dumps(row) for row in rows] if as_json else rows

    def column(self, df: Any, name: str) -> list[Any]:
        if self.name == "arrow":
            return df.column(name).to_pylist()
        return list(df[name].to_list() if self.name == "polars" else df[name].tolist())


def _height(name: str, df: Any) -> int:
    return df.num_rows if name == "arrow" else len(df)
