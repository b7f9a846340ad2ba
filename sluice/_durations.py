"""Durations as people write them: ``"250ms"``, ``"10s"``, ``"1m30s"``, ``"1h30m"`` or a ``timedelta``.

A bare number is refused (except 0): Kafka and Quix Streams users write milliseconds,
Python users seconds, and ``window(tumbling=60000)`` read one way or the other is a
minute or 16.7 hours. The error asks for a unit.

Example:
    >>> from datetime import timedelta
    >>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration(timedelta(minutes=1))
    (5400.0, 0.25, 60.0)
"""

from __future__ import annotations

import re
from datetime import timedelta

from sluice.errors import ConfigError

__all__ = ["Duration", "format_duration", "parse_duration"]

#: what every duration parameter accepts: a string with units or a ``datetime.timedelta``
#: (``0`` also, the one number that means the same in every unit)
Duration = str | timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$")
_EXAMPLES = "e.g. '250ms', '10s', '1m30s', '1h' or datetime.timedelta(seconds=10)"


def format_duration(seconds: float) -> str:
    """``seconds`` written the way ``parse_duration`` reads it, largest units first.

    Example:
        >>> format_duration(60), format_duration(60000), format_duration(0.25), format_duration(90.5)
        ('1m', '16h40m', '250ms', '1m30s500ms')
    """
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_duration(value: str | timedelta | float, name: str = "duration") -> float:
    """Return ``value`` in seconds.

    Args:
        value: a string of one or more ``<number><unit>`` parts, units ``ms``, ``s``,
            ``m``, ``h``, ``d`` (``"250ms"``, ``"1.5s"``, ``"1m30s"``, ``"1h30m"``), a
            ``datetime.timedelta``, or ``0``.
        name: what the value configures, for the error message.

    Raises:
        ConfigError: the value is a number other than 0 (no unit), negative, or not a duration.

    Example:
        >>> parse_duration("1m30s"), parse_duration("1.5s"), parse_duration(0)
        (90.0, 1.5, 0.0)
        >>> parse_duration(60000, "window: tumbling")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: window: tumbling=60000 has no unit: milliseconds (1m) or seconds (16h40m)? Write '60000ms' or '60000s', or timedelta(seconds=60000)
        >>> parse_duration("5 minutes", "grace")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: grace='5 minutes' is not a duration; write e.g. '250ms', '10s', '1m30s', '1h' or datetime.timedelta(seconds=10)
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds < 0:
            msg = f"{name}={value!r} is negative; durations must be >= 0"
            raise ConfigError(msg)
        return seconds
    if isinstance(value, bool):
        msg = f"{name}={value!r} is not a duration; write {_EXAMPLES}"
        raise ConfigError(msg)
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        if value < 0:
            msg = f"{name}={value!r} is negative; durations must be >= 0"
            raise ConfigError(msg)
        msg = (
            f"{name}={value!r} has no unit: milliseconds ({format_duration(value / 1000)}) or seconds "
            f"({format_duration(value)})? Write '{value}ms' or '{value}s', or timedelta(seconds={value})"
        )
        raise ConfigError(msg)
    if isinstance(value, str) and _WHOLE.match(value):
        return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(value))
    msg = f"{name}={value!r} is not a duration; write {_EXAMPLES}"
    raise ConfigError(msg)
