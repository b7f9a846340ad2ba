"""Checks of the numbers people pass as options, with one wording for every error."""

from __future__ import annotations

from typing import Any

from sluice.errors import ConfigError

__all__ = ["positive_int"]


def positive_int(value: Any, what: str, hint: str = "") -> int:
    """Return ``value`` if it is an int > 0 (not a bool), else raise ``ConfigError`` naming ``what``.

    Example:
        >>> positive_int(4, "partitions")
        4
        >>> positive_int(0, "to('out'): partitions")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: to('out'): partitions=0 must be a positive integer
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        msg = f"{what}={value!r} must be a positive integer{hint}"
        raise ConfigError(msg)
    return value
