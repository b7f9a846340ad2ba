"""Durations: units or a timedelta everywhere; a bare number (seconds? milliseconds?) is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sluice import App, sinks
from sluice._durations import format_duration, parse_duration
from sluice.errors import ConfigError
from sluice.errors.policy import ErrorPolicy


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        ("1m0.5s", 60.5),
        ("1s250ms", 1.25),
    ],
)
def test_compound_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_timedelta_and_zero() -> None:
    assert parse_duration(timedelta(minutes=1, milliseconds=500)) == 60.5
    assert parse_duration(0) == 0.0
    assert parse_duration(timedelta(0)) == 0.0


@pytest.mark.parametrize("text", ["", "ms", "1", "1x", "1m30", "30s1", "-1s", "1h-30m", "5 minutes", "1e3s"])
def test_malformed_strings_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text, "grace")


def test_a_bare_number_names_the_parameter_and_the_value_and_asks_for_a_unit() -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(60000, "window: tumbling")
    assert str(info.value) == (
        "window: tumbling=60000 has no unit: milliseconds (1m) or seconds (16h40m)? "
        "Write '60000ms' or '60000s', or timedelta(seconds=60000)"
    )


@pytest.mark.parametrize("seconds", [0.001, 0.25, 1, 59.999, 60, 90.5, 3600, 5400, 86_400 + 1.5, 60_000])
def test_format_duration_reads_back_as_the_same_duration(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: App("d", commit_interval=1), "commit_interval=1 has no unit"),
        (lambda: App("d", shutdown_timeout=30), "shutdown_timeout=30 has no unit"),
        (lambda: App("d", progress_interval=10.0), "progress_interval=10.0 has no unit"),
        (lambda: ErrorPolicy.from_options(backoff=0.1), "backoff=0.1 has no unit"),
        (lambda: ErrorPolicy.from_options(retry_topics=[30]), "retry_topics delay=30 has no unit"),
        (lambda: sinks.sqlite(":memory:", table="t", timeout=30), "timeout=30 has no unit"),
        (lambda: App("d").stream("s").map_batch(lambda df: df, max_wait=50), "max_wait=50 has no unit"),
        (lambda: App("d").stream("s").window(tumbling=60000), "window: tumbling=60000 has no unit"),
        (lambda: App("d").stream("s").window(tumbling="1m", grace=10), "window: grace=10 has no unit"),
    ],
)
def test_every_duration_parameter_refuses_a_bare_number(build, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        build()


def test_every_duration_parameter_takes_a_timedelta() -> None:
    app = App("d", commit_interval=timedelta(milliseconds=200), shutdown_timeout=timedelta(seconds=5))
    app.on_error(backoff=timedelta(milliseconds=10), retry_topics=[timedelta(seconds=1), "1m30s"])
    stream = app.stream("s").key_by(lambda e: e)
    stream.window(tumbling=timedelta(minutes=1), grace=timedelta(seconds=10)).count().final().to("out")
    policy = ErrorPolicy.from_options(backoff="10ms..1m30s", retry_topics=[timedelta(seconds=1), "1m30s"])
    assert (policy.backoff_initial, policy.backoff_max) == (0.01, 90.0)
    assert policy.retry_topics == (1.0, 90.0)
