"""Column inference, record checks and sizes: what every database and file sink relies on."""

from __future__ import annotations

import pytest

from sluice.errors import ConfigError
from sluice.sinks import SinkRowError
from sluice.sinks._schema import Column, Shape, infer_columns, kinds_from_schema, last_per_key
from sluice.sinks._units import parse_size
from tests.sinks._helpers import rows


def shape(columns, key=("id",)):
    return Shape("sqlite", "clicks", [Column(n, k, k.upper()) for n, k in columns], key)


def test_types_are_inferred_from_the_first_row_with_the_key():
    values = [
        "not a dict",
        {"page": "/no-key"},
        {"id": 1, "page": "/a", "price": 3, "ok": True, "meta": {"a": 1}, "tags": ["x"], "raw": b"\x00"},
    ]
    assert infer_columns(values, ("id",)) == [
        ("id", "int"),
        ("page", "str"),
        ("price", "int"),
        ("ok", "bool"),
        ("meta", "json"),
        ("tags", "json"),
        ("raw", "bytes"),
    ]


def test_columns_come_from_the_first_row_only_but_types_from_the_batch():
    values = [{"id": 1, "price": 3, "note": None}, {"id": 2, "price": 2.5, "note": "x", "extra": 1}]
    assert infer_columns(values, ("id",)) == [("id", "int"), ("price", "float"), ("note", "str")]


def test_a_field_null_everywhere_becomes_text_and_no_usable_row_gives_none():
    assert infer_columns([{"id": 1, "x": None}], ("id",)) == [("id", "int"), ("x", "str")]
    assert infer_columns([{"id": None}, [1]], ("id",)) is None
    assert infer_columns([{"a": 1}], ()) == [("a", "int")]


def test_schema_accepts_python_types_and_kind_names():
    assert kinds_from_schema({"id": int, "v": "json", "b": bytes}, "x") == [
        ("id", "int"),
        ("v", "json"),
        ("b", "bytes"),
    ]
    with pytest.raises(ConfigError, match="non-empty dict"):
        kinds_from_schema({}, "x")
    with pytest.raises(ConfigError, match="the type of 'when' must be one of"):
        kinds_from_schema({"when": object}, "x")


def test_a_batch_becomes_columns_with_missing_fields_as_null():
    s = shape([("id", "int"), ("page", "str"), ("score", "float")])
    cols = s.columns(rows([{"id": 1, "page": "/a", "score": 1}, {"id": 2, "score": 2.5}]))
    assert cols == [[1, 2], ["/a", None], [1, 2.5]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, 2], "the value [1, 2] is a list, not a dict of fields"),
        (None, "the value is null (a tombstone), not a dict of fields"),
        ({"page": "/a"}, "no key field 'id' (fields: page); an upsert on key id needs it"),
        ({"id": None}, "key field 'id' is null"),
        ({"id": "7"}, "field 'id' = '7' (str) does not fit column 'id' INT"),
        ({"id": 1, "page": 5}, "field 'page' = 5 (int) does not fit column 'page' STR"),
        ({"id": True}, "field 'id' = True (bool) does not fit column 'id' INT"),
        ({"id": 1, "color": "red"}, "field 'color' = 'red' is not a column (columns: id, page)"),
    ],
)
def test_a_record_that_does_not_fit_is_named_with_its_field_value_and_table(value, expected):
    s = shape([("id", "int"), ("page", "str")])
    with pytest.raises(SinkRowError) as err:
        s.columns(rows([{"id": 0, "page": "/ok"}] * 3 + [value]))
    assert str(err.value).startswith("sqlite table 'clicks': record events[0]@3: ")
    assert expected in str(err.value)


def test_subclasses_and_other_mappings_are_accepted():
    from collections import OrderedDict
    from enum import IntEnum

    class Level(IntEnum):
        HIGH = 3

    s = shape([("id", "int"), ("tags", "json")])
    cols = s.columns(rows([OrderedDict(id=Level.HIGH, tags=("a", "b"))]))
    assert cols == [[Level.HIGH], [("a", "b")]]


def test_ints_fit_float_columns_but_floats_do_not_fit_int_columns():
    s = shape([("id", "int"), ("x", "float")])
    assert s.columns(rows([{"id": 1, "x": 2}])) == [[1], [2]]
    with pytest.raises(SinkRowError, match=r"field 'id' = 1.5 \(float\)"):
        s.columns(rows([{"id": 1.5}]))


def test_the_last_row_of_a_key_wins_within_a_batch():
    tuples = [(1, "a"), (2, "b"), (1, "c"), (3, "d"), (2, "e")]
    cols = [list(c) for c in zip(*tuples, strict=True)]
    assert last_per_key(tuples, cols, (0,)) == [(1, "c"), (2, "e"), (3, "d")]
    composite = [(1, "x", 1), (1, "y", 2), (1, "x", 3)]
    cols = [list(c) for c in zip(*composite, strict=True)]
    assert last_per_key(composite, cols, (0, 1)) == [(1, "x", 3), (1, "y", 2)]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100MB", 100 * 2**20),
        ("10KB", 10240),
        ("10kb", 10240),
        ("1.5GiB", int(1.5 * 2**30)),
        ("512B", 512),
        ("64", 64),
        (4096, 4096),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "MB", "-1MB", "0", "ten", 0, 1.5, True])
def test_bad_sizes_are_config_errors(bad):
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size(bad, "rotate")
