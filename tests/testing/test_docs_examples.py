"""The TestDriver examples of docs/testing.md, docs/stream-joins.md and the README run, and their tests pass."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

pytestmark = pytest.mark.memory


def driver_examples(page: Path) -> list[str]:
    """The Python blocks of ``page`` that are whole test modules using the TestDriver."""
    return [
        code for code in BLOCK.findall(page.read_text()) if "from sluice.testing import TestDriver" in code
    ]


EXAMPLES = [
    pytest.param(code, id=f"{page.name}:{n}")
    for page in (ROOT / "docs" / "testing.md", ROOT / "README.md", ROOT / "docs" / "stream-joins.md")
    for n, code in enumerate(driver_examples(page))
]


def test_the_pages_have_driver_examples_and_the_testing_page_ends_with_one():
    assert len(EXAMPLES) >= 4
    blocks = BLOCK.findall((ROOT / "docs" / "testing.md").read_text())
    assert "with TestDriver(app" in blocks[-1]


@pytest.mark.parametrize("code", EXAMPLES)
def test_driver_example_runs_and_its_tests_pass(code: str, sluice_driver):
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(code, "<docs>", "exec"), namespace)
    tests = {name: fn for name, fn in namespace.items() if name.startswith("test_") and callable(fn)}
    assert tests, "the example defines no test"
    for fn in tests.values():
        fn(*[sluice_driver for _ in inspect.signature(fn).parameters])
