"""Broker-free tests: the runtime on sluice.testing's in-memory Kafka (no fixture here starts a broker)."""

from sluice.testing.pytest_plugin import sluice_driver  # noqa: F401 - the fixture, as users import it
