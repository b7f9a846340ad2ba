"""``sluice run --workers N`` with static membership: one ``group.instance.id`` per worker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from sluice import App
from tests.apps import AppProcess, wait_for, write_app


def test_group_instance_id_gets_the_worker_index(monkeypatch):
    monkeypatch.setenv("SLUICE_WORKER_INDEX", "1")
    app = App("static", brokers="127.0.0.1:9092", consumer_config={"group.instance.id": "clicks-host7"})
    assert app.settings.consumer_config()["group.instance.id"] == "clicks-host7-w1"
    monkeypatch.delenv("SLUICE_WORKER_INDEX")
    alone = App("static", brokers="127.0.0.1:9092", consumer_config={"group.instance.id": "clicks-host7"})
    assert alone.settings.consumer_config()["group.instance.id"] == "clicks-host7", "one process: as given"


def _members(admin: AdminClient, group: str) -> set[str]:
    """The instance ids of the group's members that hold partitions."""
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {m.group_instance_id for m in described.members if m.assignment.topic_partitions}


@pytest.mark.timeout(180)
def test_two_static_workers_share_the_partitions_instead_of_fencing_each_other(
    kafka, topic_factory, tmp_path
):
    src, out = topic_factory(partitions=4), topic_factory(partitions=4)
    group = f"static-{uuid.uuid4().hex[:8]}"
    module = write_app(
        tmp_path,
        "static_app",
        f"""
        from sluice import App
        app = App({group!r}, brokers={kafka.bootstrap!r}, consumer_config={{"group.instance.id": "ci"}})
        app.stream({src!r}).to({out!r})
        """,
    )
    kafka.produce(src, [(f"k{i}", b'{"i": %d}' % i) for i in range(400)])
    both = AppProcess(tmp_path, module, workers=2)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap, "log_level": 4})
    try:
        wait_for(lambda: _members(admin, group) == {"ci-w0", "ci-w1"}, 90, what="both workers assigned")
        time.sleep(1.0)  # a fenced worker would exit on its next poll
        assert both.proc.poll() is None, both.log()
        assert len(kafka.drain(out, expected=400, timeout=60)) == 400
    finally:
        code = both.terminate()
    assert code == 0, both.log()
