"""The ``sluice_driver`` pytest fixture: ``TestDriver``s that are closed after the test.

Installed with sluice as a pytest plugin (the ``pytest11`` entry point), so the fixture
is available in every test without an import. Where plugins are not auto-loaded
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), import it in a ``conftest.py``::

    from sluice.testing.pytest_plugin import sluice_driver  # noqa: F401

Example (a test module)::

    def test_upper(sluice_driver):
        driver = sluice_driver(app)
        driver.send("words", "hi")
        assert [r.value for r in driver.output("shouted")] == ["HI"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from sluice.testing._driver import TestDriver

if TYPE_CHECKING:
    from sluice.app import App

__all__ = ["sluice_driver"]


@pytest.fixture
def sluice_driver() -> Iterator[Callable[..., TestDriver]]:
    """``sluice_driver(app, **options)`` -> a started ``TestDriver`` (options as ``TestDriver``'s), closed after the test."""
    drivers: list[TestDriver] = []

    def start(app: App, **options: Any) -> TestDriver:
        driver = TestDriver(app, **options)
        driver.start()
        drivers.append(driver)
        return driver

    yield start
    for driver in reversed(drivers):
        driver.close()
