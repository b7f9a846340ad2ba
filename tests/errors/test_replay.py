"""Dead letters replayed after the bug is fixed reach the output; nothing is lost on the way."""

from __future__ import annotations

import subprocess
import sys
import uuid

import orjson

from sluice import App
from tests.apps import running, wait_for


def test_replayed_dead_letters_reach_the_output_once_the_bug_is_fixed(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(
        src, [(f"k{i}", orjson.dumps({"id": i, "price": None if i % 10 == 0 else i})) for i in range(50)]
    )
    fixed = {"yes": False}

    def total(e):
        price = e["price"] if fixed["yes"] else e["price"] * 1  # the "bug": None prices crash
        return {"id": e["id"], "total": (price or 0) * 2}

    app = App(f"replay-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    dlq = f"{app.name}.dlq"
    app.on_error(retries=1, backoff="1ms")
    app.stream(src).map(total).to(out)

    with running(app) as outcome:
        assert len(kafka.drain(out, expected=45)) == 45
        dead = kafka.drain(dlq, expected=5)
        assert len(dead) == 5
        fixed["yes"] = True
        replay = subprocess.run(
            [sys.executable, "-m", "sluice", "dlq", "replay", dlq, "--brokers", kafka.bootstrap],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replay.returncode == 0, replay.stderr
        wait_for(
            lambda: sum(kafka.end_offsets(out, 2).values()) == 50,
            30,
            what="replayed outputs",
            outcome=outcome,
        )
    kafka.created.append(dlq)

    outputs = kafka.drain(out, expected=50)
    assert sorted(orjson.loads(r.value)["id"] for r in outputs) == list(range(50))
    replayed = [
        r for r in kafka.drain(src, expected=55) if any(k == "sluice.replay.count" for k, _ in r.headers)
    ]
    assert len(replayed) == 5
    assert all(dict(r.headers)["sluice.replay.count"] == b"1" for r in replayed)
