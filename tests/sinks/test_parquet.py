"""The Parquet sink: rotation by size, durable batches through the staging stream, recovery after a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from sluice import sinks  # noqa: E402 - after the skip when pyarrow is missing
from sluice.errors import ConfigError  # noqa: E402
from sluice.sinks import SinkRowError  # noqa: E402
from tests.apps import ROOT  # noqa: E402
from tests.sinks._helpers import rows  # noqa: E402


def batch(start: int, n: int = 100):
    return rows(
        [{"id": i, "page": f"/p{i % 7}", "score": i / 2, "tags": [i]} for i in range(start, start + n)],
        start=start,
    )


def parquet_files(directory):
    return sorted(directory.glob("part-*.parquet"))


def test_files_rotate_at_the_given_size_and_hold_every_row(tmp_path):
    sink = sinks.parquet(tmp_path, rotate="10KB")
    for b in range(20):
        sink.write_batch(batch(b * 100))
    assert len(parquet_files(tmp_path)) >= 3, "rotated while writing"
    sink.close()
    files = parquet_files(tmp_path)
    table = pq.read_table(files)
    assert sorted(table.column("id").to_pylist()) == list(range(2000))
    assert table.schema.field("tags").metadata == {b"sluice.type": b"json"}
    assert table.column("tags").to_pylist()[:2] == ["[0]", "[1]"]
    assert list((tmp_path / ".staging").iterdir()) == []
    # every file but the last was rotated at the size, from batches of about 6 KB each
    staged = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert all(n == staged[0] for n in staged[:-1]) and sum(staged) == 2000


def test_a_batch_is_durable_before_its_file_rotates(tmp_path):
    sink = sinks.parquet(tmp_path, rotate="100MB")
    sink.write_batch(batch(0))
    assert parquet_files(tmp_path) == []
    staged = list((tmp_path / ".staging").glob("*.arrows"))
    assert len(staged) == 1
    with pa.memory_map(str(staged[0])) as source:
        assert pa.ipc.open_stream(source).read_all().num_rows == 100
    sink.close()
    assert pq.read_table(parquet_files(tmp_path)).num_rows == 100


CRASHING_WRITER = """
import os, sys
sys.path.insert(0, {root!r})
from sluice import sinks
from sluice.dataflow.sinks import SinkRow
sink = sinks.parquet({directory!r}, rotate="100MB")
for b in range(3):
    sink.write_batch([SinkRow({{"id": b * 10 + i}}, None, "t", 0, b * 10 + i, 0, None) for i in range(10)])
os._exit(0)  # like kill -9: no close(), the staging file is left behind
"""


def test_a_staging_file_left_by_a_dead_writer_becomes_a_parquet_file(tmp_path):
    script = CRASHING_WRITER.format(root=str(ROOT), directory=str(tmp_path))
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, timeout=60)
    orphans = list((tmp_path / ".staging").glob("*.arrows"))
    assert len(orphans) == 1 and parquet_files(tmp_path) == []
    # a torn last batch (a crash in the middle of a write) is dropped: it was never acknowledged
    with open(orphans[0], "ab") as f:
        f.write(b"\xff\xff\xff\xff\x10\x00\x00\x00torn")

    sink = sinks.parquet(tmp_path)
    sink.write_batch(rows([{"id": 100}]))
    recovered = parquet_files(tmp_path)
    assert len(recovered) == 1
    assert sorted(pq.read_table(recovered).column("id").to_pylist()) == list(range(30))
    sink.close()
    assert sorted(pq.read_table(parquet_files(tmp_path)).column("id").to_pylist()) == [*range(30), 100]


def test_a_staging_file_in_use_by_a_live_writer_is_left_alone(tmp_path):
    first = sinks.parquet(tmp_path)
    first.write_batch(batch(0))
    second = sinks.parquet(tmp_path)
    second.write_batch(batch(100))
    assert parquet_files(tmp_path) == []
    first.close()
    second.close()
    assert pq.read_table(parquet_files(tmp_path)).num_rows == 200


def test_records_that_do_not_fit_fail_the_batch_and_write_nothing(tmp_path):
    sink = sinks.parquet(tmp_path, schema={"id": int, "page": str})
    sink.write_batch(rows([{"id": 1, "page": "/a"}]))
    with pytest.raises(
        SinkRowError,
        match=r"parquet files in .*: record events\[0\]@1: field 'page' = 2 \(int\) does not fit column 'page' STRING",
    ):
        sink.write_batch(rows([{"id": 2, "page": "/b"}, {"id": 3, "page": 2}]))
    with pytest.raises(SinkRowError, match="does not fit in 64 bits"):
        sink.write_batch(rows([{"id": 2**64}]))
    sink.close()
    assert pq.read_table(parquet_files(tmp_path)).to_pylist() == [{"id": 1, "page": "/a"}]


def test_a_missing_pyarrow_is_a_config_error_naming_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'sluice-streams\[parquet\]'"):
        sinks.parquet("out/")


def test_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="rotate='big' is not a size"):
        sinks.parquet(tmp_path, rotate="big")
    with pytest.raises(ConfigError, match="compression='lzma' must be one of"):
        sinks.parquet(tmp_path, compression="lzma")
