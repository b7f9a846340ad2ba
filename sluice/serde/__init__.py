"""Turning Kafka bytes into Python values and back: ``"json"`` (orjson), ``"str"``, ``"bytes"``, or callables.

The Schema Registry formats ``"avro"``, ``"protobuf"`` and ``"json_schema"`` are bound to
a topic and a registry when the app is defined (:class:`sluice.serde.registry.RegistryFormat`);
``deserializer`` and ``serializer`` accept such a format too.

A null value (a tombstone) deserializes to ``None`` whatever the format, and ``None``
serializes back to a null value.

Example:
    >>> loads = deserializer("json")
    >>> loads(b'{"type": "click"}')
    {'type': 'click'}
    >>> serializer("json")({"n": 1})
    b'{"n":1}'
    >>> deserializer("str")(None) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson

from sluice.errors import ConfigError, SerializationError
from sluice.serde.registry import REGISTRY_FORMATS, RegistryFormat

__all__ = [
    "REGISTRY_FORMATS",
    "Deserializer",
    "Format",
    "RegistryFormat",
    "Serializer",
    "deserializer",
    "key_serializer",
    "serializer",
]

Format = Literal["json", "str", "bytes", "avro", "protobuf", "json_schema"]
Deserializer = Callable[[bytes | None], Any]
Serializer = Callable[[Any], bytes | None]
FORMATS: tuple[str, ...] = ("json", "str", "bytes")

_json_loads = orjson.loads
_json_dumps = orjson.dumps


def _json_deserialize(data: bytes | None) -> Any:
    return None if data is None else _json_loads(data)


def _str_deserialize(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8")


def _bytes_deserialize(data: bytes | None) -> bytes | None:
    return data


def _json_serialize(value: Any) -> bytes | None:
    return None if value is None else _json_dumps(value)


def _str_serialize(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    msg = (
        f"a value of type {type(value).__name__} cannot be written as 'str'; return a str or use value='json'"
    )
    raise SerializationError(msg)


def _bytes_serialize(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    msg = f"a value of type {type(value).__name__} cannot be written as 'bytes'; return bytes or use value='json'"
    raise SerializationError(msg)


_DESERIALIZERS: dict[str, Deserializer] = {
    "json": _json_deserialize,
    "str": _str_deserialize,
    "bytes": _bytes_deserialize,
}
_SERIALIZERS: dict[str, Serializer] = {
    "json": _json_serialize,
    "str": _str_serialize,
    "bytes": _bytes_serialize,
}


def _check_format(spec: object, what: str) -> None:
    if spec in REGISTRY_FORMATS:
        msg = (
            f"{what}={spec!r} is bound to a topic and a Schema Registry: use it in App.stream(...) "
            f"or Stream.to(...), or pass a sluice.serde.RegistryFormat"
        )
        raise ConfigError(msg)
    if not (callable(spec) or spec in FORMATS or isinstance(spec, RegistryFormat)):
        names = ", ".join(map(repr, FORMATS + REGISTRY_FORMATS))
        msg = f"{what}={spec!r} is not a format; use one of {names} or a callable"
        raise ConfigError(msg)


def deserializer(spec: Format | RegistryFormat | Callable[[bytes], Any], what: str = "value") -> Deserializer:
    """Return the function that turns a record's bytes (or ``None``) into a value.

    Args:
        spec: ``"json"``, ``"str"``, ``"bytes"``, a ``RegistryFormat``, or a callable
            ``bytes -> object`` (a callable is not called for tombstones: they stay ``None``).
        what: the option being configured, for error messages.

    Raises:
        ConfigError: ``spec`` is neither a known format nor callable.

    Example:
        >>> deserializer(lambda b: b.upper())(b"abc")
        b'ABC'
    """
    if isinstance(spec, RegistryFormat):
        return spec.deserializer()
    _check_format(spec, what)
    if callable(spec):
        user = spec

        def _call_user(data: bytes | None) -> Any:
            return None if data is None else user(data)

        return _call_user
    return _DESERIALIZERS[spec]


def serializer(spec: Format | RegistryFormat | Callable[[Any], bytes], what: str = "value") -> Serializer:
    """Return the function that turns a value into the bytes of an output record.

    Example:
        >>> serializer("str")("héllo")
        b'h\\xc3\\xa9llo'
    """
    if isinstance(spec, RegistryFormat):
        return spec.serializer()
    _check_format(spec, what)
    if callable(spec):
        user = spec

        def _call_user(value: Any) -> bytes | None:
            return None if value is None else user(value)

        return _call_user
    return _SERIALIZERS[spec]


def key_serializer(key: Any) -> bytes | None:
    """Serialize a key made by ``key_by``: bytes as is, str as UTF-8, anything else as JSON.

    Example:
        >>> key_serializer("u1"), key_serializer(b"raw"), key_serializer(42), key_serializer(None)
        (b'u1', b'raw', b'42', None)
    """
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    return _json_dumps(key)
