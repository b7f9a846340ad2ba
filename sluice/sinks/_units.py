"""Sizes as people write them: ``"100MB"``, ``"10KB"``, ``"1GiB"`` or a number of bytes."""

from __future__ import annotations

import re

from sluice.errors import ConfigError

__all__ = ["parse_size"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(value: str | int, name: str = "size") -> int:
    """Return ``value`` in bytes; ``KB``, ``MB``, ``GB`` are powers of 1024 (as ``KiB``, ``MiB``, ``GiB``).

    Args:
        value: ``"100MB"``, ``"10KB"``, ``"1.5GB"``, ``"512B"`` or a number of bytes.
        name: what the value configures, for the error message.

    Raises:
        ConfigError: not a positive size.

    Example:
        >>> parse_size("10KB"), parse_size("100MB"), parse_size("1GiB"), parse_size(4096)
        (10240, 104857600, 1073741824, 4096)
        >>> parse_size("lots", "rotate")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: rotate='lots' is not a size; write e.g. '10KB', '100MB', '1GB' or a number of bytes
    """
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match and (match.group(2) or match.group(3) or match.group(1)):
            size = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if size is None or size < 1:
        msg = f"{name}={value!r} is not a size; write e.g. '10KB', '100MB', '1GB' or a number of bytes"
        raise ConfigError(msg)
    return int(size)
