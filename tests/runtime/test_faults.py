"""Crashes, graceful stops and workers joining/leaving, with the app as a real process."""

from __future__ import annotations

import uuid

import orjson
import pytest

from tests.apps import AppProcess, wait_for, write_app

N = 20_000

APP = """
import time
from sluice import App

app = App({group!r}, brokers={bootstrap!r}, commit_interval="100ms", max_poll_records=200, progress_interval="2s")

def slow(e):
    time.sleep(0.0003)
    return {{"id": e["id"]}}

app.stream({src!r}).map(slow).to({out!r})
"""


@pytest.fixture
def pipeline(kafka, topic_factory, tmp_path):
    src, out = topic_factory(partitions=4), topic_factory(partitions=4)
    kafka.produce(src, [(f"k{i % 97}", orjson.dumps({"id": i})) for i in range(N)])
    group = f"faults-{uuid.uuid4().hex[:8]}"
    module = write_app(
        tmp_path, "pipeline_app", APP.format(group=group, bootstrap=kafka.bootstrap, src=src, out=out)
    )

    def outputs() -> int:
        return sum(kafka.end_offsets(out, 4).values())

    def ids() -> list[int]:
        return [orjson.loads(r.value)["id"] for r in kafka.drain(out, idle=3, timeout=120)]

    def done() -> bool:
        return sum(max(o, 0) for o in kafka.committed(group, src, 4).values()) >= N

    return {
        "src": src,
        "out": out,
        "group": group,
        "module": module,
        "outputs": outputs,
        "ids": ids,
        "done": done,
    }


def test_kill9_mid_stream_then_restart_loses_nothing(pipeline, tmp_path, capsys):
    first = AppProcess(tmp_path, pipeline["module"])
    wait_for(lambda: pipeline["outputs"]() >= N // 4, 90, what="a quarter of the outputs")
    first.kill9()
    assert pipeline["outputs"]() < N, "the kill must land mid-stream"

    second = AppProcess(tmp_path, pipeline["module"])
    wait_for(pipeline["done"], 120, what="every input committed (all outputs after restart)")
    assert second.terminate() == 0, second.log()

    ids = pipeline["ids"]()
    assert set(ids) == set(range(N)), f"missing ids: {sorted(set(range(N)) - set(ids))[:10]}"
    with capsys.disabled():
        print(
            f"\n  kill -9 + restart: {len(ids)} outputs for {N} inputs, {len(ids) - N} duplicates (allowed)"
        )


def test_sigterm_then_restart_gives_no_duplicates(pipeline, tmp_path):
    first = AppProcess(tmp_path, pipeline["module"])
    wait_for(lambda: pipeline["outputs"]() >= N // 4, 90, what="a quarter of the outputs")
    assert first.terminate() == 0, first.log()
    assert "SIGTERM received" in first.log()
    assert pipeline["outputs"]() < N

    second = AppProcess(tmp_path, pipeline["module"])
    wait_for(pipeline["done"], 120, what="every input committed (all outputs after restart)")
    assert second.terminate() == 0, second.log()

    ids = pipeline["ids"]()
    assert sorted(ids) == list(range(N)), f"{len(ids) - len(set(ids))} duplicates after a graceful stop"


def test_worker_joining_and_leaving_mid_stream_loses_nothing(pipeline, tmp_path, capsys):
    first = AppProcess(tmp_path, pipeline["module"], log_name="first.log")
    wait_for(lambda: pipeline["outputs"]() >= N // 5, 90, what="a fifth of the outputs")
    second = AppProcess(tmp_path, pipeline["module"], log_name="second.log")
    wait_for(lambda: "assigned" in second.log(), 60, what="the second worker to get partitions")
    assert first.terminate() == 0, first.log()
    wait_for(pipeline["done"], 120, what="every input committed (all outputs after the first worker left)")
    assert second.terminate() == 0, second.log()

    ids = pipeline["ids"]()
    assert set(ids) == set(range(N))
    with capsys.disabled():
        print(f"\n  join + leave: {len(ids)} outputs for {N} inputs, {len(ids) - N} duplicates")


def test_workers_option_runs_processes_in_one_group(pipeline, tmp_path):
    both = AppProcess(tmp_path, pipeline["module"], workers=2)
    wait_for(pipeline["done"], 120, what="every input committed (all outputs with --workers 2)")
    assert both.terminate() == 0, both.log()
    log = both.log()
    assert "started 2 workers" in log
    assert log.count("consuming") == 2
    assert sorted(pipeline["ids"]()) == list(range(N))
