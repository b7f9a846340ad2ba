"""The dataflow API: ``Stream`` operators that build a graph of plain Python steps."""

from sluice.dataflow.steps import Filter, FlatMap, KeyBy, Map, Sink, Step, To
from sluice.dataflow.stream import Source, Stream

__all__ = ["Filter", "FlatMap", "KeyBy", "Map", "Sink", "Source", "Step", "Stream", "To"]
