"""``sluice run module:app [--workers N] [--metrics-port P] [--log-format text|json] [--log-level L]``."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from sluice.app import App
from sluice.cli._common import ConnectionArgs, connection_options
from sluice.cli._logging import LOG_FORMATS, LOG_LEVELS, configure_logging
from sluice.errors import SluiceError
from sluice.runtime.supervisor import run_workers

logger = logging.getLogger("sluice.cli")


def load_app(target: str) -> App:
    """Import ``module:attribute`` (attribute defaults to ``app``) from the working directory."""
    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    if not module_name:
        msg = f"{target!r} is not 'module:app' (for example: sluice run myapp:app)"
        raise click.BadParameter(msg, param_hint="TARGET")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            msg = f"no module named {module_name!r} in {os.getcwd()} (run from the folder that holds it)"
            raise click.BadParameter(msg, param_hint="TARGET") from exc
        raise
    app = getattr(module, attr, None)
    if app is None:
        msg = f"module {module_name!r} has no attribute {attr!r}"
        raise click.BadParameter(msg, param_hint="TARGET")
    if not isinstance(app, App):
        msg = f"{target} is a {type(app).__name__}, not a sluice.App"
        raise click.BadParameter(msg, param_hint="TARGET")
    return app


def _load_connected(target: str, kafka: ConnectionArgs) -> App:
    """The app at ``target``, with ``--brokers``/``--config`` over its own connection settings."""
    app = load_app(target)
    if kafka.brokers or kafka.config_file:
        try:
            layer = kafka.layer()
            app.override_kafka(layer.brokers, dict(layer.properties))
        except SluiceError as exc:
            click.echo(f"sluice: error: {exc}", err=True)
            sys.exit(1)
    return app


@click.command()
@click.argument("target", metavar="MODULE:APP")
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes in the same consumer group (scale out; more machines = more processes).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus /metrics, /healthz and /readyz on this port (0: any free port). "
    "With --workers, this process serves all workers' metrics. Default: the App's metrics_port.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default="text",
    show_default=True,
    help="text: one readable line per event; json: one JSON object per line (for log shippers).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
@connection_options
def run(
    target: str,
    workers: int,
    metrics_port: int | None,
    log_format: str,
    log_level: str,
    kafka: ConnectionArgs,
) -> None:
    """Run the sluice App found at MODULE:APP (e.g. ``examples.clicks:app``).

    SIGTERM or SIGINT stops fetching, finishes the records in flight, flushes,
    commits their offsets and exits 0.
    """
    configure_logging(log_level, log_format.lower())
    if workers > 1:
        app = _load_connected(target, kafka)  # fail fast, in the parent, on a bad target or config
        port = metrics_port if metrics_port is not None else app.metrics_port
        args = ["run", target, "--workers", "1", "--log-level", log_level, "--log-format", log_format]
        args += kafka.argv()
        try:
            code = run_workers(args, workers, metrics_port=port)
        except SluiceError as exc:
            click.echo(f"sluice: error: {exc}", err=True)
            sys.exit(1)
        sys.exit(code)
    app = _load_connected(target, kafka)
    if metrics_port is not None:
        app.metrics_port = metrics_port
    try:
        clean = app.run()
    except SluiceError as exc:
        click.echo(f"sluice: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(0 if clean else 1)
