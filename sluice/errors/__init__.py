"""sluice's exception hierarchy: every error says what was wrong, with which value, and what to do.

Example:
    >>> from sluice.errors import ConfigError, SluiceError
    >>> issubclass(ConfigError, SluiceError)
    True
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeliveryError",
    "DeserializationError",
    "KafkaUnavailableError",
    "SerializationError",
    "SluiceError",
    "StepError",
    "TopicNotFoundError",
]


class SluiceError(Exception):
    """Base class of every error sluice raises."""


class ConfigError(SluiceError, ValueError):
    """A configuration value or keyword is invalid; the message names it and the fix."""


class TopicNotFoundError(SluiceError):
    """A topic the app reads from does not exist (sluice never creates source topics)."""


class KafkaUnavailableError(SluiceError):
    """The brokers could not be reached in time."""


class DeserializationError(SluiceError):
    """A record's bytes could not be turned into a value (malformed JSON, bad UTF-8...)."""


class SerializationError(SluiceError):
    """An output value could not be turned into bytes for its topic."""


class StepError(SluiceError):
    """A user function (filter, map, key_by, sink...) raised while processing a record."""


class DeliveryError(SluiceError):
    """Kafka permanently refused an output record (after librdkafka's own retries)."""
