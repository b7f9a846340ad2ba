"""``sluice lag --group G [--topic T] [--json]``: committed offset, end offset and lag per partition.

Read from the brokers only (the app need not run). The end offset is the last stable
offset (what a ``read_committed`` consumer can reach); a partition where the group
never committed counts from its start, where a new sluice group begins.

Example:
    >>> from click.testing import CliRunner
    >>> from sluice.cli.main import cli
    >>> result = CliRunner().invoke(cli, ["lag"])
    >>> result.exit_code, "Missing option '--group'" in result.output
    (2, True)
"""

from __future__ import annotations

import click
import orjson
from rich import box
from rich.table import Table

from sluice.cli._common import (
    ConnectionArgs,
    connection_options,
    console,
    errors_as_one_line,
    timeout_option,
    topic_name_callback,
)
from sluice.metrics.lag import GroupLag, group_lag

__all__ = ["lag"]


def _group(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        msg = "the consumer group must not be empty"
        raise click.BadParameter(msg, param=param)
    return value


def render_lag(report: GroupLag) -> Table:
    """The table ``sluice lag`` prints."""
    table = Table(box=box.SIMPLE_HEAD, title=f"consumer group {report.group}", title_justify="left")
    table.add_column("Topic", no_wrap=True)
    table.add_column("Partition", justify="right")
    table.add_column("Committed", justify="right")
    table.add_column("End", justify="right")
    table.add_column("Lag", justify="right")
    table.add_column("Member", no_wrap=True, overflow="ellipsis", max_width=48)
    for p in report.partitions:
        table.add_row(
            p.topic,
            str(p.partition),
            "-" if p.committed is None else str(p.committed),
            str(p.end),
            str(p.lag),
            p.member or "",
        )
    return table


@click.command("lag")
@click.option(
    "--group", "-g", required=True, callback=_group, help="The consumer group (a sluice app's name)."
)
@click.option(
    "--topic",
    "-t",
    "topics",
    multiple=True,
    callback=topic_name_callback,
    help="Only this topic, every partition (repeatable). Default: the group's topics.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@connection_options
@timeout_option
def lag(group: str, topics: tuple[str, ...], as_json: bool, kafka: ConnectionArgs, timeout: float) -> None:
    """Committed offset, end offset and lag of each partition of consumer group GROUP.

    Lag is the end offset minus the committed offset: records not yet fully
    processed. Without a committed offset a partition counts from its start.
    """
    with errors_as_one_line():
        conn = kafka.resolve()
        report = group_lag(group, conn.brokers, topics, timeout, kafka_config=conn.properties)
    if as_json:
        click.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    out = console()
    if report.partitions:
        out.print(render_lag(report))
    else:
        out.print(f"consumer group {group}: no partitions")
    count = len(report.partitions)
    out.print(
        f"total lag: {report.total_lag} ({count} partition{'s' if count != 1 else ''}, "
        f"group {group} {report.state}, {report.members} member{'s' if report.members != 1 else ''})"
    )
