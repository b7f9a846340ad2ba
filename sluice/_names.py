"""Names people type: Kafka topic names, and "did you mean" suggestions for typos."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from sluice.errors import ConfigError

__all__ = ["check_topic_name", "suggest"]

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_topic_name(topic: object, what: str = "topic") -> str:
    """Kafka's own topic-name rule, checked before any broker is contacted.

    Example:
        >>> check_topic_name("clicks-per-page")
        'clicks-per-page'
        >>> check_topic_name("a b")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: topic 'a b' is not a valid Kafka topic name (letters, digits, '.', '_', '-'; 1 to 249 chars)
    """
    if not isinstance(topic, str) or not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        msg = f"{what} {topic!r} is not a valid Kafka topic name (letters, digits, '.', '_', '-'; 1 to 249 chars)"
        raise ConfigError(msg)
    return topic


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest valid name, or ``""``.

    Example:
        >>> suggest("group_idd", ["group_id", "client_id"])
        " (did you mean 'group_id'?)"
    """
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
