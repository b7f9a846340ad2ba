"""Entry point of the ``sluice`` command."""

from __future__ import annotations

import click

from sluice._version import __version__
from sluice.cli._help import SluiceGroup
from sluice.cli.dlq import dlq
from sluice.cli.lag import lag
from sluice.cli.produce import produce
from sluice.cli.run import run
from sluice.cli.tail import tail
from sluice.cli.top import top


@click.group(
    cls=SluiceGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Run 'sluice COMMAND --help' for the options of a command.",
)
@click.version_option(__version__, "--version", "-V", prog_name="sluice")
def cli() -> None:
    """sluice: real-time stream processing on Apache Kafka."""


cli.add_command(run)
cli.add_command(dlq)
cli.add_command(lag)
cli.add_command(tail)
cli.add_command(produce)
cli.add_command(top)


def main() -> None:
    """Run the CLI (the ``sluice`` console script)."""
    cli(prog_name="sluice")
