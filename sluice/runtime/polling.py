"""How the poll loop takes a batch from the consumer without waiting for a full one.

librdkafka's batch consume (``Consumer.consume(n, timeout)``) returns when it holds
``n`` records *or* when ``timeout`` expired. Below ``n`` records per ``timeout`` (1,000
per 100 ms by default: 10,000 records/s) every call therefore waits the whole timeout
and each record waits half of it on average: 50 ms of end-to-end latency that no
setting of the broker or the client removes. ``take`` waits only for the first record:
a backlog still comes in full batches, a trickle in small ones, as soon as it arrives.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["BatchSource", "take"]


class BatchSource(Protocol):
    """The two calls of a confluent-kafka ``Consumer`` that ``take`` uses."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...

    def poll(self, timeout: float = -1) -> Any: ...


def take(consumer: BatchSource, max_records: int, timeout: float) -> list[Any]:
    """Up to ``max_records`` records: those already fetched, or else the first within ``timeout`` and those behind it.

    Rebalance callbacks run inside these calls as inside ``consume``; the records keep
    the consumer's order (one queue).

    Args:
        consumer: the consumer (or anything with its ``consume`` and ``poll``).
        max_records: the largest batch.
        timeout: how long to wait for a first record, in seconds (0: do not wait).

    Returns:
        The records, possibly none.

    Example:
        >>> class Queue:
        ...     def __init__(self, items):
        ...         self.items = list(items)
        ...     def consume(self, num_messages=1, timeout=-1):
        ...         out, self.items = self.items[:num_messages], self.items[num_messages:]
        ...         return out
        ...     def poll(self, timeout=-1):
        ...         return self.items.pop(0) if self.items else None
        >>> take(Queue(range(5)), 3, 0.1), take(Queue([]), 3, 0.1)
        ([0, 1, 2], [])
    """
    msgs = consumer.consume(max_records, 0)
    if msgs or timeout <= 0:
        return msgs
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
