"""What happens to a record that fails: in-place retries with backoff, then a dead-letter topic,
a skip, or a stop.

Example:
    >>> p = ErrorPolicy.from_options(retries=3, backoff="100ms..5s", dead_letter="events.dlq")
    >>> p.action, p.retries, [p.delay(a) for a in (1, 2, 3)]
    ('dead_letter', 3, [0.1, 0.2, 0.4])
    >>> ErrorPolicy.from_options(skip=True).action
    'skip'
    >>> p.retry_for, ErrorPolicy.from_options(retry_for="30s").retry_for  # waiting for an unavailable sink
    (300.0, 30.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sluice._durations import parse_duration
from sluice._names import check_topic_name, suggest
from sluice.errors import ConfigError

__all__ = ["DEFAULT_POLICY", "ErrorPolicy", "coerce_policy"]

Action = Literal["dead_letter", "skip", "fail"]
_OPTIONS = ("retries", "backoff", "dead_letter", "skip", "fail", "retry_topics", "retry_for")
#: how long a batch waits for an unavailable sink (database down, disk full) before the app stops
DEFAULT_RETRY_FOR = 300.0


@dataclass(frozen=True)
class ErrorPolicy:
    """How failures are handled.

    Attributes:
        retries: in-place retries after the first attempt (0: none).
        backoff_initial: delay before the first retry, seconds; doubled each retry.
        backoff_max: cap of the delay, seconds.
        action: after the retries: ``"dead_letter"``, ``"skip"`` (log, count, move on)
            or ``"fail"`` (stop the app; the offset is not committed).
        dead_letter: the dead-letter topic (``None``: ``<app name>.dlq``).
        retry_topics: delays of the delayed retry topics a record passes through
            before the dead-letter topic, e.g. ``(1.0, 30.0, 300.0)``.
        retry_for: seconds a batch is tried again (with the backoff) while a dependency
            is unavailable (``EnvironmentalError``: a sink's database down, read-only or
            locked, a full disk; or Kafka refusing outputs during an outage) before the app
            stops; no record is dead-lettered for it.
    """

    retries: int = 3
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    action: Action = "dead_letter"
    dead_letter: str | None = None
    retry_topics: tuple[float, ...] = ()
    retry_for: float = DEFAULT_RETRY_FOR

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): exponential, capped."""
        return min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))

    @classmethod
    def from_options(
        cls,
        *,
        retries: int | None = None,
        backoff: str | timedelta | None = None,
        dead_letter: str | None = None,
        skip: bool = False,
        fail: bool = False,
        retry_topics: list[str | timedelta] | tuple[str | timedelta, ...] | None = None,
        retry_for: str | timedelta | None = None,
    ) -> ErrorPolicy:
        """Build a policy from ``on_error`` keywords, checking them.

        Args:
            retries: in-place retries (default 3; 0 with ``fail=True`` or ``skip=True``
                unless given).
            backoff: ``"100ms..5s"`` (initial..max, doubling) or one duration.
            dead_letter: the dead-letter topic name (default ``<app>.dlq``).
            skip: log (rate-limited), count and commit past failed records.
            fail: stop the app on the first failed record, committing nothing at or past it.
            retry_topics: delays of delayed retry topics, e.g. ``["1s", "30s", "5m"]``.
            retry_for: how long a batch waits for an unavailable sink before the app
                stops (default ``"5m"``), e.g. ``"30s"``.

        Raises:
            ConfigError: contradictory or invalid options.

        Example:
            >>> ErrorPolicy.from_options(skip=True, fail=True)
            Traceback (most recent call last):
            ...
            sluice.errors.ConfigError: on_error: choose one of skip=True, fail=True or dead_letter=..., not several
        """
        chosen = [
            name
            for name, on in (("skip=True", skip), ("fail=True", fail), ("dead_letter=...", dead_letter))
            if on
        ]
        if len(chosen) > 1:
            msg = "on_error: choose one of skip=True, fail=True or dead_letter=..., not several"
            raise ConfigError(msg)
        if retries is None:
            retries = 0 if (skip or fail) else 3
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            msg = f"on_error: retries={retries!r} must be an integer >= 0"
            raise ConfigError(msg)
        initial, maximum = _parse_backoff(backoff)
        if dead_letter is not None:
            check_topic_name(dead_letter, "dead-letter topic")
        delays: tuple[float, ...] = ()
        if retry_topics:
            if skip or fail:
                msg = "on_error: retry_topics need a dead-letter topic at the end, not skip=True or fail=True"
                raise ConfigError(msg)
            delays = tuple(parse_duration(d, "retry_topics delay") for d in retry_topics)
            if any(d <= 0 for d in delays):
                msg = f"on_error: retry_topics={list(retry_topics)!r}: every delay must be > 0"
                raise ConfigError(msg)
        waits = DEFAULT_RETRY_FOR if retry_for is None else parse_duration(retry_for, "on_error: retry_for")
        action: Action = "skip" if skip else "fail" if fail else "dead_letter"
        return cls(retries, initial, maximum, action, dead_letter, delays, waits)


def _parse_backoff(backoff: str | timedelta | None) -> tuple[float, float]:
    if backoff is None:
        return 0.1, 5.0
    if isinstance(backoff, str) and ".." in backoff:
        low, high = backoff.split("..", 1)
        initial, maximum = parse_duration(low, "backoff"), parse_duration(high, "backoff")
        if maximum < initial:
            msg = f"on_error: backoff={backoff!r}: the maximum must not be below the initial delay"
            raise ConfigError(msg)
        return initial, maximum
    value = parse_duration(backoff, "backoff")
    return value, value


DEFAULT_POLICY = ErrorPolicy()


def coerce_policy(value: Any, where: str) -> ErrorPolicy | None:
    """Accept an ``ErrorPolicy``, a dict of ``on_error`` keywords, or ``"skip"``/``"fail"``/``"dead_letter"``.

    Example:
        >>> coerce_policy({"retries": 1, "skip": True}, "map").action
        'skip'
        >>> coerce_policy("fail", "map").retries
        0
    """
    if value is None or isinstance(value, ErrorPolicy):
        return value
    if isinstance(value, str):
        shortcuts = {"skip": {"skip": True}, "fail": {"fail": True}, "dead_letter": {}}
        if value not in shortcuts:
            msg = f"{where}: on_error={value!r} must be 'skip', 'fail', 'dead_letter', a dict of on_error options or an ErrorPolicy"
            raise ConfigError(msg)
        return ErrorPolicy.from_options(**shortcuts[value])
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in _OPTIONS]
        if unknown:
            msg = f"{where}: unknown on_error option {unknown[0]!r}{suggest(unknown[0], _OPTIONS)}"
            raise ConfigError(msg)
        return ErrorPolicy.from_options(**value)
    msg = f"{where}: on_error must be a dict of options, 'skip', 'fail' or an ErrorPolicy, got {type(value).__name__}"
    raise ConfigError(msg)
