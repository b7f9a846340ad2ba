"""The Schema Registry for format tests: started once per session with ``tools/registry/registryctl.py``.

A registry already running (``make registry-up``) is reused; one started here is left
running for the rest of the session, and ``make test`` stops it at the end.
``SLUICE_TEST_SCHEMA_REGISTRY`` names another Confluent-compatible registry to use instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from tests.conftest import ROOT


def _load_registryctl():
    spec = importlib.util.spec_from_file_location(
        "registryctl", ROOT / "tools" / "registry" / "registryctl.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["registryctl"] = module
    spec.loader.exec_module(module)
    return module


registryctl = _load_registryctl()


@pytest.fixture(scope="session")
def registry_url() -> str:
    """The base URL of a running Confluent-compatible Schema Registry."""
    given = os.environ.get("SLUICE_TEST_SCHEMA_REGISTRY")
    return given or registryctl.up()


@pytest.fixture(scope="session")
def registry_client(registry_url: str):
    """A plain confluent-kafka client of that registry, for the 'other side' of each round trip."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": registry_url})
