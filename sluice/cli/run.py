"""``sluice run module:app [--workers N]``."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from sluice.app import App
from sluice.errors import SluiceError
from sluice.runtime.supervisor import run_workers

logger = logging.getLogger("sluice.cli")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("sluice.kafka.librdkafka").setLevel(max(logging.WARNING, logging.getLogger().level))


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
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
def run(target: str, workers: int, log_level: str) -> None:
    """Run the sluice App found at MODULE:APP (e.g. ``examples.clicks:app``).

    SIGTERM or SIGINT stops fetching, finishes the records in flight, flushes,
    commits their offsets and exits 0.
    """
    configure_logging(log_level)
    if workers > 1:
        load_app(target)  # fail fast, in the parent, on a bad target
        args = ["run", target, "--workers", "1", "--log-level", log_level]
        sys.exit(run_workers(args, workers))
    app = load_app(target)
    try:
        clean = app.run()
    except SluiceError as exc:
        click.echo(f"sluice: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(0 if clean else 1)
