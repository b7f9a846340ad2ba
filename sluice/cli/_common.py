"""What the operator commands share: the brokers option, the console, one-line errors.

Example:
    >>> positive_count(None, None, 5)
    5
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console

from sluice._names import check_topic_name
from sluice.errors import SluiceError

__all__ = [
    "DEFAULT_BROKERS",
    "brokers_option",
    "console",
    "errors_as_one_line",
    "positive_count",
    "timeout_option",
    "topic_argument",
]

DEFAULT_BROKERS = "127.0.0.1:9092"
_librdkafka_logger = logging.getLogger("sluice.kafka.librdkafka")


def _topic_name(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    names = value if isinstance(value, tuple) else (value,)
    for name in names:
        try:
            check_topic_name(name, "")
        except ValueError as exc:  # ConfigError
            raise click.BadParameter(str(exc).strip(), param=param) from None
    return value


def topic_argument(name: str = "topic") -> Any:
    """A TOPIC argument checked against Kafka's topic-name rule before any broker is contacted."""
    return click.argument(name, callback=_topic_name)


def topic_name_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    return _topic_name(ctx, param, value)


def _brokers(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value or not value.strip():
        msg = "must be 'host:port[,host:port...]'"
        raise click.BadParameter(msg, param=param)
    return value.strip()


def positive_count(
    _ctx: click.Context | None, param: click.Parameter | None, value: int | None
) -> int | None:
    if value is not None and value < 1:
        msg = f"{value} is not a positive number of records"
        raise click.BadParameter(msg, param=param)
    return value


brokers_option = click.option(
    "--brokers",
    "-b",
    envvar="SLUICE_BROKERS",
    default=DEFAULT_BROKERS,
    show_default=f"$SLUICE_BROKERS or {DEFAULT_BROKERS}",
    callback=_brokers,
    help="Kafka bootstrap servers.",
)

timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the brokers.",
)


def console(stderr: bool = False) -> Console:
    """A rich console; piped output is not cut at 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    wide = stream.isatty() or "COLUMNS" in os.environ
    return Console(highlight=False, width=None if wide else 200, stderr=stderr)


@contextlib.contextmanager
def errors_as_one_line(interrupted_code: int = 130) -> Iterator[None]:
    """Report a ``SluiceError`` as one ``sluice: error: ...`` line (exit 1); Ctrl-C exits quietly."""
    # librdkafka's own retry chatter is noise here: what failed is reported once, as one line
    level = _librdkafka_logger.level
    _librdkafka_logger.setLevel(logging.CRITICAL)
    try:
        yield
    except SluiceError as exc:
        click.echo(f"sluice: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        if interrupted_code:
            click.echo("sluice: interrupted", err=True)
        sys.exit(interrupted_code)
    finally:
        _librdkafka_logger.setLevel(level)
