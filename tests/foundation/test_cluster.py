"""The 3-node cluster: it forms, and survives kill -9 of one node without losing acknowledged records."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cluster


def test_cluster_forms_with_three_brokers(cluster):
    md = cluster.kafka.admin.list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert all(cluster.pid(n) for n in (1, 2, 3))


def test_acks_all_produce_survives_a_killed_node_and_consumer_reads_everything(cluster):
    kafka = cluster.kafka
    topic = kafka.create_topic(partitions=3, replication=3)
    assert kafka.produce(topic, [(f"a{i}", f"before-{i}") for i in range(500)]) == 500

    killed_pid = cluster.kill(2)
    assert cluster.pid(2) is None and killed_pid > 0
    # min.insync.replicas=2 with 2 of 3 nodes alive: acks=all still succeeds
    assert (
        kafka.produce(topic, [(f"b{i}", f"during-{i}") for i in range(500)], **{"message.timeout.ms": 60000})
        == 500
    )

    cluster.restart(2)
    assert cluster.pid(2) is not None
    assert kafka.produce(topic, [(f"c{i}", f"after-{i}") for i in range(500)]) == 500

    values = {r.value.decode() for r in kafka.drain(topic, expected=1500, timeout=60)}
    expected = {f"{phase}-{i}" for phase in ("before", "during", "after") for i in range(500)}
    assert values == expected
