"""Tables: the latest value per key of a topic, and the step that joins a stream with one.

``app.table("users")`` is a table partitioned like its topic: a stream joins it
co-partitioned (record key = table key, same partition count). ``app.global_table(...)``
is held whole by every process, and a stream joins it on any field (``on=``)::

    users = app.table("users", value="json")
    orders = app.stream("orders", value="json")
    orders.join(users, lambda order, user: {**order, "user": user}, how="left").to("enriched")

The runtime materializes a table in the same RocksDB stores as aggregations; the
table's topic is its own changelog (no second copy is written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sluice.dataflow.steps import Record, Step, StepFailed
from sluice.errors import SluiceError

__all__ = ["Join", "Table", "TableLookup"]

#: what ``TableLookup.row`` returns for a key the table does not hold
MISSING: Any = object()


@dataclass(frozen=True, eq=False)
class Table:
    """A table over ``topic``: build it with ``App.table(...)`` or ``App.global_table(...)``.

    ``value`` and ``key`` are the formats of the topic's records (a null value deletes
    the key); ``is_global``: every process holds every partition.

    Example:
        >>> from sluice import App
        >>> app = App("doc")
        >>> users = app.table("users", value="json")
        >>> users.topic, users.is_global
        ('users', False)
    """

    topic: str
    value: Any = "json"
    key: Any = "bytes"
    is_global: bool = False

    def __repr__(self) -> str:
        kind = "global_table" if self.is_global else "table"
        return f"{kind}({self.topic!r})"


class TableLookup:
    """What the runtime binds to a ``Join`` step: the table's row for a stream record.

    ``row(value, key, meta)`` first brings the table up to the record's timestamp (the
    table updates of its partition stamped no later than the record), then returns the
    row or ``MISSING``; ``done()`` ends one list of records (buffered table writes).
    """

    misses: int = 0

    def start(self) -> None:  # pragma: no cover - the runtime's
        raise NotImplementedError

    def row(self, value: Any, key: Any, meta: Any) -> Any:  # pragma: no cover - the runtime's
        raise NotImplementedError

    def done(self) -> None:  # pragma: no cover - the runtime's
        raise NotImplementedError


@dataclass(frozen=True)
class Join(Step):
    """Join each record with the row of ``table`` for its key: ``fn(value, row)``.

    ``how="inner"`` drops records the table has no row for (counted in ``lookup.misses``),
    ``"left"`` calls ``fn(value, None)``. ``on`` (global tables) gives the lookup key from
    the value; otherwise the record key is it. ``store`` names the local state (and the
    repartition topic when there is one). ``lookup`` is bound by the runtime.
    """

    table: Table
    fn: Callable[[Any, Any], Any]
    how: Literal["inner", "left"] = "inner"
    on: Callable[[Any], Any] | None = None
    store: str = "join"
    lookup: TableLookup | None = None

    def apply(self, records: list[Record]) -> list[Record]:
        lookup = self.lookup
        if lookup is None:  # pragma: no cover - the runtime binds it
            msg = "Join steps are executed by the runtime"
            raise TypeError(msg)
        fn, inner, row_of = self.fn, self.how == "inner", lookup.row
        out: list[Record] = []
        append = out.append
        i = 0
        lookup.start()
        try:
            for i, (v, k, m) in enumerate(records):  # noqa: B007 - i tells where a failure happened
                row = row_of(v, k, m)
                if row is MISSING:
                    if inner:
                        lookup.misses += 1
                        continue
                    row = None
                append((fn(v, row), k, m))
        except SluiceError:
            raise  # the table cannot be read (the broker, the store): no record's fault
        except Exception as exc:
            raise StepFailed(i, out, exc) from exc
        finally:
            lookup.done()
        return out
