"""The secured broker (SASL_SSL, SCRAM-SHA-512 over TLS on 127.0.0.1:9094) for the ``secure`` tests.

Started once per session with ``tools/kafka/kafkactl.py secure-up`` (a running one is
reused) and stopped at the end only when this session started it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from sluice.kafka.admin import TopicAdmin
from sluice.kafka.properties import load_properties
from tests.conftest import KafkaHelper, kafkactl


@dataclass
class SecureKafka(KafkaHelper):
    """``KafkaHelper`` whose clients log in with the secured broker's client properties."""

    properties: dict = field(default_factory=dict)
    client_file: Path = Path()

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({**self.properties, "bootstrap.servers": self.bootstrap})
        return self._admin

    def producer(self, **config) -> Producer:
        base = {
            **self.properties,
            "bootstrap.servers": self.bootstrap,
            "linger.ms": 5,
            "enable.idempotence": True,
        }
        return Producer({**base, **config})

    def consumer(self, group: str | None = None, **config) -> Consumer:
        return super().consumer(group, **{**self.properties, **config})

    def end_offsets(self, topic: str, partitions: int = 1) -> dict[int, int]:
        admin = TopicAdmin({**self.properties, "bootstrap.servers": self.bootstrap}, timeout=10)
        return {p: high for p, (_low, high) in admin.watermarks(topic, partitions).items()}


@pytest.fixture(scope="session")
def _secure_session() -> Iterator[Path]:
    was_running = kafkactl._read_pid(kafkactl.secure_node()) is not None
    client_file = kafkactl.secure_up()
    yield client_file
    if not was_running:
        kafkactl.secure_down()


@pytest.fixture
def secure_kafka(_secure_session: Path) -> Iterator[SecureKafka]:
    """Helpers bound to the secured broker; topics created through it are deleted after the test."""
    props = load_properties(_secure_session)
    bootstrap = props.pop("bootstrap.servers")
    helper = SecureKafka(bootstrap, properties=props, client_file=_secure_session)
    yield helper
    helper.cleanup()
