"""The ``sluice`` command line: ``sluice run module:app`` and the operator tools."""

from sluice.cli.main import cli, main

__all__ = ["cli", "main"]
