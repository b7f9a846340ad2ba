"""Exactly-once: transactions across outputs, changelogs and offsets, under kill -9, rebalances and zombies.

Outputs are read with ``isolation.level=read_committed``. The pipeline has a stateless
branch (every input id must appear exactly once) and a running count per user (the
updates of a user must be exactly 1, 2, ..., n: a duplicate or a gap shows up at once).
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict

import orjson
import pytest

from sluice import App
from sluice.errors import ConfigError
from tests.apps import AppProcess, running, wait_for, write_app

USERS = 40

APP = """
import time
from sluice import App

app = App(
    {group!r},
    brokers={bootstrap!r},
    guarantee={guarantee!r},
    state_dir={state!r},
    max_poll_records=200,
    session_timeout_ms=6000,
    heartbeat_interval_ms=1000,
    progress_interval="2s",
)

def slow(e):
    time.sleep({delay})
    return {{"id": e["id"]}}

events = app.stream({src!r})
events.map(slow).to({ids!r})
events.key_by(lambda e: e["user"]).count(name="per-user").current().to({counts!r})
"""


def produce_input(kafka, src: str, n: int) -> None:
    kafka.produce(
        src, [(f"user-{i % USERS}", orjson.dumps({"id": i, "user": f"user-{i % USERS}"})) for i in range(n)]
    )


def write_pipeline(kafka, tmp_path, guarantee: str, delay: float, partitions: int = 3) -> dict:
    src = kafka.create_topic(partitions=partitions)
    ids, counts = f"ids-{uuid.uuid4().hex[:8]}", f"counts-{uuid.uuid4().hex[:8]}"
    group = f"eos-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([ids, counts, f"{group}-per-user-repartition", f"{group}-per-user-changelog"])
    source = APP.format(
        group=group,
        bootstrap=kafka.bootstrap,
        guarantee=guarantee,
        state=str(tmp_path / "state"),
        delay=delay,
        src=src,
        ids=ids,
        counts=counts,
    )
    module = write_app(tmp_path, f"app_{group.replace('-', '_')}", source)
    return {
        "src": src,
        "ids": ids,
        "counts": counts,
        "group": group,
        "module": module,
        "partitions": partitions,
    }


def finished(kafka, p: dict, n: int) -> bool:
    """Every input record is committed and every user's running count has reached its total."""
    src_done = sum(max(o, 0) for o in kafka.committed(p["group"], p["src"], p["partitions"]).values())
    if src_done < n:
        return False
    # offsets can't tell for the other topics (transaction markers take offsets too)
    counted = kafka.drain(p["counts"], idle=2, timeout=60, **{"isolation.level": "read_committed"})
    reached: dict[str, int] = {}
    for r in counted:
        v = orjson.loads(r.value)
        reached[v["key"]] = max(reached.get(v["key"], 0), v["value"])
    expected = Counter(f"user-{i % USERS}" for i in range(n))
    return all(reached.get(user, 0) >= count for user, count in expected.items())


def read_committed(kafka, topic: str) -> list[dict]:
    return [
        orjson.loads(r.value)
        for r in kafka.drain(topic, idle=4, timeout=180, **{"isolation.level": "read_committed"})
    ]


def check(ids: list[dict], counts: list[dict], n: int) -> tuple[int, int]:
    """(duplicated ids, count updates out of sequence); every id must be there."""
    seen = Counter(v["id"] for v in ids)
    assert set(seen) == set(range(n)), f"missing ids: {sorted(set(range(n)) - set(seen))[:10]}"
    by_user: dict[str, list[int]] = defaultdict(list)
    for v in counts:
        by_user[v["key"]].append(v["value"])
    expected = Counter(f"user-{i % USERS}" for i in range(n))
    out_of_sequence = 0
    for user, values in by_user.items():
        out_of_sequence += sum(1 for i, value in enumerate(values) if value != i + 1)
        assert max(values) >= expected[user], f"{user}: counted {max(values)} of {expected[user]}"
    return sum(c - 1 for c in seen.values()), out_of_sequence


def kill_and_restart(
    tmp_path, p: dict, kafka, n: int, kills: int, seed: int, second_worker: bool, on_cluster=None
):
    rng = random.Random(seed)
    worker = AppProcess(tmp_path, p["module"], log_name="w0.log")
    for k in range(kills):
        time.sleep(rng.uniform(1.5, 4.0))
        if second_worker and k == kills // 3:
            other = AppProcess(tmp_path, p["module"], log_name="w1.log")  # joins: partitions move
            time.sleep(rng.uniform(4.0, 6.0))
            other.terminate()  # leaves: they move back
        if on_cluster is not None and k == kills // 2:
            on_cluster()
        worker.kill9()
        worker = AppProcess(tmp_path, p["module"], log_name=f"w0-{k}.log")
    try:
        wait_for(lambda: finished(kafka, p, n), timeout=600, interval=3, what="all records committed")
    finally:
        assert worker.terminate() == 0, worker.log()[-3000:]


@pytest.mark.timeout(1500)
def test_kill9_ten_times_with_a_worker_joining_and_a_broker_dying_gives_every_output_exactly_once(
    cluster, tmp_path
):
    kafka = cluster.kafka
    n = 200_000
    p = write_pipeline(kafka, tmp_path, "exactly_once", delay=0.00002)
    produce_input(kafka, p["src"], n)

    def broker_dies_and_returns() -> None:
        node = 3
        cluster.kill(node)
        time.sleep(3)
        cluster.restart(node)

    kill_and_restart(
        tmp_path, p, kafka, n, kills=10, seed=11, second_worker=True, on_cluster=broker_dies_and_returns
    )
    duplicates, out_of_sequence = check(
        read_committed(kafka, p["ids"]), read_committed(kafka, p["counts"]), n
    )
    assert (duplicates, out_of_sequence) == (0, 0)


@pytest.mark.timeout(600)
def test_the_same_run_at_least_once_repeats_records(kafka, tmp_path):
    """Proof that the exactly-once test can fail: without transactions, kill -9 repeats records."""
    n = 60_000
    p = write_pipeline(kafka, tmp_path, "at_least_once", delay=0.00005)
    produce_input(kafka, p["src"], n)
    kill_and_restart(tmp_path, p, kafka, n, kills=4, seed=5, second_worker=False)
    duplicates, out_of_sequence = check(
        read_committed(kafka, p["ids"]), read_committed(kafka, p["counts"]), n
    )
    assert duplicates > 0 or out_of_sequence > 0


@pytest.mark.timeout(600)
def test_a_zombie_worker_cannot_commit(kafka, tmp_path):
    """A worker paused (SIGSTOP) past its session timeout loses its partitions; resumed, it is fenced."""
    n = 30_000
    p = write_pipeline(kafka, tmp_path, "exactly_once", delay=0.0002)
    produce_input(kafka, p["src"], n)
    zombie = AppProcess(tmp_path, p["module"], log_name="zombie.log")
    wait_for(
        lambda: sum(max(o, 0) for o in kafka.committed(p["group"], p["src"], 3).values()) > 2_000,
        timeout=60,
        what="the first worker committing",
    )
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        survivor = AppProcess(tmp_path, p["module"], log_name="survivor.log")
        time.sleep(12)  # the zombie's session expires; the survivor owns every partition
    finally:
        os.kill(zombie.pid, signal.SIGCONT)  # resumes with an open transaction of a stale generation
    wait_for(lambda: finished(kafka, p, n), timeout=240, what="all records committed")
    survivor.terminate()
    zombie.terminate()
    duplicates, out_of_sequence = check(
        read_committed(kafka, p["ids"]), read_committed(kafka, p["counts"]), n
    )
    assert (duplicates, out_of_sequence) == (0, 0)
    assert "fenced" in zombie.log() or "aborted" in zombie.log() or "lost" in zombie.log(), zombie.log()[
        -3000:
    ]


def test_exactly_once_single_process_commits_outputs_state_and_offsets_together(
    kafka, topic_factory, tmp_path
):
    src = topic_factory(partitions=2)
    ids, counts = f"ids-{uuid.uuid4().hex[:8]}", f"counts-{uuid.uuid4().hex[:8]}"
    n = 3_000
    produce_input(kafka, src, n)
    app = App(
        f"eos-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, guarantee="exactly_once", state_dir=tmp_path
    )
    events = app.stream(src)
    events.map(lambda e: {"id": e["id"]}).to(ids)
    events.key_by(lambda e: e["user"]).count(name="c").current().to(counts)
    kafka.created.extend([ids, counts, f"{app.name}-c-repartition", f"{app.name}-c-changelog"])
    with running(app) as outcome:
        wait_for(
            lambda: sum(kafka.committed(app.group_id, src, 2).values()) >= n,
            what="committed",
            outcome=outcome,
        )
        # the counting stage reads the repartition topic after the source: wait until it has
        # committed up to that topic's end (its last offset is a transaction marker)
        repartition = f"{app.name}-c-repartition"
        wait_for(
            lambda: all(
                end == 0 or kafka.committed(app.group_id, repartition, 2)[p] >= end - 1
                for p, end in kafka.end_offsets(repartition, 2).items()
            ),
            what="the counting stage caught up",
            outcome=outcome,
        )
    assert app.stats.commits >= 1
    duplicates, out_of_sequence = check(read_committed(kafka, ids), read_committed(kafka, counts), n)
    assert (duplicates, out_of_sequence) == (0, 0)


def test_exactly_once_refuses_sinks_that_are_not_idempotent(kafka, topic_factory, tmp_path):
    src = topic_factory()
    app = App(
        f"eos-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, guarantee="exactly_once", state_dir=tmp_path
    )
    app.stream(src).sink(print)
    with pytest.raises(ConfigError, match="idempotent"):
        app.run(install_signal_handlers=False)
    with pytest.raises(ConfigError, match="guarantee"):
        App("x", guarantee="twice")  # type: ignore[arg-type]
