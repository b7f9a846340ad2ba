"""The documentation's code and coverage, without building the site (``make test`` runs ``mkdocs build --strict``).

- Every Python block of every page compiles.
- The sluice side of each migration page builds the pipeline the page describes, the
  same topics in as the peer's code reads and the same topics out as it writes.
- Every name a public package exports is on an API reference page.
"""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path

import pytest

from sluice import App
from sluice.dataflow import Stream, To

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)(?P<attrs>[^\n]*)$")


def blocks(page: Path) -> list[tuple[str, str, int, str]]:
    """The fenced code blocks of ``page``: (language, title, first line number, dedented code)."""
    found = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if start is None:
            i += 1
            continue
        indent = start["indent"]
        title = re.search(r'title="([^"]*)"', start["attrs"])
        body = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != f"{indent}```":
            body.append(lines[i])
            i += 1
        code = textwrap.dedent("\n".join(body))
        found.append((start["lang"], title[1] if title else "", i - len(body), code))
        i += 1
    return found


PAGES = sorted(DOCS.rglob("*.md"))
PYTHON_BLOCKS = [
    pytest.param(code, id=f"{page.relative_to(DOCS)}:{line}")
    for page in PAGES
    for lang, _title, line, code in blocks(page)
    if lang == "python"
]


def test_the_pages_have_python_blocks():
    assert len(PAGES) >= 10
    assert len(PYTHON_BLOCKS) >= 15  # the parser finds the blocks, tabbed and titled ones too


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_python_block_compiles(code: str):
    compile(code, "<docs>", "exec")


def titled(page: str, title: str) -> str:
    [code] = [code for lang, t, _line, code in blocks(DOCS / page) if lang == "python" and t == title]
    return code


def outputs(app: App) -> set[str]:
    """The topics the app's graph writes to (its ``.to()`` steps, internal ones excluded)."""
    topics: set[str] = set()
    pending: list[Stream] = [source.root for source in app.sources]
    while pending:
        stream = pending.pop()
        if isinstance(stream.step, To) and not stream.step.repartition:
            topics.add(stream.step.topic)
        pending.extend(stream.children)
    return topics


def build(code: str) -> App:
    namespace: dict = {"__name__": "docs_example"}  # not "__main__": nothing runs
    exec(compile(code, "<docs>", "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, App)
    return app


# what the peer's code reads and writes, as the peer spells it
PEER_IO = {
    "kafka-python": (r'KafkaConsumer\(\s*"([^"]+)"', r'producer\.send\(\s*"([^"]+)"'),
    "Faust": (r'events = app\.topic\(\s*"([^"]+)"', r'_out = app\.topic\(\s*"([^"]+)"'),
    "Quix Streams": (r'events = app\.topic\(\s*"([^"]+)"', r'_out = app\.topic\(\s*"([^"]+)"'),
}


@pytest.mark.parametrize(
    ("page", "peer"),
    [
        ("migrate/kafka-python.md", "kafka-python"),
        ("migrate/faust.md", "Faust"),
        ("migrate/quix-streams.md", "Quix Streams"),
    ],
)
def test_migration_page_sides_read_and_write_the_same_topics(page: str, peer: str):
    peer_code = titled(page, peer)
    reads, writes = PEER_IO[peer]
    peer_in = set(re.findall(reads, peer_code))
    peer_out = set(re.findall(writes, peer_code))
    assert peer_in and peer_out, f"could not find the topics of the {peer} code on {page}"

    app = build(titled(page, "sluice"))
    assert {t for s in app.sources if not s.internal for t in s.topics} == peer_in
    assert outputs(app) == peer_out


REFERENCE = {
    "sluice.sinks": "reference/sinks.md",
    "sluice.errors": "reference/errors.md",
    "sluice.serde": "reference/serde.md",
    "sluice.testing": "reference/testing.md",
}


@pytest.mark.parametrize("module", sorted(REFERENCE))
def test_public_package_has_a_reference_page(module: str):
    page = (DOCS / REFERENCE[module]).read_text()
    assert re.search(rf"^::: {re.escape(module)}$", page, re.MULTILINE), (
        f"{REFERENCE[module]} lacks ::: {module}"
    )


def test_every_top_level_export_is_in_the_reference():
    """A name exported by ``sluice`` has its own entry on the sluice page, or lives in a module documented whole."""
    sluice = importlib.import_module("sluice")
    page = (DOCS / "reference" / "sluice.md").read_text()
    documented_whole = [importlib.import_module(m) for m in REFERENCE]
    missing = [
        name
        for name in sluice.__all__
        if name != "__version__"
        and f"::: sluice.{name}" not in page
        and not any(name in getattr(m, "__all__", ()) for m in documented_whole)
    ]
    assert not missing, f"add to docs/reference/sluice.md: {missing}"
