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
    "EnvironmentalError",
    "KafkaUnavailableError",
    "RecordError",
    "SchemaRegistryUnavailable",
    "SerializationError",
    "SinkError",
    "SinkRowError",
    "SinkUnavailableError",
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


class EnvironmentalError(SluiceError):
    """A dependency is unavailable; the record is not at fault.

    Such an error is never dead-lettered or skipped: the record is retried, and
    nothing at or after it is committed until the dependency answers again.

    Example:
        >>> issubclass(SchemaRegistryUnavailable, EnvironmentalError)
        True
    """


class SchemaRegistryUnavailable(EnvironmentalError):
    """The Schema Registry could not be reached (refused, timed out, HTTP 5xx) or refused the credentials."""


class DeserializationError(SluiceError):
    """A record's bytes could not be turned into a value (malformed JSON, bad UTF-8...)."""


class SerializationError(SluiceError):
    """An output value could not be turned into bytes for its topic."""


class StepError(SluiceError):
    """A user function (filter, map, key_by, sink...) raised while processing a record."""


class DeliveryError(SluiceError):
    """Kafka permanently refused an output record (after librdkafka's own retries)."""


class RecordError(SluiceError, ValueError):
    """A record that can never be processed as it is: retried without waiting, then dead-lettered."""


class SinkError(SluiceError):
    """A sink could not write a batch; the message names the sink, the table or file, and the cause."""


class SinkRowError(SinkError, RecordError):
    """A record does not fit its table or file: not a dict, no key, a value of the wrong type, an unknown field."""


class SinkUnavailableError(SinkError):
    """The database could not be reached for longer than the sink's ``retry_for``: the app stops, commits nothing past it."""
