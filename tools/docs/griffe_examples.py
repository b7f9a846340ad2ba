"""A griffe extension for the documentation site: read sluice's ``Example:`` sections as examples.

sluice's docstrings say ``Example:`` (one short example each, see docs/STYLE); griffe's
Google parser knows only the plural ``Examples:`` and would render the singular as an
admonition whose ``>>>`` lines become nested block quotes. Renaming the section title
before parsing lets the doctests render as Python code blocks, without touching the
library's docstrings.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["ExampleSections"]

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section titles to ``Examples:`` in every loaded docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
