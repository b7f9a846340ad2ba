"""``sluice run module:app|path/app.py[:app] [--workers N] [--metrics-port P] [--log-format F] [--log-level L]``."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import click

from sluice.app import App
from sluice.cli._common import ConnectionArgs, connection_options
from sluice.cli._logging import LOG_FORMATS, LOG_LEVELS, configure_logging
from sluice.errors import SluiceError
from sluice.runtime.supervisor import run_workers

logger = logging.getLogger("sluice.cli")


class AppLoadError(click.ClickException):
    """The app could not be imported: shown as one ``sluice: error: ...`` line, exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"sluice: error: {self.format_message()}", err=True, file=file)


def _split_target(target: str) -> tuple[str, str]:
    """``(module or file, attribute)`` of ``module:app``, ``path/app.py:app`` or ``path/app.py``.

    Example:
        >>> _split_target("examples.clicks"), _split_target("apps/clicks.py:pipeline")
        (('examples.clicks', 'app'), ('apps/clicks.py', 'pipeline'))
    """
    where, sep, attr = target.rpartition(":")
    if not sep:
        where, attr = target, ""
    return where, attr or "app"


def _where_in_app(exc: BaseException) -> str:
    """``" (file.py, line N)"``: the innermost frame of the app's own code that raised ``exc``."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return ""  # its message already names the file and line
    sluice_dir = str(Path(__file__).resolve().parent.parent)
    not_the_app = ("<", sluice_dir, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"])
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(not_the_app)]
    return f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        msg = f"no file {str(path)!r} in {os.getcwd()}"
        raise click.BadParameter(msg, param_hint="TARGET")
    # as `python path/app.py` does: the app's folder comes first, so its sibling modules import
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else "__sluice_app__"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"{str(path)!r} cannot be imported as a Python file"
        raise click.BadParameter(msg, param_hint="TARGET")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(module_name: str) -> ModuleType:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            msg = (
                f"no module named {module_name!r} in {os.getcwd()} "
                "(run from the folder that holds it, or give the file: sluice run path/to/app.py)"
            )
            raise click.BadParameter(msg, param_hint="TARGET") from exc
        raise


def load_app(target: str) -> App:
    """Import the App at ``module:attribute`` or ``path/to/file.py[:attribute]`` (default ``app``).

    Modules are imported from the working directory; a file is imported as
    ``python path/to/file.py`` would run it, its folder first on ``sys.path``.

    Raises:
        click.BadParameter: no such module, file or attribute, or not a ``sluice.App`` (exit 2).
        AppLoadError: importing the app raised (a ``ConfigError``, a ``SyntaxError``, a
            missing dependency...): one ``sluice: error:`` line, exit 1.
    """
    where, attr = _split_target(target)
    if not where:
        msg = f"{target!r} is not 'module:app' or 'path/to/app.py' (for example: sluice run myapp:app)"
        raise click.BadParameter(msg, param_hint="TARGET")
    is_file = where.endswith(".py") or os.sep in where or "/" in where
    try:
        module = _import_file(Path(where)) if is_file else _import_module(where)
    except click.ClickException:
        raise
    except SluiceError as exc:
        logger.debug("importing %s failed", where, exc_info=True)
        msg = f"{exc}{_where_in_app(exc)}"
        raise AppLoadError(msg) from exc
    except Exception as exc:  # any error of the app's own import is reported as one line
        logger.debug("importing %s failed", where, exc_info=True)
        msg = (
            f"importing {where} failed: {type(exc).__name__}: {exc}{_where_in_app(exc)} "
            "(--log-level debug shows the traceback)"
        )
        raise AppLoadError(msg) from exc
    app = getattr(module, attr, None)
    if app is None:
        msg = f"{'file' if is_file else 'module'} {where!r} has no attribute {attr!r}"
        raise click.BadParameter(msg, param_hint="TARGET")
    if not isinstance(app, App):
        msg = f"{where}:{attr} is a {type(app).__name__}, not a sluice.App"
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
@click.argument("target", metavar="TARGET")
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
    help="How much to log; librdkafka's own lines are shown from warnings up.",
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
    """Run a sluice App, given as module:attribute or path/to/app.py[:attribute].

    TARGET is a module importable from the working directory with the App's
    variable name, as in examples.clicks:app, or a Python file, as in
    apps/clicks.py or apps/clicks.py:app; the name defaults to app.

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
