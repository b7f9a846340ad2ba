"""Tables from records: columns inferred from the first row or given, batches checked column by column.

A batch is checked and turned into columns with C-level passes (``map``, ``set``,
``zip``) rather than a Python loop per field: the per-record cost stays close to a
hand-written ``executemany`` loop. Only when a check fails does a slow pass look for
the first record at fault, to name it.

Example:
    >>> from sluice.dataflow.sinks import SinkRow
    >>> rows = [SinkRow({"id": 1, "page": "/a", "tags": ["x"]}, None, "clicks", 0, 7, 0, None)]
    >>> columns = infer_columns([r.value for r in rows], ("id",))
    >>> columns
    [('id', 'int'), ('page', 'str'), ('tags', 'json')]
    >>> shape = Shape("sqlite", "clicks", [Column(n, k, k.upper()) for n, k in columns], ("id",))
    >>> shape.columns(rows)
    [[1], ['/a'], [['x']]]
    >>> shape.columns([rows[0]._replace(value={"id": "one"})])
    Traceback (most recent call last):
    ...
    sluice.errors.SinkRowError: sqlite table 'clicks': record clicks[0]@7: field 'id' = 'one' (str) does not fit column 'id' INT; fix the record with a map before the sink, or change the column
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal

from sluice.dataflow.sinks import SinkRow
from sluice.errors import ConfigError
from sluice.sinks._errors import SinkRowError

__all__ = [
    "KINDS",
    "Column",
    "Kind",
    "Shape",
    "describe",
    "infer_columns",
    "kind_of",
    "kinds_from_schema",
    "last_per_key",
    "no_columns_error",
    "where",
]

Kind = Literal["int", "float", "bool", "str", "json", "bytes", "any"]
KINDS: tuple[Kind, ...] = ("int", "float", "bool", "str", "json", "bytes", "any")

_NONE = type(None)
_KIND_OF_TYPE: dict[type, Kind] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    dict: "json",
    list: "json",
    bytes: "bytes",
}
_ACCEPTED: dict[str, frozenset[type]] = {
    "int": frozenset({int, _NONE}),
    "float": frozenset({float, int, _NONE}),
    "bool": frozenset({bool, _NONE}),
    "str": frozenset({str, _NONE}),
    "json": frozenset({dict, list, _NONE}),
    "bytes": frozenset({bytes, _NONE}),
}
_SCHEMA_TYPES: dict[Any, Kind] = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "str",
    dict: "json",
    list: "json",
    bytes: "bytes",
}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def kind_of(value: Any) -> Kind | None:
    """The column kind a Python value belongs to (``None`` for ``None`` and unknown types).

    Example:
        >>> [kind_of(v) for v in (1, 1.5, True, "a", {"a": 1}, [1], b"x", None)]
        ['int', 'float', 'bool', 'str', 'json', 'json', 'bytes', None]
    """
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is not None or value is None:
        return kind
    for types, subclass_kind in (
        (bool, "bool"),
        (int, "int"),
        (float, "float"),
        (str, "str"),
        ((Mapping, list, tuple), "json"),
        ((bytes, bytearray, memoryview), "bytes"),
    ):
        if isinstance(value, types):
            return subclass_kind  # type: ignore[return-value]
    return None


def _fits(kind: str, value: Any) -> bool:
    if value is None or kind == "any":
        return True
    found = kind_of(value)
    return found == kind or (kind == "float" and found == "int")


def kinds_from_schema(schema: Mapping[str, Any], where: str) -> list[tuple[str, Kind]]:
    """Check a user's ``schema={"id": int, ...}`` (Python types or kind names) and return its columns.

    Example:
        >>> kinds_from_schema({"id": int, "tags": list, "price": "float"}, "sqlite")
        [('id', 'int'), ('tags', 'json'), ('price', 'float')]
        >>> kinds_from_schema({"id": set}, "sqlite")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: sqlite: schema={'id': <class 'set'>}: the type of 'id' must be one of int, float, bool, str, dict, list, bytes (or 'int', 'float', 'bool', 'str', 'json', 'bytes', 'any')
    """
    if not isinstance(schema, Mapping) or not schema:
        msg = f"{where}: schema={schema!r} must be a non-empty dict of field name -> type, e.g. {{'id': int}}"
        raise ConfigError(msg)
    out: list[tuple[str, Kind]] = []
    for name, spec in schema.items():
        if not isinstance(name, str) or not name:
            msg = f"{where}: schema={dict(schema)!r}: field names must be non-empty strings, not {name!r}"
            raise ConfigError(msg)
        kind = spec if isinstance(spec, str) and spec in KINDS else _SCHEMA_TYPES.get(spec)
        if kind is None:
            msg = (
                f"{where}: schema={dict(schema)!r}: the type of {name!r} must be one of "
                "int, float, bool, str, dict, list, bytes (or 'int', 'float', 'bool', 'str', 'json', 'bytes', 'any')"
            )
            raise ConfigError(msg)
        out.append((name, kind))
    return out


def infer_columns(values: Sequence[Any], key: tuple[str, ...]) -> list[tuple[str, Kind]] | None:
    """The columns of a new table: the fields of the first row that has the key, typed from the batch.

    A field's kind is the kind of its first non-null value in the batch; a field that
    holds ints and floats is ``float``; a field null everywhere is ``str``. Returns
    ``None`` when no row is a dict with every key field set.

    Example:
        >>> infer_columns([{"id": 1, "x": None, "y": 2}, {"id": 2, "x": True, "y": 2.5}], ("id",))
        [('id', 'int'), ('x', 'bool'), ('y', 'float')]
        >>> infer_columns(["not a dict", {"x": 1}], ("id",)) is None
        True
    """
    first_index = next(
        (
            i
            for i, v in enumerate(values)
            if isinstance(v, Mapping) and all(v.get(k) is not None for k in key)
        ),
        None,
    )
    if first_index is None:
        return None
    rows = [v for v in values[first_index:] if isinstance(v, Mapping)]
    columns: list[tuple[str, Kind]] = []
    for name in rows[0]:
        if not isinstance(name, str) or not name:
            continue
        kind: Kind | None = None
        for row in rows:
            found = kind_of(row.get(name))
            if found is None:
                continue
            if kind is None:
                kind = found
            elif kind == "int" and found == "float":
                kind = "float"
                break
            elif kind != "int":
                break
        columns.append((name, kind or "str"))
    return columns


def no_columns_error(sink: str, table: str, rows: Sequence[SinkRow], key: tuple[str, ...]) -> SinkRowError:
    """The error for a batch none of whose records can define a new table (see ``infer_columns``)."""
    row = rows[0]
    value = row.value
    if not isinstance(value, Mapping):
        text = _not_a_dict(value)
    else:
        missing = next((k for k in key if value.get(k) is None), None)
        text = (
            f"no key field {missing!r} (fields: {', '.join(map(str, value)) or 'none'}); an upsert needs it"
        )
    return SinkRowError(
        f"{sink} table {table!r} does not exist and record {where(row)} cannot define its columns: {text}"
    )


def where(row: SinkRow) -> str:
    """Where a record came from, as the runtime's messages write it: ``topic[partition]@offset``."""
    return f"{row.topic}[{row.partition}]@{row.offset}"


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (database errors add lines pointing into the SQL)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _not_a_dict(value: Any) -> str:
    if value is None:
        return "the value is null (a tombstone), not a dict of fields; filter tombstones out before the sink"
    return (
        f"the value {_show(value)} is a {type(value).__name__}, not a dict of fields; "
        "turn it into a dict with a map before the sink"
    )


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Column:
    """One column a sink writes: its name, the kind of values it takes, and its type in the database."""

    name: str
    kind: Kind
    type_name: str


class Shape:
    """The columns a sink writes to one table, and the checks a batch must pass before it is written."""

    def __init__(
        self,
        sink: str,
        table: str,
        columns: Sequence[Column],
        key: tuple[str, ...],
        *,
        label: str | None = None,
    ):
        self.sink = sink
        self.table = table
        self.label = label or f"{sink} table {table!r}"
        self.columns_ = tuple(columns)
        self.names = tuple(c.name for c in columns)
        self.key = key
        self.key_index = tuple(self.names.index(k) for k in key)
        self._names_set = frozenset(self.names)
        self._width = {len(self.names)}
        self._getter: Callable[[dict], tuple] = (
            itemgetter(*self.names) if len(self.names) > 1 else _single(self.names[0])
        )
        self._checks = [(i, c, _ACCEPTED[c.kind]) for i, c in enumerate(self.columns_) if c.kind in _ACCEPTED]

    def _error(self, row: SinkRow, text: str) -> SinkRowError:
        return SinkRowError(f"{self.label}: record {where(row)}: {text}")

    def dicts(self, rows: Sequence[SinkRow]) -> list[dict]:
        """The rows' values, each checked to be a dict (other mappings are copied into one)."""
        values = [r.value for r in rows]
        if set(map(type, values)) == {dict}:
            return values
        for i, value in enumerate(values):
            if type(value) is dict:
                continue
            if isinstance(value, Mapping):
                values[i] = dict(value)
                continue
            raise self._error(rows[i], _not_a_dict(value))
        return values

    def columns(self, rows: Sequence[SinkRow]) -> list[list[Any]]:
        """Check every row and return the batch column by column, in the order of ``names``.

        A field missing from a row is ``None`` (NULL) in its column.

        Raises:
            SinkRowError: naming the first record that is not a dict, lacks a key field,
                has a field that is not a column, or a value of the wrong type.
        """
        return [list(col) for col in self.check(rows)[1]]

    def check(self, rows: Sequence[SinkRow]) -> tuple[list[tuple], list[Sequence[Any]]]:
        """Check every row; return the batch as row tuples and as columns, both in the order of ``names``.

        Raises:
            SinkRowError: as ``columns``.
        """
        values = self.dicts(rows)
        tuples: list[tuple] | None
        try:
            # every field present: one C-level pass, and a row with more fields than
            # the table has one that is not a column
            tuples = list(map(self._getter, values))
            if set(map(len, values)) != self._width:
                self._raise_unknown(rows, values)
            cols: list[Sequence[Any]] = list(zip(*tuples, strict=True))
        except KeyError:
            if set().union(*values) - self._names_set:
                self._raise_unknown(rows, values)
            cols = [list(map(dict.get, values, repeat(name))) for name in self.names]
            tuples = None
        for index in self.key_index:
            if None in cols[index]:
                self._raise_missing_key(rows, values, self.names[index], cols[index])
        for index, column, accepted in self._checks:
            col = cols[index]
            if not accepted.issuperset(map(type, col)):
                for i, value in enumerate(col):
                    if not _fits(column.kind, value):
                        raise self._error(
                            rows[i],
                            f"field {column.name!r} = {_show(value)} ({type(value).__name__}) does not fit "
                            f"column {column.name!r} {column.type_name}; fix the record with a map before "
                            "the sink, or change the column",
                        )
        if tuples is None:
            tuples = list(zip(*cols, strict=True))
        return tuples, cols

    def _raise_unknown(self, rows: Sequence[SinkRow], values: list[dict]) -> None:
        names = self._names_set
        for row, value in zip(rows, values, strict=True):
            for field, item in value.items():
                if field not in names:
                    raise self._error(
                        row,
                        f"field {field!r} = {_show(item)} is not a column (columns: {', '.join(self.names)}); "
                        "drop the field with a map, or add the column",
                    )

    def _raise_missing_key(
        self, rows: Sequence[SinkRow], values: list[dict], name: str, col: Sequence[Any]
    ) -> None:
        i = col.index(None)
        if name in values[i]:
            text = f"key field {name!r} is null; an upsert on key {', '.join(self.key)} needs a value"
        else:
            text = (
                f"no key field {name!r} (fields: {', '.join(map(str, values[i])) or 'none'}); "
                f"an upsert on key {', '.join(self.key)} needs it"
            )
        raise self._error(rows[i], text)

    def explain(
        self,
        rows: Sequence[SinkRow],
        cols: Sequence[Sequence[Any]] | None,
        exc: BaseException,
        *,
        nul_in_text: bool,
    ) -> SinkRowError | None:
        """After the database refused a batch: the record at fault when a Python-side look finds it.

        Looks for integers beyond 64 bits and (``nul_in_text``) strings holding a NUL
        character, which the checks before writing let through. With one row, that
        row is at fault whatever the cause.
        """
        if cols is not None:
            for column, col in zip(self.columns_, cols, strict=True):
                for i, value in enumerate(col):
                    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
                        return self._error(
                            rows[i],
                            f"field {column.name!r} = {_show(value)} does not fit in 64 bits "
                            f"(column {column.name!r} {column.type_name})",
                        )
                    if nul_in_text and type(value) is str and "\x00" in value:
                        return self._error(
                            rows[i],
                            f"field {column.name!r} = {_show(value)} holds a NUL character, "
                            "which PostgreSQL text cannot store",
                        )
        if len(rows) == 1:
            return self._error(rows[0], f"the database refused it: {describe(exc)}")
        return None


def _single(name: str) -> Callable[[dict], tuple]:
    def get(value: dict) -> tuple:
        return (value[name],)

    return get


def last_per_key(
    tuples: list[tuple], cols: Sequence[Sequence[Any]], key_index: tuple[int, ...]
) -> list[tuple]:
    """Keep the last row of each key (as upserting them in order would): one statement may not touch a row twice.

    Example:
        >>> last_per_key([(1, "a"), (2, "b"), (1, "c")], [[1, 2, 1], ["a", "b", "c"]], (0,))
        [(1, 'c'), (2, 'b')]
    """
    keys: Sequence[Any] = (
        cols[key_index[0]] if len(key_index) == 1 else list(zip(*(cols[i] for i in key_index), strict=True))
    )
    try:
        latest = dict(zip(keys, tuples, strict=True))
    except TypeError:  # an unhashable key value: the database reports it
        return tuples
    return tuples if len(latest) == len(tuples) else list(latest.values())
