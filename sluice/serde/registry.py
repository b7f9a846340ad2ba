"""Schema Registry formats: ``"avro"``, ``"protobuf"`` and ``"json_schema"``.

Records are read and written with ``confluent_kafka.schema_registry``'s serializers,
in the wire format every Confluent-compatible client reads: a zero magic byte, the
4-byte schema id, then the encoded record. The client caches schemas per id, so a
running app asks the registry once per schema, not once per record.

A record that does not decode (wrong magic byte, unknown schema id, bytes that do
not match their schema) raises :class:`~sluice.errors.DeserializationError` and meets
the failure policy like malformed JSON. A registry that cannot be reached (connection
refused, timeout, HTTP 5xx, 401/403) raises
:class:`~sluice.errors.SchemaRegistryUnavailable`: the record is not at fault, so it is
never dead-lettered.

The registry client and the serializers are made on first use (no network in
``App(...)``), once per format and topic.

Example:
    >>> settings = registry_settings({"url": "http://127.0.0.1:8081"})
    >>> fmt = RegistryFormat("avro", "orders", "value", settings)
    >>> fmt.__name__, fmt.subject
    ('avro', 'orders-value')
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

import orjson

from sluice.errors import ConfigError, DeserializationError, SchemaRegistryUnavailable, SerializationError

__all__ = [
    "ENV_URL",
    "REGISTRY_FORMATS",
    "RegistryFormat",
    "RegistryKind",
    "bind_format",
    "registry_settings",
]

logger = logging.getLogger(__name__)

RegistryKind = Literal["avro", "protobuf", "json_schema"]
REGISTRY_FORMATS: tuple[str, ...] = ("avro", "protobuf", "json_schema")
#: the registry URL used when ``App(schema_registry=...)`` gives none
ENV_URL = "SLUICE_SCHEMA_REGISTRY_URL"

_STRATEGIES = {"topic": "TOPIC", "record": "RECORD", "topic_record": "TOPIC_RECORD"}
#: keys of ``schema_registry={...}`` that configure the serializers, not the HTTP client
_SERDE_KEYS = ("subject.name.strategy", "auto.register.schemas", "normalize.schemas", "use.latest.version")


def registry_settings(conf: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check ``App(schema_registry=...)`` and fill the URL from ``SLUICE_SCHEMA_REGISTRY_URL``.

    Args:
        conf: the ``confluent_kafka`` ``SchemaRegistryClient`` configuration (``url``,
            ``basic.auth.user.info``, ``ssl.ca.location``...), plus the serializer options
            ``subject.name.strategy`` (``"topic"`` (default), ``"record"``, ``"topic_record"``
            or a callable ``(SerializationContext, record_name) -> subject``),
            ``auto.register.schemas`` (default True), ``normalize.schemas`` and
            ``use.latest.version``.

    Returns:
        The settings, or None when neither ``conf`` nor the environment names a registry.

    Raises:
        ConfigError: an option the client does not know, or a bad strategy.

    Example:
        >>> registry_settings({"url": "http://127.0.0.1:8081", "subject.name.strategy": "record"})
        {'url': 'http://127.0.0.1:8081', 'subject.name.strategy': 'record'}
        >>> registry_settings({"url": "http://r:8081", "subject.name.strategy": "by-topic"})
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: schema_registry['subject.name.strategy']='by-topic' is not a strategy; use 'topic', 'record', 'topic_record' or a callable (SerializationContext, record_name) -> subject
    """
    settings = dict(conf or {})
    if not settings.get("url"):
        env = os.environ.get(ENV_URL, "").strip()
        if not env:
            if conf:
                msg = f"schema_registry={_redacted(settings)} has no 'url'; add one, or set {ENV_URL}"
                raise ConfigError(msg)
            return None
        settings["url"] = env
    strategy = settings.get("subject.name.strategy", "topic")
    if not (callable(strategy) or strategy in _STRATEGIES):
        msg = (
            f"schema_registry['subject.name.strategy']={strategy!r} is not a strategy; use "
            f"'topic', 'record', 'topic_record' or a callable (SerializationContext, record_name) -> subject"
        )
        raise ConfigError(msg)
    return settings


def bind_format(
    spec: Any,
    topic: str,
    part: Literal["value", "key"],
    settings: Mapping[str, Any] | None,
    schema: Any,
    writing: bool,
) -> Any:
    """``spec`` as given, or, for ``"avro"``/``"protobuf"``/``"json_schema"``, that format bound to ``topic``.

    Raises:
        ConfigError: no registry is configured, ``schema`` does not fit the format, or
            ``schema`` is given for a format that is not a registry one.

    Example:
        >>> bind_format("json", "t", "value", None, None, writing=False)
        'json'
        >>> bind_format("avro", "t", "value", None, None, writing=False)
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: value='avro' for topic 't' needs a Schema Registry: App(..., schema_registry={'url': 'http://host:8081'}) or SLUICE_SCHEMA_REGISTRY_URL
    """
    option = "schema" if part == "value" else "key_schema"
    if not (isinstance(spec, str) and spec in REGISTRY_FORMATS):
        if schema is not None:
            msg = f"{option}= is for the Schema Registry formats {REGISTRY_FORMATS}, not {part}={spec!r}"
            raise ConfigError(msg)
        return spec
    if settings is None:
        msg = (
            f"{part}={spec!r} for topic {topic!r} needs a Schema Registry: "
            f"App(..., schema_registry={{'url': 'http://host:8081'}}) or {ENV_URL}"
        )
        raise ConfigError(msg)
    fmt = RegistryFormat(spec, topic, part, settings, schema)  # type: ignore[arg-type]
    fmt.check(writing)
    _client(settings)  # an unknown client option fails here, when the app is defined
    return fmt


def _redacted(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: ("***" if ("auth" in k or "password" in k or "secret" in k) else _safe_url(v) if k == "url" else v)
        for k, v in settings.items()
    }


def _safe_url(url: Any) -> Any:
    """``url`` without a ``user:password@`` part, for messages.

    Example:
        >>> _safe_url("http://me:secret@registry:8081/apis/ccompat/v7")
        'http://***@registry:8081/apis/ccompat/v7'
    """
    if not isinstance(url, str) or "@" not in url:
        return url
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _client(settings: Mapping[str, Any]) -> Any:
    """One ``SchemaRegistryClient`` (and so one schema cache) per configuration, per process."""
    conf = {k: v for k, v in settings.items() if k not in _SERDE_KEYS}
    cache_key = repr(sorted(conf.items()))
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            try:
                from confluent_kafka.schema_registry import SchemaRegistryClient
            except ImportError as exc:
                msg = (
                    "Schema Registry formats need confluent-kafka's schema registry extras; "
                    "install them with: pip install 'sluice-streams[schema-registry]'"
                )
                raise ConfigError(msg) from exc
            try:
                client = SchemaRegistryClient(conf)
            except (ValueError, TypeError) as exc:
                msg = f"schema_registry={_redacted(conf)} was refused by the registry client: {exc}"
                raise ConfigError(msg) from exc
            _clients[cache_key] = client
    return client


@dataclass(frozen=True, eq=False)
class RegistryFormat:
    """A Schema Registry format bound to one topic and record field (value or key).

    ``schema`` is, for a writer, the schema to register (an Avro schema as a JSON string
    or dict, a protobuf message class, a JSON Schema as a string or dict), or None to
    use the latest version registered for the subject (Avro and JSON Schema). For a
    reader it is the reader schema (Avro: fields added since the writer's version take
    their defaults; JSON Schema: values are validated against it) or None to read with
    the writer's schema; protobuf readers need their message class.
    """

    kind: RegistryKind
    topic: str
    field: Literal["value", "key"]
    settings: Mapping[str, Any] = dc_field(repr=False)  # may hold credentials
    schema: Any = dc_field(default=None, repr=False)
    _built: dict[str, Any] = dc_field(default_factory=dict, repr=False, compare=False)

    @property
    def __name__(self) -> str:  # the step is named after it: deserialize(avro)
        return self.kind

    @property
    def subject(self) -> str | None:
        """The subject under the topic-name strategy; None when another strategy decides per record."""
        if self.settings.get("subject.name.strategy", "topic") != "topic":
            return None
        return f"{self.topic}-{self.field}"

    def check(self, writing: bool) -> None:
        """Raise ``ConfigError`` when ``schema`` cannot serve this format (checked when the app is defined)."""
        where = f"{self.field}={self.kind!r} for topic {self.topic!r}"
        if self.kind == "protobuf":
            if not _is_message_class(self.schema):
                msg = (
                    f"{where} needs the protobuf message class as schema= "
                    f"(a generated class such as orders_pb2.Order), got {self.schema!r}"
                )
                raise ConfigError(msg)
        elif self.schema is not None and not isinstance(self.schema, str | dict):
            what = "an Avro schema" if self.kind == "avro" else "a JSON Schema"
            msg = f"{where}: schema= must be {what} as a JSON string or a dict, got {type(self.schema).__name__}"
            raise ConfigError(msg)
        if writing and self.kind != "protobuf" and self.schema is None and self.subject is None:
            msg = (
                f"{where} needs schema=: without it the latest schema registered for the subject is "
                f"written, and only the 'topic' subject.name.strategy names that subject before a record exists"
            )
            raise ConfigError(msg)

    # ------------------------------------------------------------------ serde functions
    def deserializer(self) -> Callable[[bytes | None], Any]:
        """The function ``bytes -> value`` for this topic (tombstones stay None)."""
        return _Decoder(self)

    def serializer(self) -> Callable[[Any], bytes | None]:
        """The function ``value -> bytes`` for this topic (None stays a tombstone)."""
        return _Encoder(self)

    def _serde_conf(self, writing: bool) -> dict[str, Any]:
        strategy = self.settings.get("subject.name.strategy", "topic")
        # the topic strategy by default, not the client's "associated" lookup, which asks
        # the registry for the topic's subject on every record
        conf: dict[str, Any] = (
            {"subject.name.strategy": strategy}
            if callable(strategy)
            else {"subject.name.strategy.type": _STRATEGIES[strategy]}
        )
        if "use.latest.version" in self.settings:
            conf["use.latest.version"] = bool(self.settings["use.latest.version"])
        if writing:
            for key in ("auto.register.schemas", "normalize.schemas"):
                if key in self.settings:
                    conf[key] = bool(self.settings[key])
            if self.schema is None:
                conf["use.latest.version"] = True
                conf["auto.register.schemas"] = False
            if self.kind == "protobuf":
                conf["use.deprecated.format"] = False
        return conf

    def _context(self) -> Any:
        from confluent_kafka.serialization import MessageField, SerializationContext

        return SerializationContext(
            self.topic, MessageField.KEY if self.field == "key" else MessageField.VALUE
        )

    def _schema_text(self) -> str | None:
        if isinstance(self.schema, dict):
            return orjson.dumps(self.schema).decode()
        return self.schema

    def _build_reader(self) -> Any:
        client = _client(self.settings)
        conf = self._serde_conf(writing=False)
        if self.kind == "avro":
            from confluent_kafka.schema_registry.avro import AvroDeserializer

            return AvroDeserializer(client, self._schema_text(), conf=conf)
        if self.kind == "json_schema":
            from confluent_kafka.schema_registry.json_schema import JSONDeserializer

            return JSONDeserializer(self._schema_text(), schema_registry_client=client, conf=conf)
        from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer

        return ProtobufDeserializer(self.schema, conf, schema_registry_client=client)

    def _build_writer(self) -> Any:
        client = _client(self.settings)
        conf = self._serde_conf(writing=True)
        if self.kind == "avro":
            from confluent_kafka.schema_registry.avro import AvroSerializer

            return AvroSerializer(client, self._schema_text(), conf=conf)
        if self.kind == "json_schema":
            from confluent_kafka.schema_registry.json_schema import JSONSerializer

            return JSONSerializer(self._schema_text(), client, conf=conf)
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

        return ProtobufSerializer(self.schema, client, conf)

    def built(self, role: str, make: Callable[[], Any]) -> Any:
        """The confluent serializer for ``role`` ("reader"/"writer"), made once (thread-safe)."""
        with _clients_lock:
            inner = self._built.get(role)
        if inner is None:
            try:
                inner = make()
            except (ValueError, TypeError) as exc:
                msg = f"{self.field}={self.kind!r} for topic {self.topic!r}: the serializer refused its settings: {exc}"
                raise ConfigError(msg) from exc
            with _clients_lock:
                inner = self._built.setdefault(role, inner)
        return inner


def _is_message_class(obj: Any) -> bool:
    return isinstance(obj, type) and hasattr(obj, "DESCRIPTOR") and hasattr(obj, "FromString")


class _Decoder:
    """Decodes one topic's records; Avro records of a known, rule-free schema id skip the client's per-record work.

    The first record of each schema id goes through confluent-kafka's deserializer
    (fetching and checking the schema, raising for unknown ids); after it, when that
    schema has no data-contract rules and no references, records of the id are read by
    fastavro directly with the same writer and reader schemas, which is what the
    deserializer does for them minus its per-record subject, rule and tag bookkeeping.
    """

    __slots__ = ("_ctx", "_fast", "_fmt", "_inner", "_read", "_reader")

    def __init__(self, fmt: RegistryFormat) -> None:
        self._fmt = fmt
        self._inner: Any = None
        self._ctx: Any = None
        #: schema id -> (parsed writer schema, parsed reader schema or None), or None: not eligible
        self._fast: dict[int, tuple[Any, Any] | None] | None = (
            {} if fmt.kind == "avro" and not fmt.settings.get("use.latest.version") else None
        )
        self._reader: Any = None
        self._read: Any = None

    @property
    def __name__(self) -> str:
        return self._fmt.kind

    def __call__(self, data: bytes | None) -> Any:
        if data is None:
            return None
        fast = self._fast
        if fast is not None and len(data) > 5 and data[0] == 0:
            plan = fast.get(int.from_bytes(data[1:5], "big"))
            if plan is not None:
                try:
                    return self._read(io.BytesIO(data[5:]), plan[0], plan[1], False)
                except Exception as exc:  # translated: the bytes do not match their schema
                    raise _translate(exc, self._fmt, data, reading=True) from exc
        inner = self._inner
        if inner is None:
            inner = self._inner = self._fmt.built("reader", self._fmt._build_reader)
            self._ctx = self._fmt._context()
        try:
            value = inner(data, self._ctx)
        except Exception as exc:  # translated: environmental, or a record that does not decode
            raise _translate(exc, self._fmt, data, reading=True) from exc
        if fast is not None and (sid := _schema_id(data)) is not None and sid not in fast:
            fast[sid] = self._plan(sid)
        return value

    def _plan(self, sid: int) -> tuple[Any, Any] | None:
        from fastavro import schemaless_reader

        writer = _plain_avro(_client(self._fmt.settings).get_schema(sid))
        if writer is None:
            return None
        self._read = schemaless_reader
        if self._fmt.schema is not None and self._reader is None:
            self._reader = _parse_avro(self._fmt._schema_text())
        return writer, self._reader


class _Encoder:
    """Encodes one topic's values; Avro values skip the client's per-record work once the schema id is known.

    The first value goes through confluent-kafka's serializer (registering or looking
    up the schema); after it, when the schema has no data-contract rules and no
    references, values are written as the same 5-byte header plus fastavro's encoding
    with the same schema, as the serializer does minus its per-record bookkeeping.
    """

    __slots__ = ("_ctx", "_fast", "_fmt", "_inner", "_message", "_write")

    def __init__(self, fmt: RegistryFormat) -> None:
        self._fmt = fmt
        self._inner: Any = None
        self._ctx: Any = None
        self._message = fmt.schema if fmt.kind == "protobuf" else None
        #: (5-byte header, parsed schema) once known; False: not eligible
        self._fast: tuple[bytes, Any] | bool | None = None if fmt.kind == "avro" else False
        self._write: Any = None

    @property
    def __name__(self) -> str:
        return self._fmt.kind

    def __call__(self, value: Any) -> bytes | None:
        if value is None:
            return None
        fast = self._fast
        if fast:
            header, parsed = fast  # type: ignore[misc]
            out = io.BytesIO()
            out.write(header)
            try:
                self._write(out, parsed, value)
            except Exception as exc:  # translated: the value does not fit the schema
                raise _translate(exc, self._fmt, value, reading=False) from exc
            return out.getvalue()
        inner = self._inner
        if inner is None:
            inner = self._inner = self._fmt.built("writer", self._fmt._build_writer)
            self._ctx = self._fmt._context()
        try:
            if self._message is not None and isinstance(value, dict):
                from google.protobuf.json_format import ParseDict

                value = ParseDict(value, self._message())
            data = inner(value, self._ctx)
        except Exception as exc:  # translated: environmental, or a value that does not fit
            raise _translate(exc, self._fmt, value, reading=False) from exc
        if fast is None:
            self._fast = self._plan(data)
        return data

    def _plan(self, data: bytes) -> tuple[bytes, Any] | bool:
        from fastavro import schemaless_writer

        self._write = schemaless_writer
        sid = _schema_id(data)
        if sid is None:
            return False
        fmt = self._fmt
        registered = _plain_avro(_client(fmt.settings).get_schema(sid))
        if registered is None:
            return False
        if fmt.schema is not None and not fmt.settings.get("use.latest.version"):
            # the serializer writes with the schema it was given, which the id stands for
            return data[:5], _parse_avro(fmt._schema_text())
        return data[:5], registered


def _plain_avro(schema: Any) -> Any:
    """The parsed form of a registered Avro schema the fast path may use, else None.

    Not: schemas with data-contract rules (they run per record), with references
    (named types resolved through the registry), or of type ``bytes`` (which the
    confluent serializers write raw).
    """
    if getattr(schema, "rule_set", None) or getattr(schema, "references", None) or not schema.schema_str:
        return None
    parsed = _parse_avro(schema.schema_str)
    if parsed == "bytes" or (isinstance(parsed, dict) and parsed.get("type") == "bytes"):
        return None
    return parsed


def _parse_avro(text: str | None) -> Any:
    from fastavro import parse_schema

    # a fresh name table per schema: two versions of one record name must not collide
    return parse_schema(orjson.loads(text or "null"), named_schemas={})


def _schema_id(data: Any) -> int | None:
    if isinstance(data, bytes) and len(data) >= 5 and data[0] == 0:
        return int.from_bytes(data[1:5], "big")
    return None


def _translate(exc: Exception, fmt: RegistryFormat, data: Any, reading: bool) -> Exception:
    """Sort a serializer's exception: the registry is unreachable, or this record is at fault."""
    if isinstance(exc, ConfigError | SchemaRegistryUnavailable):
        return exc
    from confluent_kafka.schema_registry.common._httpx_compat import httpx
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    url = _safe_url(fmt.settings.get("url"))
    where = f"{fmt.field}={fmt.kind!r} on topic {fmt.topic!r}"
    if isinstance(exc, httpx.TransportError):
        return SchemaRegistryUnavailable(
            f"the Schema Registry at {url} could not be reached ({type(exc).__name__}: {exc}) while "
            f"{'reading' if reading else 'writing'} {where}; the record is not at fault: "
            f"start the registry or fix schema_registry['url'] / {ENV_URL}"
        )
    if isinstance(exc, SchemaRegistryError):
        status = exc.http_status_code
        if status in (401, 403) or status == 429 or status >= 500 or status < 0:
            return SchemaRegistryUnavailable(
                f"the Schema Registry at {url} answered HTTP {status} ({exc.error_message}) for {where}; "
                f"the record is not at fault: "
                + (
                    "check the credentials in schema_registry (basic.auth.user.info...)"
                    if status in (401, 403)
                    else "it is retried until the registry answers"
                )
            )
        if reading:
            sid = _schema_id(data)
            if status == 404 and sid is not None:
                return DeserializationError(
                    f"the {where} record names schema id {sid}, which the Schema Registry at {url} does not "
                    f"know (HTTP 404): it was written against another registry, or its schema was deleted"
                )
            return DeserializationError(
                f"the {where} record could not be decoded: the Schema Registry said {exc}"
            )
        return SerializationError(
            f"the value could not be written as {where}: the Schema Registry refused it: {exc} "
            f"(an incompatible schema change, or no schema registered for subject {fmt.subject!r})"
        )
    if reading:
        head = data[:8] if isinstance(data, bytes) else data
        hint = (
            " (the first byte is not the 0 magic byte: the record was not written by a Schema Registry serializer)"
            if isinstance(data, bytes) and data[:1] != b"\x00"
            else ""
        )
        return DeserializationError(
            f"the {where} record could not be decoded{hint}: {type(exc).__name__}: {exc}; it starts with {head!r}"
        )
    return SerializationError(
        f"a {type(data).__name__} could not be written as {where}: {type(exc).__name__}: {exc}; "
        f"return a value matching the schema"
    )
