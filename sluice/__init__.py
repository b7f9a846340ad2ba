"""sluice: real-time stream processing on Apache Kafka, at-least-once by default, nothing lost.

Example:
    >>> from sluice import App
    >>> app = App("clicks", brokers="127.0.0.1:9092")
    >>> clicks = app.stream("events", value="json").filter(lambda e: e["type"] == "click")
    >>> _ = clicks.to("clicks")
"""

from sluice._version import __version__
from sluice.app import App
from sluice.dataflow import Stream
from sluice.errors import (
    ConfigError,
    DeliveryError,
    DeserializationError,
    EnvironmentalError,
    KafkaAuthenticationError,
    KafkaUnavailableError,
    SchemaRegistryUnavailable,
    SerializationError,
    SluiceError,
    StepError,
    TopicNotFoundError,
)

__all__ = [
    "App",
    "ConfigError",
    "DeliveryError",
    "DeserializationError",
    "EnvironmentalError",
    "KafkaAuthenticationError",
    "KafkaUnavailableError",
    "SchemaRegistryUnavailable",
    "SerializationError",
    "SluiceError",
    "StepError",
    "Stream",
    "TopicNotFoundError",
    "__version__",
]
