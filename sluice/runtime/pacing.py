"""Slow handlers and ``max.poll.interval.ms``: how much of a consumed batch to run before polling again.

A member that does not call ``consume`` within ``max.poll.interval.ms`` leaves its group,
its partitions go to another member, and the batch it was working on is redone there,
and again, forever, if every batch takes that long. So the runtime cuts a consumed
batch into chunks that take at most a fraction of the interval, and between chunks
serves the interval with a poll of paused partitions. The chunk size follows a moving
average of the time per record (which rises at once and falls gradually); while nothing is known (the first batch) the first
chunk is small. A fast pipeline never pays for it: its whole batch is one chunk.

Example:
    >>> pace = Pacer(max_poll_interval=10.0)
    >>> pace.chunk(1000)                    # nothing measured yet: a small first chunk
    16
    >>> pace.observe(16, 3.2)               # 200 ms per record
    >>> pace.chunk(1000)                    # a quarter of the interval: 2.5 s of work
    12
    >>> for _ in range(10):
    ...     pace.observe(1000, 0.005)       # fast records again: the estimate comes down
    >>> pace.chunk(1000)
    1000
"""

from __future__ import annotations

__all__ = ["Pacer"]

_FIRST_CHUNK = 16
_SHARE = 0.25  # of max.poll.interval.ms that one chunk may take
_WEIGHT = 0.5  # of the newest measure in the moving average


class Pacer:
    """Chunk sizes that keep the poll loop within ``max_poll_interval`` seconds."""

    def __init__(self, max_poll_interval: float) -> None:
        self.max_poll_interval = max_poll_interval
        self.budget = max_poll_interval * _SHARE
        #: seconds per record, moving average (None: nothing measured yet)
        self.per_record: float | None = None

    def chunk(self, remaining: int) -> int:
        """How many of ``remaining`` records to run before the next poll."""
        if self.per_record is None:
            return min(remaining, _FIRST_CHUNK)
        if self.per_record * remaining <= self.budget:
            return remaining
        return max(1, min(remaining, int(self.budget / self.per_record)))

    def observe(self, records: int, seconds: float) -> None:
        """``records`` took ``seconds``."""
        if records <= 0:
            return
        measure = seconds / records
        if self.per_record is None or measure >= self.per_record:
            self.per_record = measure  # slower at once: a late reaction costs the membership
        else:
            self.per_record = _WEIGHT * measure + (1 - _WEIGHT) * self.per_record

    def overdue(self, since_poll: float) -> bool:
        """Time to poll: half the interval has passed since the last one."""
        return since_poll >= self.max_poll_interval / 2
