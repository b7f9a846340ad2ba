"""Consumer-group lag read from the brokers: committed offset, end offset and lag per partition.

This is what ``sluice lag`` prints and what ``sluice top --group`` shows when the app
has no metrics endpoint. It needs nothing from the app, only the brokers: the group's
committed offsets (``OffsetFetch``), its members' assignments, and the end offsets of
the partitions (the last stable offset: what a ``read_committed`` consumer can reach).

Example:
    >>> report = group_lag("clicks", "127.0.0.1:9092")  # doctest: +SKIP
    >>> report.total_lag  # doctest: +SKIP
    0
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from sluice._names import suggest
from sluice.errors import KafkaUnavailableError, SluiceError, TopicNotFoundError
from sluice.kafka.admin import TopicAdmin
from sluice.kafka.calls import kafka_error
from sluice.kafka.coordinator import retry_coordinator

__all__ = ["GroupLag", "GroupNotFoundError", "PartitionLag", "group_lag"]

logger = logging.getLogger(__name__)


class GroupNotFoundError(SluiceError):
    """The consumer group has no members and no committed offsets on these brokers."""


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a group's topics.

    ``committed`` is ``None`` when the group never committed an offset there; ``lag``
    then counts from the start of the partition (where a new sluice group begins).
    """

    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    member: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "member": self.member,
        }


@dataclass
class GroupLag:
    """Lag of a consumer group, partition by partition."""

    group: str
    state: str
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what ``sluice lag --json`` prints).

        Example:
            >>> GroupLag("g", "Stable", 1, [PartitionLag("t", 0, 5, 7, 2)]).as_dict()["total_lag"]
            2
        """
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "total_lag": self.total_lag,
            "partitions": [p.as_dict() for p in self.partitions],
        }


def _fail(brokers: str, doing: str, exc: BaseException, timeout: float) -> KafkaUnavailableError:
    err = kafka_error(exc)
    detail = err.str() if err is not None else str(exc)
    if err is not None and err.code() in (
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
    ):
        msg = (
            f"could not reach Kafka at {brokers} within {timeout:g}s ({detail}); "
            "check that the brokers are up and the address is right"
        )
    else:
        msg = f"{doing} failed on {brokers}: {detail}"
    return KafkaUnavailableError(msg)


def _state_name(state: Any) -> str:
    name = getattr(state, "name", str(state))
    return name.replace("_", " ").title().replace(" ", "")


def lag_admin(
    brokers: str, kafka_config: Mapping[str, Any] | None, timeout: float, client_id: str
) -> AdminClient:
    """An admin client for lag queries, checked to be accepted by the brokers.

    Raises:
        KafkaAuthenticationError: the brokers refused the credentials or the TLS handshake.
        KafkaUnavailableError: the brokers did not answer within ``timeout``.

    Example:
        >>> admin = lag_admin("127.0.0.1:9094", {"security.protocol": "SASL_SSL"}, 10.0, "ops")  # doctest: +SKIP
        >>> group_lag("clicks", "127.0.0.1:9094", admin=admin).total_lag  # doctest: +SKIP
        0
    """
    admin = TopicAdmin(
        {**(kafka_config or {}), "bootstrap.servers": brokers, "client.id": client_id}, timeout
    )
    admin.check()
    return admin.client


def group_lag(
    group: str,
    brokers: str,
    topics: list[str] | tuple[str, ...] = (),
    timeout: float = 10.0,
    admin: AdminClient | None = None,
    kafka_config: Mapping[str, Any] | None = None,
) -> GroupLag:
    """Committed offset, end offset and lag of every partition of ``group``'s topics.

    Args:
        group: the consumer group (a sluice app's name unless it set ``group_id``).
        brokers: bootstrap servers, ``"host:port[,host:port...]"``.
        topics: only these topics (every partition, committed or not); default: the
            topics the group committed offsets for or is assigned.
        timeout: seconds to wait for the brokers.
        admin: an admin client to reuse (``sluice top`` asks every second).
        kafka_config: librdkafka properties for the admin client (security settings).

    Raises:
        KafkaAuthenticationError: the brokers refused the credentials or the TLS handshake.
        GroupNotFoundError: the group has no members and no committed offsets.
        TopicNotFoundError: a topic of ``topics`` does not exist.
        KafkaUnavailableError: the brokers could not be reached in time.
    """
    if admin is None:  # not `admin or ...`: an idle AdminClient has len() 0 and is falsy
        admin = lag_admin(brokers, kafka_config, timeout, "sluice-lag")
    try:
        described = retry_coordinator(
            # a new request per attempt: a failed future's result() would repeat the same error
            lambda: admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(),  # noqa: PLW0108
            what=f"describing consumer group {group!r}",
        )
        offsets = retry_coordinator(
            lambda: admin.list_consumer_group_offsets(  # noqa: PLW0108
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
            )[group].result(),
            what=f"reading the committed offsets of group {group!r}",
        )
    except KafkaException as exc:
        raise _fail(brokers, f"describing consumer group {group!r}", exc, timeout) from exc
    committed = {
        (tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions or () if tp.error is None
    }
    owners: dict[tuple[str, int], str] = {}
    for member in described.members or ():
        assignment = member.assignment.topic_partitions if member.assignment else ()
        for tp in assignment:
            owners[(tp.topic, tp.partition)] = f"{member.client_id}@{member.host.lstrip('/')}"
    if not committed and not owners and not described.members:
        raise GroupNotFoundError(_no_group_message(admin, group, brokers, timeout))
    wanted = list(dict.fromkeys(topics)) or sorted({t for t, _ in committed} | {t for t, _ in owners})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise _fail(brokers, "reading topic metadata", exc, timeout) from exc
    partitions: list[tuple[str, int]] = []
    for topic in wanted:
        md = metadata.topics.get(topic)
        if md is None or md.error is not None:
            if topics:
                existing = [t for t in metadata.topics if not t.startswith("__")]
                msg = f"topic {topic!r} does not exist on {brokers}{suggest(topic, existing)}"
                raise TopicNotFoundError(msg)
            continue  # committed offsets of a deleted topic
        partitions.extend((topic, p) for p in sorted(md.partitions))
    ends = _offsets(admin, partitions, OffsetSpec.latest(), brokers, timeout)
    starts = _offsets(
        admin, [tp for tp in partitions if tp not in committed], OffsetSpec.earliest(), brokers, timeout
    )
    report = GroupLag(group, _state_name(described.state), len(described.members or ()))
    for tp in partitions:
        end = ends[tp]
        done = committed.get(tp, -1001)
        base = done if done >= 0 else starts.get(tp, end)
        report.partitions.append(
            PartitionLag(tp[0], tp[1], done if done >= 0 else None, end, max(0, end - base), owners.get(tp))
        )
    return report


def _offsets(
    admin: AdminClient, partitions: list[tuple[str, int]], spec: OffsetSpec, brokers: str, timeout: float
) -> dict[tuple[str, int], int]:
    if not partitions:
        return {}
    request = {TopicPartition(t, p): spec for t, p in partitions}
    try:
        futures = admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
        )
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
    except KafkaException as exc:
        raise _fail(brokers, "reading end offsets", exc, timeout) from exc


def _no_group_message(admin: AdminClient, group: str, brokers: str, timeout: float) -> str:
    try:
        groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=timeout).result().valid]
    except KafkaException:
        groups = []
    return (
        f"consumer group {group!r} has no members and no committed offsets on {brokers}"
        f"{suggest(group, groups)}; a sluice app's group is its name unless it sets group_id"
    )
