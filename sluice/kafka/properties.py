"""Kafka client properties: Java-style ``client.properties`` files, Java-only names, secret redaction.

A ``client.properties`` file is what Kafka's own tools take with ``--command-config``:
``key=value`` lines, ``#`` and ``!`` comments. The Java client's names that librdkafka
does not know are translated where there is an equivalent (``sasl.jaas.config`` with a
username and password, a PEM truststore) and refused with the librdkafka name otherwise.

Example:
    >>> parse_properties("# cluster A\\nsecurity.protocol=SASL_SSL\\nsasl.password = s3cret\\n", "a.properties")
    {'security.protocol': 'SASL_SSL', 'sasl.password': 's3cret'}
    >>> redact({"sasl.username": "app", "sasl.password": "s3cret"})
    {'sasl.username': 'app', 'sasl.password': '[redacted]'}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sluice.errors import ConfigError

__all__ = [
    "REDACTED",
    "is_secret",
    "load_properties",
    "parse_properties",
    "redact",
    "scrub",
    "to_librdkafka",
]

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"

# passwords, client secrets, inline private keys, JAAS lines (which embed passwords), tokens
_SECRET = re.compile(r"password|secret|jaas\.config|oauthbearer\.config|key\.pem|token|credential", re.I)


def is_secret(key: str) -> bool:
    """Whether the value of property ``key`` must never be shown.

    Example:
        >>> [is_secret(k) for k in ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret", "sasl.username")]
        [True, True, True, False]
    """
    return bool(_SECRET.search(key))


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to log or show: secret values replaced by ``[redacted]``.

    Callables (callbacks, loggers) are shown by type name, never called or expanded.

    Example:
        >>> redact({"ssl.keystore.password": "x", "bootstrap.servers": "127.0.0.1:9094"})
        {'ssl.keystore.password': '[redacted]', 'bootstrap.servers': '127.0.0.1:9094'}
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        if is_secret(str(key)) and value not in (None, ""):
            out[key] = REDACTED
        elif callable(value) or isinstance(value, logging.Logger):
            out[key] = f"<{type(value).__name__}>"
        else:
            out[key] = value
    return out


def scrub(text: str, config: Mapping[str, Any]) -> str:
    """``text`` with every secret value of ``config`` replaced by ``[redacted]`` (for error messages).

    Example:
        >>> scrub("login as app/s3cret failed", {"sasl.password": "s3cret"})
        'login as app/[redacted] failed'
    """
    for key, value in config.items():
        if is_secret(str(key)) and isinstance(value, str) and len(value) >= 3:
            text = text.replace(value, REDACTED)
    return text


# ---------------------------------------------------------------------- the file format

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 >= len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                msg = (
                    f"{where}: malformed \\u escape {text[i : i + 6]!r} (write \\u followed by 4 hex digits)"
                )
                raise ConfigError(msg)
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split(line: str) -> tuple[str, str] | None:
    """(raw key, raw value) at the first unescaped ``=`` or ``:``; None when there is none."""
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=:":
            return line[:i], line[i + 1 :]
        i += 1
    return None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: a trailing odd backslash continues it."""
    lines: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if pending is None:
            if not line or line[0] in "#!":
                continue
            start = number
            pending = ""
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        lines.append((start, pending + line))
        pending = None
    if pending is not None:
        lines.append((start, pending))
    return lines


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Parse Java ``.properties`` text: ``key=value`` (or ``key: value``), ``#``/``!`` comments.

    Whitespace around the key and before the value is dropped; a line ending in ``\\``
    continues on the next; ``\\=``, ``\\:``, ``\\\\``, ``\\t``, ``\\n`` and ``\\uXXXX`` are
    escapes. A later line wins over an earlier one with the same key.

    Args:
        text: the file's contents.
        source: the file name, for error messages.

    Raises:
        ConfigError: a line without ``=`` (or ``:``), with an empty key, or with a bad
            escape; the message names the file and the line number.

    Example:
        >>> parse_properties("a.b = 1\\n! comment\\nc=x\\\\\\n  y\\n", "f")
        {'a.b': '1', 'c': 'xy'}
        >>> parse_properties("security.protocol SASL_SSL\\n", "client.properties")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: client.properties line 1: 'security.protocol SASL_SSL' is not key=value (a property per line, e.g. security.protocol=SASL_SSL)
    """
    props: dict[str, str] = {}
    for number, line in _logical_lines(text):
        where = f"{source} line {number}"
        parts = _split(line)
        if parts is None:
            shown = line.strip() if not is_secret(line) else line.split()[0] + " ..."
            msg = (
                f"{where}: {shown!r} is not key=value (a property per line, e.g. security.protocol=SASL_SSL)"
            )
            raise ConfigError(msg)
        key = _unescape(parts[0].strip(), where)
        if not key:
            msg = f"{where}: the property name before '=' is empty"
            raise ConfigError(msg)
        props[key] = _unescape(parts[1].lstrip(), where)
    return props


def load_properties(path: str | Path) -> dict[str, str]:
    """Read a ``client.properties`` file (see :func:`parse_properties`) and translate Java-only names.

    Raises:
        ConfigError: the file is missing or unreadable, a line is malformed, or it holds a
            Java-only property with no librdkafka equivalent.

    Example:
        >>> load_properties("/nonexistent/client.properties")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: Kafka client properties file '/nonexistent/client.properties' does not exist; give the path of a key=value file (as Kafka's tools take with --command-config)
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = (
            f"Kafka client properties file '{path}' does not exist; give the path of a key=value file "
            "(as Kafka's tools take with --command-config)"
        )
        raise ConfigError(msg) from None
    except IsADirectoryError:
        msg = f"Kafka client properties file '{path}' is a directory; give the path of a key=value file"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"Kafka client properties file '{path}' cannot be read: {exc}"
        raise ConfigError(msg) from None
    return to_librdkafka(parse_properties(text, str(path)), str(path))


# ---------------------------------------------------------------------- Java names

_JAAS_FIELD = re.compile(r"""\b(username|password)\s*=\s*"((?:[^"\\]|\\.)*)\"""")
_JAAS_MODULES = ("PlainLoginModule", "ScramLoginModule")

#: Java client properties librdkafka has no equivalent for, with what to write instead.
_JAVA_ONLY: dict[str, str] = {
    "ssl.truststore.password": "ssl.ca.location (a PEM file of the CA)",
    "ssl.keymanager.algorithm": "nothing (leave it out)",
    "ssl.trustmanager.algorithm": "nothing (leave it out)",
    "sasl.login.callback.handler.class": "sasl.oauthbearer.* properties (librdkafka runs no Java classes)",
    "sasl.client.callback.handler.class": "sasl.oauthbearer.* properties (librdkafka runs no Java classes)",
    "sasl.login.class": "nothing (librdkafka runs no Java classes)",
}


def to_librdkafka(props: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Translate the Java client's names that librdkafka lacks; refuse those without an equivalent.

    ``sasl.jaas.config`` with ``PlainLoginModule``/``ScramLoginModule`` becomes
    ``sasl.username``/``sasl.password``; ``ssl.truststore.location`` of
    ``ssl.truststore.type=PEM`` becomes ``ssl.ca.location``; an empty
    ``ssl.endpoint.identification.algorithm`` (Java's "off") becomes ``none``.

    Example:
        >>> jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="app" password="pw";'
        >>> to_librdkafka({"sasl.jaas.config": jaas}, "client.properties")
        {'sasl.username': 'app', 'sasl.password': 'pw'}
    """
    out = dict(props)
    jaas = out.pop("sasl.jaas.config", None)
    if jaas is not None:
        fields = {m.group(1): re.sub(r"\\(.)", r"\1", m.group(2)) for m in _JAAS_FIELD.finditer(str(jaas))}
        if not any(module in str(jaas) for module in _JAAS_MODULES) or set(fields) != {
            "username",
            "password",
        }:
            msg = (
                f"{source}: sasl.jaas.config is a Java login module that librdkafka cannot run; only "
                'PlainLoginModule/ScramLoginModule with username="..." password="..." are translated: '
                "set sasl.username and sasl.password (or sasl.oauthbearer.* for OAUTHBEARER) instead"
            )
            raise ConfigError(msg)
        out.setdefault("sasl.username", fields["username"])
        out.setdefault("sasl.password", fields["password"])
    truststore = out.pop("ssl.truststore.location", None)
    store_type = str(out.pop("ssl.truststore.type", "JKS" if truststore else "")).upper()
    if truststore is not None:
        if store_type != "PEM":
            msg = (
                f"{source}: ssl.truststore.location {truststore!r} is a {store_type} truststore, which librdkafka "
                "cannot read; export the CA as PEM (keytool -exportcert -rfc -keystore FILE -alias CA) and set "
                "ssl.ca.location to that file"
            )
            raise ConfigError(msg)
        out.setdefault("ssl.ca.location", truststore)
    keystore_type = out.pop("ssl.keystore.type", None)
    if keystore_type is not None and str(keystore_type).upper() != "PKCS12":
        msg = (
            f"{source}: ssl.keystore.type={keystore_type} cannot be read by librdkafka: give a PKCS#12 keystore "
            "(ssl.keystore.location, ssl.keystore.password) or PEM files (ssl.certificate.location, ssl.key.location)"
        )
        raise ConfigError(msg)
    if out.get("ssl.endpoint.identification.algorithm") == "":
        out["ssl.endpoint.identification.algorithm"] = "none"
    for key, instead in _JAVA_ONLY.items():
        if key in out:
            msg = f"{source}: {key} is a Java client property librdkafka does not have; use {instead}"
            raise ConfigError(msg)
    return out
