"""Exactly-once: consume-transform-produce inside Kafka transactions (the "EOS v2" model).

One transactional producer per process. Outputs, changelog records and dead letters
are produced inside the open transaction; every ``commit_interval`` the consumed
positions are added to it with the consumer's group metadata
(``send_offsets_to_transaction``) and it is committed: all of it becomes visible to
``read_committed`` readers at once, or none of it. A zombie (a process whose
partitions moved while it was paused) is fenced: the group coordinator refuses offsets
of a stale generation, and a restarted process with the same ``transactional.id``
bumps the producer epoch.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from sluice.errors import SluiceError
from sluice.kafka.calls import error_text, kafka_error
from sluice.state.slots import Slot

__all__ = ["TransactionAborted", "TransactionUnknown", "Transactions", "transactional_id"]

logger = logging.getLogger(__name__)


class TransactionAborted(Exception):
    """The transaction could not commit and was aborted: rewind and redo its records."""


class TransactionUnknown(Exception):
    """The commit timed out or failed in a way that leaves its outcome unknown (an indefinite error).

    The producer must not go on: a new one (``init_transactions``, a new epoch) completes
    or aborts the old transaction on the broker, and the records are redone from the
    offsets the group coordinator holds.
    """


def transactional_id(app: str, slot: Slot) -> str:
    """``<app>-<instance>-<slot>``: a process restarted after a crash gets the dead one's id back
    and fences its open transaction at once; processes running side by side (``--workers``, a
    paused zombie) have different ids and are fenced by the consumer group's generation."""
    return f"{app}-{slot.instance}-{slot.number}"


class Transactions:
    """The transaction lifecycle of one producer."""

    def __init__(self, producer: Producer, timeout: float) -> None:
        self.producer = producer
        self.timeout = timeout
        self.open = False

    def start(self) -> None:
        """Register the transactional id (fencing older producers with it) and open a transaction."""
        self.start_without_begin()
        self.begin()

    def start_without_begin(self) -> None:
        """Register the transactional id: bumps the epoch, ending whatever an older producer left open."""
        try:
            self.producer.init_transactions(self.timeout)
        except KafkaException as exc:
            raise _fatal("initialising the transactional producer", exc) from exc

    def close(self) -> None:
        """Drop what this producer still holds (nothing of it may reach Kafka any more)."""
        try:
            self.producer.purge()
            self.producer.flush(0)
        except (KafkaException, RuntimeError) as exc:
            logger.info("closing a transactional producer: %s", exc)

    def begin(self) -> None:
        self.producer.begin_transaction()
        self.open = True

    def commit(self, offsets: list[TopicPartition], group_metadata: object) -> None:
        """Add ``offsets`` and commit; raise ``TransactionAborted`` (after aborting) or a fatal ``SluiceError``."""
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout)
            self._commit_with_retries()
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is not None and err.txn_requires_abort():
                self.abort()
                raise TransactionAborted(err.str()) from exc
            if (
                err is not None
                and not err.fatal()
                and (err.retriable() or err.code() == KafkaError._TIMED_OUT)
            ):
                self.open = False
                raise TransactionUnknown(err.str()) from exc
            raise _fatal("committing the transaction", exc) from exc
        self.open = False
        self.begin()

    def _commit_with_retries(self) -> None:
        for attempt in range(3):
            try:
                self.producer.commit_transaction(self.timeout)
                return
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is None or not err.retriable() or attempt == 2:
                    raise
                logger.warning("committing the transaction: %s; retrying", err.str())

    def abort(self) -> None:
        """Abort the open transaction (its records are never visible to ``read_committed`` readers)."""
        try:
            self.producer.abort_transaction(self.timeout)
        except KafkaException as exc:
            raise _fatal("aborting the transaction", exc) from exc
        self.open = False


def _fatal(doing: str, exc: KafkaException) -> SluiceError:
    err = kafka_error(exc)
    detail = error_text(exc)
    fenced = err is not None and err.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    )
    why = (
        " (fenced: another process with this transactional id, or a newer generation of the group, took over)"
        if fenced
        else ""
    )
    return SluiceError(f"{doing} failed: {detail}{why}; nothing of the open transaction is committed")
