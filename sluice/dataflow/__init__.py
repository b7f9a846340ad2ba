"""The dataflow API: ``Stream`` operators that build a graph of plain Python steps."""

from sluice.dataflow.keyed import KeyState
from sluice.dataflow.meta import Meta
from sluice.dataflow.sinks import BatchSink, SinkRow
from sluice.dataflow.steps import Filter, FlatMap, KeyBy, Map, MapBatch, Sink, Step, To
from sluice.dataflow.stream import Source, Stream
from sluice.dataflow.tables import Join, Table

__all__ = [
    "BatchSink",
    "Filter",
    "FlatMap",
    "Join",
    "KeyBy",
    "KeyState",
    "Map",
    "MapBatch",
    "Meta",
    "Sink",
    "SinkRow",
    "Source",
    "Step",
    "Stream",
    "Table",
    "To",
]
