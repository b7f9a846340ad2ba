"""``make demo-registry``: Avro orders through a Schema Registry, in and out of a sluice app.

A plain confluent-kafka producer writes orders in Avro (the Confluent wire format), a
sluice app keeps the big ones and writes them in Avro with its own schema, and a plain
confluent-kafka consumer reads them back. Needs the broker and the registry
(``make broker-up registry-up``; the registry URL is read from ``.registry/url``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from sluice import App

BROKERS = os.environ.get("SLUICE_BROKERS", "127.0.0.1:9092")
ROOT = Path(__file__).resolve().parent.parent
COUNT = 2000
ORDER = """{"type": "record", "name": "Order", "namespace": "demo", "fields": [
  {"name": "id", "type": "long"}, {"name": "customer", "type": "string"}, {"name": "amount", "type": "double"}]}"""
BIG_ORDER = {
    "type": "record",
    "name": "BigOrder",
    "namespace": "demo",
    "fields": [{"name": "id", "type": "long"}, {"name": "customer", "type": "string"}],
}


def registry_url() -> str:
    url = os.environ.get("SLUICE_SCHEMA_REGISTRY_URL")
    if url:
        return url
    path = ROOT / ".registry" / "url"
    if not path.exists():
        raise SystemExit("no Schema Registry: run `make registry-up` (or set SLUICE_SCHEMA_REGISTRY_URL)")
    return path.read_text().strip()


def main() -> None:
    url = registry_url()
    client = SchemaRegistryClient({"url": url})
    run = uuid.uuid4().hex[:6]
    orders, big = f"demo-orders-{run}", f"demo-big-orders-{run}"
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for f in admin.create_topics([NewTopic(t, 2, 1) for t in (orders, big)]).values():
        f.result(30)

    write = AvroSerializer(client, ORDER)
    producer = Producer({"bootstrap.servers": BROKERS})
    for i in range(COUNT):
        order = {"id": i, "customer": f"customer-{i % 50}", "amount": float(i % 400)}
        producer.produce(orders, write(order, SerializationContext(orders, MessageField.VALUE)))
        producer.poll(0)
    producer.flush(30)
    print(
        f"wrote {COUNT} Avro orders to {orders} (schema id {client.get_latest_version(orders + '-value').schema_id})"
    )

    app = App(f"demo-avro-{run}", brokers=BROKERS, schema_registry={"url": url})
    (
        app.stream(orders, value="avro")
        .filter(lambda o: o["amount"] >= 300)
        .map(lambda o: {"id": o["id"], "customer": o["customer"]})
        .to(big, value="avro", schema=BIG_ORDER)
    )
    thread = threading.Thread(target=app.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()

    read = AvroDeserializer(client)
    consumer = Consumer(
        {"bootstrap.servers": BROKERS, "group.id": f"demo-read-{run}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([big])
    expected = sum(1 for i in range(COUNT) if i % 400 >= 300)
    got: list[dict] = []
    deadline = time.monotonic() + 60
    while len(got) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error() is None:
                got.append(read(msg.value(), SerializationContext(big, MessageField.VALUE)))
    consumer.close()
    app.stop()
    thread.join(30)
    print(f"read back {len(got)} of {expected} big orders from {big} with a plain confluent-kafka consumer")
    print(
        f"e.g. {got[0] if got else None}; subjects now: {sorted(s for s in client.get_subjects() if run in s)}"
    )
    for f in admin.delete_topics([orders, big]).values():
        f.result(30)
    if len(got) != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
