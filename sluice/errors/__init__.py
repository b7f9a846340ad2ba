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
    "FutureTimestampError",
    "KafkaAuthenticationError",
    "KafkaUnavailableError",
    "RecordError",
    "SchemaRegistryUnavailable",
    "SerializationError",
    "SinkError",
    "SinkRowError",
    "SinkUnavailableError",
    "SluiceError",
    "StateError",
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


class KafkaAuthenticationError(SluiceError):
    """The brokers refused the client: SASL credentials or the TLS handshake (not retried: it cannot heal)."""


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


class FutureTimestampError(RecordError):
    """A record's event time is further ahead of the wall clock than its window's ``max_future``.

    Let in, it would move the partition's stream time so far that every later record
    would be late; it is dead-lettered instead (stage ``process``).
    """


class StateError(RecordError):
    """A record cannot keep its keyed state: it has no key, or its function left a value that is not JSON.

    Dead-lettered like any record failure; the key's state is unchanged.

    Example:
        >>> issubclass(StateError, RecordError)
        True
    """


class SinkError(SluiceError):
    """A sink could not write a batch; the message names the sink, the table or file, and the cause."""


class SinkRowError(SinkError, RecordError):
    """A record does not fit its table or file: not a dict, no key, a value of the wrong type, an unknown field."""


class EnvironmentalError(SluiceError):
    """A dependency is unavailable; the record is not at fault.

    A database that is down, read-only after a failover or locked, a full disk: the
    runtime never dead-letters a record for it. It tries the whole batch again with
    backoff, committing nothing past it, and stops once the failure policy's
    ``retry_for`` is spent.
    """


class SinkUnavailableError(SinkError, EnvironmentalError):
    """A sink cannot write now (database down, read-only or locked, disk full): no row is at fault.

    The runtime writes the batch again with backoff until the failure policy's
    ``retry_for`` is spent, then stops the app committing nothing past the batch.

    Example:
        >>> issubclass(SinkUnavailableError, EnvironmentalError), issubclass(SinkUnavailableError, RecordError)
        (True, False)
    """


class SchemaRegistryUnavailable(EnvironmentalError):
    """The Schema Registry could not be reached (refused, timed out, HTTP 5xx) or refused the credentials.

    Example:
        >>> issubclass(SchemaRegistryUnavailable, EnvironmentalError)
        True
    """
