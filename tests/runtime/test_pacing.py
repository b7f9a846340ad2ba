"""Slow handlers keep their group membership: a batch is run in chunks with polls between them."""

from __future__ import annotations

import collections
import time
import uuid

import orjson

from sluice import App
from sluice.runtime.pacing import Pacer
from tests.apps import running, wait_for


def test_pacer_cuts_slow_batches_to_a_quarter_of_the_poll_interval():
    pacer = Pacer(max_poll_interval=10.0)
    assert pacer.chunk(1000) == 16
    pacer.observe(16, 16 * 0.2)
    assert pacer.chunk(1000) * 0.2 <= 2.5
    pacer.observe(12, 12 * 0.5)  # slower: the estimate rises at once
    assert pacer.chunk(1000) == 5
    assert not pacer.overdue(4.9) and pacer.overdue(5.0)


def test_batch_slower_than_max_poll_interval_is_processed_once_and_committed(kafka, topic_factory):
    """Issue 15 item 4: 200 ms per record, 1,000-record polls, max.poll.interval.ms 10 s."""
    src, out = topic_factory(), topic_factory()
    n = 70  # 14 s of work in one consumed batch: past the interval without pacing
    kafka.produce(src, [(f"k{i}".encode(), orjson.dumps({"id": i})) for i in range(n)])
    calls: collections.Counter[int] = collections.Counter()

    def slow(e):
        calls[e["id"]] += 1
        time.sleep(0.2)
        return e

    app = App(
        f"slow-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        max_poll_records=1000,
        max_poll_interval_ms=10_000,
        session_timeout_ms=6_000,
    )
    app.stream(src).map(slow).to(out)
    with running(app) as outcome:
        wait_for(
            lambda: kafka.committed(app.name, src)[0] == n, 90, what="every offset committed", outcome=outcome
        )
        lost = app.stats.rebalances
    assert sorted(calls) == list(range(n))
    assert [i for i, c in calls.items() if c > 1] == []
    assert lost == 1  # the first assignment only: never evicted
    assert len(kafka.drain(out, expected=n)) == n
