"""Durations as people write them: ``"100ms"``, ``"5s"``, ``"1m"``, ``"2h"``, or seconds as a number."""

from __future__ import annotations

import re

from sluice.errors import ConfigError

__all__ = ["parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: str | float | int, name: str = "duration") -> float:
    """Return ``value`` in seconds.

    Args:
        value: ``"250ms"``, ``"10s"``, ``"1m"``, ``"1h"``, ``"1d"`` or a number of seconds.
        name: what the value configures, for the error message.

    Raises:
        ConfigError: the value is not a non-negative duration.

    Example:
        >>> parse_duration("250ms"), parse_duration("1m"), parse_duration(2)
        (0.25, 60.0, 2.0)
    """
    if isinstance(value, bool):
        msg = f"{name}={value!r} is not a duration; write e.g. '500ms', '5s', '1m' or a number of seconds"
        raise ConfigError(msg)
    if isinstance(value, int | float):
        if value < 0:
            msg = f"{name}={value!r} is negative; durations must be >= 0"
            raise ConfigError(msg)
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    msg = f"{name}={value!r} is not a duration; write e.g. '500ms', '5s', '1m' or a number of seconds"
    raise ConfigError(msg)
