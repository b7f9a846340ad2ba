"""``sluice top``: a live terminal view of a running app, refreshed about once a second.

``sluice top module:app`` reads the app's metrics endpoint when the App has a
``metrics_port``, its consumer group on its brokers otherwise. ``sluice top --group G``
reads the group from the brokers; ``--metrics HOST:PORT`` reads an endpoint (a
``sluice run --metrics-port`` process, or the parent of ``--workers N``, which
shows every worker). Runs until Ctrl-C; ``--once`` prints one view and exits.

Example:
    >>> from click.testing import CliRunner
    >>> from sluice.cli.main import cli
    >>> result = CliRunner().invoke(cli, ["top"])
    >>> result.exit_code, "give MODULE:APP, --group G or --metrics URL" in result.output
    (2, True)
"""

from __future__ import annotations

import sys
import time
import urllib.parse

import click
from rich.console import Console
from rich.live import Live

from sluice.cli._common import (
    ConnectionArgs,
    connection_options,
    console,
    errors_as_one_line,
    topic_name_callback,
)
from sluice.kafka.config import ConnectionLayer
from sluice.metrics.top import BrokerSource, MetricsSource, TopSample, normalize_metrics_url, render

__all__ = ["top"]


def _metrics_url(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    url = normalize_metrics_url(value)
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in ("http", "https") or not parsed.hostname or port == -1 or parsed.path:
        msg = f"{value!r} is not a metrics endpoint (give HOST:PORT or http://HOST:PORT/metrics)"
        raise click.BadParameter(msg, param=param)
    return url


@click.command("top")
@click.argument("target", metavar="[MODULE:APP]", required=False)
@click.option("--group", "-g", help="Watch this consumer group through the brokers.")
@click.option(
    "--metrics",
    "-m",
    "metrics_url",
    metavar="URL",
    callback=_metrics_url,
    help="Read the app's metrics endpoint (HOST:PORT or http://HOST:PORT/metrics).",
)
@click.option(
    "--topic",
    "-t",
    "topics",
    multiple=True,
    callback=topic_name_callback,
    help="With the brokers: only this topic (repeatable).",
)
@connection_options
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one view and exit (1 when the source cannot be read).")
@click.option("--iterations", type=click.IntRange(min=1), help="Exit after this many refreshes.")
def top(
    target: str | None,
    group: str | None,
    metrics_url: str | None,
    topics: tuple[str, ...],
    kafka: ConnectionArgs,
    interval: float,
    once: bool,
    iterations: int | None,
) -> None:
    """A live view of an app: per-partition lag, in/out rates, in-flight, dead letters, rebalances.

    From another terminal, against MODULE:APP (its metrics endpoint if it has a
    metrics_port, else its consumer group on the brokers), --group G (the brokers),
    or --metrics URL (an endpoint). Ctrl-C quits.
    """
    if target is None and group is None and metrics_url is None:
        msg = "give MODULE:APP, --group G or --metrics URL (the app to watch)"
        raise click.UsageError(msg)
    if target is not None and group is not None:
        msg = "give either MODULE:APP or --group, not both"
        raise click.UsageError(msg)
    if group is not None and not group.strip():
        msg = "the consumer group must not be empty"
        raise click.BadParameter(msg, param_hint="--group")
    title = ""
    app_layer: ConnectionLayer | None = None
    if target is not None:
        from sluice.cli.run import load_app

        app = load_app(target)
        group = app.group_id
        app_layer = ConnectionLayer(app.brokers, app.settings.kafka_config)
        title = f"{app.name} (group {group})"
        if metrics_url is None and app.metrics_port:
            metrics_url = f"http://127.0.0.1:{app.metrics_port}"
    out = console()
    with errors_as_one_line(interrupted_code=0):
        if metrics_url is not None:
            source: MetricsSource | BrokerSource = MetricsSource(metrics_url)
        else:
            assert group is not None
            conn = kafka.resolve(app_layer)
            source = BrokerSource(group, conn.brokers, topics, kafka_config=conn.properties)
            title = title or f"group {group}"
        if once:
            sample = _sample(source, title)
            out.print(render(sample))
            if sample.error:
                sys.exit(1)
            return
        _watch(source, title, out, interval, iterations)


def _sample(source: MetricsSource | BrokerSource, title: str) -> TopSample:
    sample = source.sample()
    if title and (not sample.title or sample.title.startswith("group ")):
        sample.title = title
    return sample


def _watch(
    source: MetricsSource | BrokerSource, title: str, out: Console, interval: float, iterations: int | None
) -> None:
    previous: TopSample | None = None
    done = 0
    live = Live(console=out, auto_refresh=False, transient=False) if out.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            started = time.monotonic()
            sample = _sample(source, title)
            view = render(sample, previous)
            if live is not None:
                live.update(view, refresh=True)
            else:
                out.print(view)
                out.print()
            if not sample.error:
                previous = sample
            done += 1
            if iterations is not None and done >= iterations:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        if live is not None:
            live.stop()
