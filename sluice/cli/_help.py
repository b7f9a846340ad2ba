"""Help pages of command groups: each command's whole first paragraph, never cut mid-sentence.

Click shortens a command's summary to about 45 characters and ends it at the first
``". "``, which cuts ``(e.g. x)`` and most sentences in half.

Example:
    >>> import click
    >>> @click.group(cls=SluiceGroup)
    ... def g():
    ...     "A group."
    >>> @g.command()
    ... def go():
    ...     '''Run something long, e.g. a pipeline, with several words past forty-five characters.'''
    >>> from click.testing import CliRunner
    >>> "e.g. a pipeline, with several words" in CliRunner().invoke(g, ["--help"]).output
    True
"""

from __future__ import annotations

import inspect

import click

__all__ = ["SluiceGroup", "summary"]


def summary(command: click.Command) -> str:
    """The command's ``short_help``, or the first paragraph of its help, on one line."""
    if command.short_help:
        return command.short_help
    first = inspect.cleandoc(command.help or "").split("\n\n", 1)[0]
    return " ".join(first.split())


class SluiceGroup(click.Group):
    """A ``click.Group`` listing its commands with their whole first paragraph."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
