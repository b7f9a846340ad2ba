"""The runtime's wall clock and sleep, replaceable (``sluice.testing.TestDriver`` drives its own).

What waits or depends on the wall clock goes through it: retry backoffs, waits for an
unavailable sink, due times of parked records, and ``max_future`` of windows. Intervals
of the loop itself (commits, pacing) use ``time.monotonic`` directly.

Example:
    >>> SYSTEM_CLOCK.time() > 1.7e9
    True
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SYSTEM_CLOCK", "Clock"]


@dataclass(frozen=True)
class Clock:
    """``time()``: seconds since the epoch; ``monotonic()``: for durations; ``sleep(seconds)``: wait."""

    time: Callable[[], float] = _time.time
    monotonic: Callable[[], float] = _time.monotonic
    sleep: Callable[[float], None] = _time.sleep


SYSTEM_CLOCK = Clock()
