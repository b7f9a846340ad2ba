"""Topic checks and creation: source topics must exist, output topics are created when missing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from sluice._names import suggest
from sluice.errors import KafkaUnavailableError, TopicNotFoundError
from sluice.kafka.calls import error_text
from sluice.kafka.client_errors import ClientErrorWatch
from sluice.kafka.clients import KAFKA_CLIENTS, Clients

__all__ = ["TopicAdmin", "TopicInfo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicInfo:
    """What sluice needs to know of an existing topic."""

    name: str
    partitions: int
    replication: int


class TopicAdmin:
    """A lazily created admin client for topic metadata and creation.

    ``config``: librdkafka properties (``bootstrap.servers`` and the security settings).
    A refused login or TLS handshake raises ``KafkaAuthenticationError`` within about a
    second instead of waiting out ``timeout`` as if the brokers were down.
    """

    def __init__(self, config: dict, timeout: float = 15.0, clients: Clients = KAFKA_CLIENTS) -> None:
        self._config = config
        #: makes the admin client, and the consumers of those who read topics through this admin
        self.clients = clients
        self._timeout = timeout
        self._client: AdminClient | None = None
        self.errors = ClientErrorWatch(config)

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            self._client = self.clients.admin(
                {
                    **self._config,
                    "logger": logging.getLogger("sluice.kafka.librdkafka"),
                    "error_cb": self.errors,
                }
            )
        return self._client

    def _metadata(self, topic: str | None = None):
        """Metadata, asked in growing slices so that a refusal (served by ``poll``) stops the wait early."""
        deadline = time.monotonic() + self._timeout
        wait = 0.5
        while True:
            try:
                return self.client.list_topics(
                    topic, timeout=min(wait, max(0.1, deadline - time.monotonic()))
                )
            except KafkaException as exc:
                self.client.poll(0)
                self.errors.raise_if_refused()
                if time.monotonic() >= deadline:
                    msg = (
                        f"could not reach Kafka at {self._config['bootstrap.servers']} within {self._timeout:.0f}s "
                        f"({exc.args[0].str() if exc.args else exc}); check that the brokers are up and the address is right"
                    )
                    raise KafkaUnavailableError(msg) from exc
                wait = min(wait * 2, 5.0)

    def check(self) -> None:
        """Check that the brokers answer and accept this client (before group or offset requests).

        Raises:
            KafkaAuthenticationError: the brokers refused the credentials or the TLS handshake.
            KafkaUnavailableError: no answer within the timeout.

        Example:
            >>> TopicAdmin({"bootstrap.servers": "127.0.0.1:9092"}, timeout=5).check()  # doctest: +SKIP
        """
        self._metadata()

    def describe(self, topic: str) -> TopicInfo | None:
        """The topic's partition and replica counts, or ``None`` when it does not exist."""
        md = self._metadata(topic).topics.get(topic)
        if md is None or md.error is not None:
            if md is not None and md.error.code() not in (
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError._UNKNOWN_TOPIC,
            ):
                msg = f"metadata of topic {topic!r} failed: {md.error.str()}"
                raise KafkaUnavailableError(msg)
            return None
        partitions = md.partitions
        replication = len(next(iter(partitions.values())).replicas) if partitions else 1
        return TopicInfo(topic, len(partitions), replication)

    def watermarks(self, topic: str, partitions: int | Iterable[int]) -> dict[int, tuple[int, int]]:
        """(first, end) offset of each partition, as a ``read_committed`` consumer sees them.

        ``partitions``: the topic's partition count (all of them), or the partitions to ask for.

        Asked through the admin ListOffsets API, which reports an error per partition:
        the consumer's watermark query can return a half-answered pair (one offset for
        both ends) when one of its two requests fails, which reads as an empty partition.

        Raises:
            KafkaUnavailableError: an offset could not be read, or the broker's answer is not usable.
        """
        where = self._config["bootstrap.servers"]
        wanted = range(partitions) if isinstance(partitions, int) else sorted(partitions)
        answers: dict[str, dict[int, int]] = {}
        for name, spec in (("first", OffsetSpec.earliest()), ("end", OffsetSpec.latest())):
            request = {TopicPartition(topic, p): spec for p in wanted}
            try:
                futures = self.client.list_offsets(
                    request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self._timeout
                )
                answers[name] = {tp.partition: f.result().offset for tp, f in futures.items()}
            except KafkaException as exc:
                detail = error_text(exc)
                msg = f"reading the {name} offsets of {topic!r} failed on {where}: {detail}"
                raise KafkaUnavailableError(msg) from exc
        bounds: dict[int, tuple[int, int]] = {}
        for p in wanted:
            low, high = answers["first"][p], answers["end"][p]
            if not 0 <= low <= high:
                msg = f"{topic!r} partition {p}: the brokers on {where} answered first offset {low}, end offset {high}; run again"
                raise KafkaUnavailableError(msg)
            bounds[p] = (low, high)
        return bounds

    def topic_config(self, topic: str, name: str) -> str | None:
        """One config value of ``topic`` as the brokers apply it (None when it cannot be read)."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            configs = self.client.describe_configs([resource], request_timeout=self._timeout)[
                resource
            ].result(timeout=self._timeout)
        except KafkaException as exc:
            logger.info("describing %s's config failed: %s", topic, exc)
            return None
        entry = configs.get(name)
        return entry.value if entry is not None else None

    def max_message_bytes(self, topic: str, producer_config: dict | None = None) -> int:
        """The largest record ``topic`` takes: its ``max.message.bytes``, capped by the producer's own limit."""
        local = int((producer_config or {}).get("message.max.bytes", 1_000_000))
        value = self.topic_config(topic, "max.message.bytes")
        return min(local, int(value)) if value else local

    def require_sources(self, topics: list[str]) -> dict[str, TopicInfo]:
        """Describe the source topics; raise ``TopicNotFoundError`` naming the first missing one."""
        infos: dict[str, TopicInfo] = {}
        for topic in topics:
            info = self.describe(topic)
            if info is None:
                existing = [t for t in self._metadata().topics if not t.startswith("__")]
                msg = (
                    f"source topic {topic!r} does not exist on {self._config['bootstrap.servers']}"
                    f"{suggest(topic, existing)}; create it first (sluice creates output topics, never sources)"
                )
                raise TopicNotFoundError(msg)
            infos[topic] = info
        return infos

    def ensure(
        self, topic: str, partitions: int, replication: int, config: dict[str, str] | None = None
    ) -> TopicInfo:
        """Create ``topic`` if it is missing and wait until every partition has a leader.

        ``config``: topic configs for its creation, e.g. ``{"cleanup.policy": "compact"}``.
        """
        info = self.describe(topic)
        if info is not None:
            return info
        brokers = len(self._metadata().brokers)
        replication = max(1, min(replication, brokers))
        logger.info("creating topic %s (%d partitions, replication %d)", topic, partitions, replication)
        future = self.client.create_topics([NewTopic(topic, partitions, replication, config=config or {})])[
            topic
        ]
        try:
            future.result(timeout=self._timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = f"could not create output topic {topic!r}: {exc.args[0].str()}"
                raise KafkaUnavailableError(msg) from exc
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            md = self._metadata(topic).topics.get(topic)
            ready = md is not None and md.error is None and md.partitions
            if ready and all(p.leader >= 0 for p in md.partitions.values()):
                return TopicInfo(topic, len(md.partitions), replication)
            time.sleep(0.1)
        msg = f"output topic {topic!r} was created but has no leader after {self._timeout:.0f}s"
        raise KafkaUnavailableError(msg)
