"""The examples in the sinks' docstrings run (pytest collects only tests/, so they are run from here)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "sluice.sinks",
    "sluice.sinks._errors",
    "sluice.sinks._factories",
    "sluice.sinks._jsonl",
    "sluice.sinks._parquet",
    "sluice.sinks._postgres",
    "sluice.sinks._schema",
    "sluice.sinks._sqlite",
    "sluice.sinks._units",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (output above)"
