"""The steps of a windowed stream-stream join (``Stream.join(other_stream, fn, within=...)``).

Both inputs are written to one internal topic, ``<app>-<store>-repartition``,
partitioned by the record key, each record with a header telling its side. Kafka
assigns that topic's partitions to the app's workers, so every record of a key,
from either side, meets the same state and the same stream time, whatever the
partition counts of the two inputs and however the consumer group assigns them.
The ``WindowJoin`` step reads the topic; the runtime executes it like an aggregation
(a durable store per partition with a changelog topic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.dataflow.steps import Aggregate, EventTimed, Record, Step
from sluice.state.joins import JoinSpec

__all__ = ["SIDE_HEADER", "JoinSide", "Sided", "WindowJoin"]


#: header of a join topic record: which input it came from (b"l" or b"r")
SIDE_HEADER = "sluice.join"


class Sided(EventTimed):
    """A record on its way to a join topic: its headers tell its side."""

    __slots__ = ("side",)

    def __init__(self, msg: Any, side: bytes) -> None:
        super().__init__(msg, msg.timestamp()[1])
        self.side = side

    def headers(self) -> list[tuple[str, bytes]]:
        return [(SIDE_HEADER, self.side), *(self.msg.headers() or ())]


@dataclass(frozen=True)
class JoinSide(Step):
    """Mark each record as coming from ``side`` (``"l"`` or ``"r"``) of a join."""

    side: str = "l"

    def apply(self, records: list[Record]) -> list[Record]:
        side = self.side.encode()
        return [(v, k, Sided(m, side)) for v, k, m in records]


def _no_join(_left: Any, _right: Any) -> Any:  # pragma: no cover - every WindowJoin is given its function
    msg = "a WindowJoin step without a function"
    raise TypeError(msg)


_NO_SPEC = JoinSpec("inner", 0, 0)


@dataclass(frozen=True)
class WindowJoin(Aggregate):
    """Join the two sides of a join topic: ``fn(left, right)`` for records within ``spec.within``.

    An ``Aggregate`` for the runtime (a store named ``store``, its changelog, offset
    order), executed by ``sluice.runtime.joins.JoinNode``.
    """

    fn: Callable[[Any, Any], Any] = _no_join
    spec: JoinSpec = _NO_SPEC
