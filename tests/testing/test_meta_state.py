"""Record metadata and keyed state on the TestDriver (the real runtime, broker-free): what users' tests see."""

from __future__ import annotations

import pytest

from sluice import App
from sluice.testing import TestDriver

pytestmark = pytest.mark.memory


def test_meta_state_ttl_and_a_failing_call_on_the_driver():
    app = App("sessions")
    app.on_error(retries=1, backoff="1s..1s")

    def count(e, meta, state):
        state["n"] = state.get("n", 0) + 1
        if e.get("boom"):
            raise RuntimeError("after writing the state")
        return {
            "user": meta.key,
            "n": state["n"],
            "at": meta.timestamp,
            "trace": meta.header("trace", b"").decode(),
        }

    (
        app.stream("clicks", value="json")
        .key_by(lambda c: c["user"])
        .map(count, meta=True, state=True, state_ttl="10s", name="n")
        .with_headers(lambda v: {"n": str(v["n"])})
        .to("counts")
    )
    with TestDriver(app, partitions=2) as driver:
        driver.send("clicks", {"user": "a"}, timestamp=1_000, headers=[("trace", b"t1")])
        driver.send("clicks", {"user": "a", "boom": True}, timestamp=2_000)
        driver.send("clicks", {"user": "a"}, timestamp=3_000)
        driver.send("clicks", {"user": "a"}, timestamp=14_000)  # 11 s after its last change: expired
        out = driver.output("counts")
        [letter] = driver.dead_letters()
    assert [(r.key, r.value["n"], r.value["at"], r.headers) for r in out] == [
        ("a", 1, 1_000, {"n": "1"}),
        ("a", 2, 3_000, {"n": "2"}),
        ("a", 1, 14_000, {"n": "1"}),
    ]
    assert [r.value["trace"] for r in out] == ["t1", "", ""]
    assert letter.headers["sluice.error.exception"] == "RuntimeError"
