"""Client errors that no retry can heal (wrong SASL credentials, a TLS handshake refused), caught early.

librdkafka reports a refused login through the ``error_cb`` and then keeps retrying
quietly: a metadata request only times out, as if the brokers were down. A
:class:`ClientErrorWatch` given as ``error_cb`` remembers such an error so that the
caller can stop at once with a message that names the mechanism and what to check.

Example:
    >>> watch = ClientErrorWatch({"bootstrap.servers": "b:9094", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app"})
    >>> watch.refused is None
    True
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

from sluice.errors import KafkaAuthenticationError
from sluice.kafka.properties import scrub

__all__ = ["ClientErrorWatch", "refusal_message"]

logger = logging.getLogger(__name__)

_SASL_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
_TLS_CODES = frozenset({KafkaError._SSL})
# "sasl_ssl://127.0.0.1:9094/bootstrap: " in front of librdkafka's text says nothing the message does not
_BROKER_PREFIX = re.compile(r"^\S+://\S+?: ")


def refusal_message(err: KafkaError, config: Mapping[str, Any]) -> str:
    """One line saying who refused what, with which mechanism, and what to check.

    Example:
        >>> class E:
        ...     def code(self): return KafkaError._AUTHENTICATION
        ...     def str(self): return "sasl_ssl://b:9094/bootstrap: SASL authentication error: Authentication failed"
        >>> refusal_message(E(), {"bootstrap.servers": "b:9094", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app"})
        "SASL authentication (SCRAM-SHA-512, user 'app') to Kafka at b:9094 failed: SASL authentication error: Authentication failed; check sasl.username and sasl.password (--config FILE, kafka_config= or $SLUICE_KAFKA_CONFIG)"
    """
    brokers = config.get("bootstrap.servers", "?")
    detail = scrub(_BROKER_PREFIX.sub("", err.str()), config)
    if err.code() in _TLS_CODES:
        return (
            f"TLS connection to Kafka at {brokers} failed: {detail}; check ssl.ca.location (the CA that signed "
            "the brokers' certificates), the client certificate if the brokers ask for one, and security.protocol"
        )
    mechanism = config.get("sasl.mechanism") or config.get("sasl.mechanisms") or "GSSAPI"
    user = config.get("sasl.username")
    who = f", user {user!r}" if user else ""
    return (
        f"SASL authentication ({mechanism}{who}) to Kafka at {brokers} failed: {detail}; check sasl.username "
        "and sasl.password (--config FILE, kafka_config= or $SLUICE_KAFKA_CONFIG)"
    )


class ClientErrorWatch:
    """An ``error_cb`` that remembers the first refusal (SASL or TLS) and the last error of any kind."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config
        self.refused: KafkaError | None = None
        self.last_error: str | None = None

    def __call__(self, err: KafkaError) -> None:
        self.last_error = scrub(err.str(), self._config)
        if self.refused is None and err.code() in _SASL_CODES | _TLS_CODES:
            self.refused = err
        logger.debug("kafka client error: %s", self.last_error)

    def raise_if_refused(self) -> None:
        """Raise ``KafkaAuthenticationError`` when the brokers refused the client.

        Raises:
            KafkaAuthenticationError: wrong credentials or a failed TLS handshake.
        """
        if self.refused is not None:
            raise KafkaAuthenticationError(refusal_message(self.refused, self._config))
