"""sluice: real-time stream processing on Apache Kafka."""

from sluice._version import __version__

__all__ = ["__version__"]
