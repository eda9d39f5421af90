"""The benchmarks' backlog: clickstream events of about 600 bytes, produced round-robin over a topic."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

TOPIC = "bench"
PARTITIONS = 8
EVENT_BYTES = 600


def events(count: int, seed: int = 6) -> Iterator[bytes]:
    """Clickstream events (strm simulate random-events), padded to about 600 bytes with a URL query."""
    import orjson

    from strm_provider.cli.streams import random_event

    rng = random.Random(seed)
    for i in range(count):
        event = random_event(rng, now_ms=1_700_000_000_000 + i * 7)
        size = len(orjson.dumps(event))
        target = EVENT_BYTES + rng.randint(-20, 20)
        if size + 20 < target:
            event["url"] += "?utm_source=bench&utm_content=" + "x" * (target - size - 31)
        yield orjson.dumps(event)


def produce(bootstrap: str, count: int, partitions: int = PARTITIONS, spool: Path | None = None) -> int:
    """Produce ``count`` events round-robin over the partitions; return the bytes of all values.

    ``spool`` also gets them as JSON Lines (what the exports write), for the upload-only method.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_000_000,
            "acks": "1",
        }
    )
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
