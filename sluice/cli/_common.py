"""What the operator commands share: the connection options, the console, one-line errors.

Example:
    >>> positive_count(None, None, 5)
    5
    >>> ConnectionArgs("127.0.0.1:9094", None).argv()
    ['--brokers', '127.0.0.1:9094']
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console

from sluice._names import check_topic_name
from sluice.errors import SluiceError
from sluice.kafka.config import (
    DEFAULT_BROKERS,
    ConnectionLayer,
    check_client_properties,
    environment_layer,
    resolve_connection,
)
from sluice.kafka.properties import load_properties, redact

__all__ = [
    "DEFAULT_BROKERS",
    "ConnectionArgs",
    "KafkaConnection",
    "connection_options",
    "console",
    "errors_as_one_line",
    "positive_count",
    "timeout_option",
    "topic_argument",
]

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


def _brokers(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
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


@dataclass(frozen=True, repr=False)
class KafkaConnection:
    """The brokers and client properties a command connects with (its ``repr`` hides secrets)."""

    brokers: str
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"KafkaConnection(brokers={self.brokers!r}, properties={redact(self.properties)!r})"

    def config(self, client: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """librdkafka properties: the shared ones, the brokers, then ``client``'s own."""
        return {**self.properties, "bootstrap.servers": self.brokers, **(client or {})}


@dataclass(frozen=True)
class ConnectionArgs:
    """``--brokers`` and ``--config`` as given on the command line (resolved later, in one place)."""

    brokers: str | None
    config_file: str | None

    def layer(self) -> ConnectionLayer:
        """The command line's level of the precedence (reads ``--config``).

        Raises:
            ConfigError: the file is missing or has a malformed line.
        """
        properties = load_properties(self.config_file) if self.config_file else {}
        return ConnectionLayer(self.brokers, properties)

    def resolve(self, code: ConnectionLayer | None = None) -> KafkaConnection:
        """Command line > ``code`` (an app's settings) > environment > default.

        Raises:
            ConfigError: a missing or malformed properties file, or a property librdkafka refuses.
        """
        layers = [self.layer(), *([code] if code is not None else []), environment_layer()]
        brokers, properties = resolve_connection(*layers)
        check_client_properties(
            properties, f"--config {self.config_file}" if self.config_file else "the client properties"
        )
        return KafkaConnection(brokers, properties)

    def argv(self) -> list[str]:
        """The same options for a child process (``sluice run --workers``)."""
        out: list[str] = []
        if self.brokers:
            out += ["--brokers", self.brokers]
        if self.config_file:
            out += ["--config", os.path.abspath(self.config_file)]
        return out


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--brokers`` and ``--config FILE`` to a command; it receives them as ``kafka: ConnectionArgs``.

    Precedence: these options > the app's own settings > ``$SLUICE_BROKERS`` and
    ``$SLUICE_KAFKA_CONFIG`` > ``127.0.0.1:9092``.
    """

    @click.option(
        "--brokers",
        "-b",
        default=None,
        callback=_brokers,
        help="Kafka bootstrap servers; wins over bootstrap.servers in --config, an App's brokers= and "
        f"$SLUICE_BROKERS [default: {DEFAULT_BROKERS}].",
    )
    @click.option(
        "--config",
        "config_file",
        metavar="FILE",
        type=click.Path(dir_okay=False),
        default=None,
        help="Kafka client properties (key=value lines, as Kafka's tools' --command-config): security.protocol, "
        "sasl.*, ssl.*... [default: $SLUICE_KAFKA_CONFIG].",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, brokers: str | None, config_file: str | None, **kwargs: Any) -> Any:
        return command(*args, kafka=ConnectionArgs(brokers, config_file), **kwargs)

    return wrapper


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
