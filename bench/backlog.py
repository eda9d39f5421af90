"""The benchmarks' backlog: clickstream events of about 600 bytes, produced round-robin over a topic, as JSON
(:func:`produce`) or, the same events, as Avro through confluent-kafka's ``AvroSerializer`` and a Schema Registry
(:func:`produce_avro`, schema :data:`AVRO_SCHEMA`)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TOPIC = "bench"
#: the same events as Avro records framed by the Schema Registry (subject ``bench-avro-value``)
AVRO_TOPIC = "bench-avro"
PARTITIONS = 8
EVENT_BYTES = 600

#: the events' fields in their order, so that an Avro event decoded to JSON is the JSON event, byte for byte
AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Clickstream",
    "namespace": "bench",
    "fields": [
        {
            "name": "strmMeta",
            "type": {
                "type": "record",
                "name": "StrmMeta",
                "fields": [
                    {"name": "schemaId", "type": "string"},
                    {"name": "nonce", "type": "long"},
                    {"name": "timestamp", "type": "long"},
                    {"name": "keyLink", "type": "string"},
                    {"name": "billingId", "type": "string"},
                    {"name": "consentLevels", "type": {"type": "array", "items": "int"}},
                ],
            },
        },
        {"name": "producerSessionId", "type": "string"},
        {"name": "url", "type": "string"},
        {"name": "eventType", "type": "string"},
        {"name": "referrer", "type": "string"},
        {"name": "userAgent", "type": "string"},
        {"name": "conversion", "type": "int"},
        {
            "name": "customer",
            "type": {"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "string"}]},
        },
        {"name": "abTests", "type": {"type": "array", "items": "string"}},
    ],
}


def events(count: int, seed: int = 6) -> Iterator[bytes]:
    """Clickstream events (strm simulate random-events) as JSON, padded to about 600 bytes with a URL query."""
    import orjson

    for event in event_dicts(count, seed):
        yield orjson.dumps(event)


def event_dicts(count: int, seed: int = 6) -> Iterator[dict[str, Any]]:
    """The events of :func:`events`, as dicts."""
    import orjson

    from strm_provider.cli.streams import random_event

    rng = random.Random(seed)
    for i in range(count):
        event = random_event(rng, now_ms=1_700_000_000_000 + i * 7)
        size = len(orjson.dumps(event))
        target = EVENT_BYTES + rng.randint(-20, 20)
        if size + 20 < target:
            event["url"] += "?utm_source=bench&utm_content=" + "x" * (target - size - 31)
        yield event


PRODUCER = {
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_000_000,
    "acks": "1",
}


def produce(bootstrap: str, count: int, partitions: int = PARTITIONS, spool: Path | None = None) -> int:
    """Produce ``count`` events round-robin over the partitions; return the bytes of all values.

    ``spool`` also gets them as JSON Lines (what the exports write), for the upload-only method.
    """
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    total = 0
    out = spool.open("wb") if spool else None
    for i, value in enumerate(events(count)):
        total += len(value)
        if out:
            out.write(value + b"\n")
        while True:
            try:
                producer.produce(TOPIC, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    if out:
        out.close()
    if producer.flush(120):
        raise RuntimeError("producer could not deliver every event")
    return total


def produce_avro(bootstrap: str, registry_url: str, count: int, partitions: int = PARTITIONS) -> tuple[int, int]:
    """The events of :func:`produce` to :data:`AVRO_TOPIC`, serialized by confluent-kafka's ``AvroSerializer``
    (schema registered under ``bench-avro-value``); return (bytes of the events as JSON, bytes of the Avro values).
    """
    import json

    import orjson
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serializer = AvroSerializer(SchemaRegistryClient({"url": registry_url}), json.dumps(AVRO_SCHEMA))
    context = SerializationContext(AVRO_TOPIC, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    json_bytes = avro_bytes = 0
    for i, event in enumerate(event_dicts(count)):
        json_bytes += len(orjson.dumps(event))
        value = serializer(event, context)
        avro_bytes += len(value)
        while True:
            try:
                producer.produce(AVRO_TOPIC, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("producer could not deliver every event")
    return json_bytes, avro_bytes
