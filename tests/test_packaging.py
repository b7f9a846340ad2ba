"""sluice as a library: license, typing marker, extras, bounds of 0.x dependencies, a clean public API."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import sluice
from sluice import sinks
from sluice.dataflow.grouped import WindowedStream
from sluice.dataflow.stream import Stream

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_license_file_matches_the_declared_license():
    assert PYPROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_package_is_marked_typed():
    assert (ROOT / "sluice" / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["sluice"]


def test_project_urls_and_extras_without_duplicates():
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= set(PYPROJECT["urls"])
    owners: dict[str, str] = {}
    for extra, requirements in PYPROJECT["optional-dependencies"].items():
        for requirement in requirements:
            name = _name(requirement)
            if name == "sluice-streams":  # an extra made of other extras
                continue
            assert name not in owners, f"{name} is listed in the extras {owners.get(name)} and {extra}"
            owners[name] = extra


def test_zero_x_dependencies_have_an_upper_bound():
    for requirement in PYPROJECT["dependencies"]:
        lower = re.search(r">=\s*0\.", requirement)
        if lower:
            assert "<" in requirement, f"{requirement}: a 0.x dependency needs an upper bound"


def test_public_signatures_have_no_private_parameters():
    public = [sluice.App, Stream, WindowedStream, *(getattr(sinks, n) for n in sinks.__all__)]
    for owner in public:
        members = inspect.getmembers(owner, callable) if inspect.isclass(owner) else [("", owner)]
        for name, member in members:
            if name.startswith("_") and name != "__init__":
                continue
            try:
                parameters = inspect.signature(member).parameters
            except (TypeError, ValueError):  # builtins without a signature
                continue
            private = [p for p in parameters if p.startswith("_")]
            assert not private, f"{getattr(owner, '__name__', owner)}.{name} has private parameters {private}"


def test_sluice_sinks_exports_only_sinks():
    for name in sinks.__all__:
        obj = getattr(sinks, name)
        if inspect.isclass(obj):
            assert callable(getattr(obj, "write_batch", None)), name
        else:
            returned = inspect.signature(obj).return_annotation
            assert str(returned).endswith("Sink"), (name, returned)
    assert "_require" not in vars(sinks) and "ConfigError" not in vars(sinks)
