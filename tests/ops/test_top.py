"""``sluice top`` in a pseudo-terminal (pexpect): the numbers on screen are the app's."""

from __future__ import annotations

import os
import re
import sys
import uuid

import orjson
import pexpect

from sluice import App
from tests.apps import ROOT, running, wait_for, write_app
from tests.ops.helpers import scrape, strip_ansi, values


def run_top(*args: str, cwd: str | None = None) -> str:
    """Run ``sluice top ARGS`` in a 50x160 terminal until it exits; return the screen text it wrote."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "sluice", "top", *args],
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TERM": "xterm-256color",
            "COLUMNS": "160",
            "LINES": "50",
        },
        dimensions=(50, 160),
        encoding="utf-8",
        timeout=60,
    )
    child.expect(pexpect.EOF)
    child.close()
    text = strip_ansi(child.before)
    assert child.exitstatus == 0, text
    return text


def test_top_shows_the_running_apps_partitions_lag_and_dead_letters(kafka, topic_factory):
    src = topic_factory(partitions=2)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    kafka.created += [out, dlq]
    good = [(f"k{i}".encode(), orjson.dumps({"i": i})) for i in range(40)]
    kafka.produce(src, [*good, (b"bad", b"{oops"), (b"bad", b"{oops")])
    ends = kafka.end_offsets(src, 2)
    app = App(f"top-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="200ms", metrics_port=0)
    app.on_error(retries=0, dead_letter=dlq)
    app.stream(src).map(lambda e: e).to(out)
    with running(app) as outcome:
        base = app._runner.metrics.url
        wait_for(
            lambda: (
                {
                    int(dict(k)["partition"]): v
                    for k, v in values(scrape(base), "sluice_commit_offset").items()
                }
                == ends
            ),
            timeout=60,
            what="everything committed",
            outcome=outcome,
        )
        screen = run_top("--metrics", base.removeprefix("http://"), "--iterations", "3", "--interval", "0.5")

    assert f"{app.name} (group {app.name})" in screen
    assert "status: ready" in screen
    for p, end in ends.items():
        # Topic, Partition, Committed, End, Lag, In/s (0: nothing new between refreshes)
        assert re.search(rf"{src}\s+{p}\s+{end:,}\s+{end:,}\s+0\s+0\b", screen), screen
    assert re.search(r"lag: 0\s+in-flight: 0\s+dead letters: 2\s+rebalances: 1\b", screen), screen
    assert re.search(r"deserialize\s+JSONDecodeError\s+2\b", screen), screen
    assert f"records out: {out} 40" in screen


APP = """
from sluice import App
app = App({name!r}, brokers={brokers!r}, commit_interval="200ms")
app.stream({src!r}).sink(lambda v: None)
"""


def test_top_of_an_app_without_endpoint_reads_its_group_from_the_brokers(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=2)
    name = f"top-b-{uuid.uuid4().hex[:8]}"
    write_app(tmp_path, "brokerapp", APP.format(name=name, brokers=kafka.bootstrap, src=src))
    kafka.produce(src, [(f"k{i}".encode(), b"{}") for i in range(30)])
    ends = kafka.end_offsets(src, 2)
    sys.path.insert(0, str(tmp_path))
    try:
        import brokerapp

        with running(brokerapp.app):
            wait_for(lambda: kafka.committed(name, src, 2) == ends, timeout=60, what="everything committed")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("brokerapp", None)

    screen = run_top("brokerapp:app", "--iterations", "2", "--interval", "0.5", cwd=str(tmp_path))
    assert f"group {name}" in screen
    assert f"via brokers {kafka.bootstrap}" in screen
    assert "status: Empty (0 members)" in screen
    for p, end in ends.items():
        # Topic, Partition, Committed, End, Lag, Done/s
        assert re.search(rf"{src}\s+{p}\s+{end:,}\s+{end:,}\s+0\s+0\b", screen), screen
    assert "in-flight: -   dead letters: -   rebalances: -" in screen
