"""Readers: the export's data path out of Kafka, one per client library, behind one small interface.

The export reads a partition from a planned start to a planned end and never touches group offsets
while doing so: planning and the final commit go through one kafka-python consumer of
:class:`~strm_provider.hooks.kafka.StrmKafkaHook`, whichever reader reads. The connection's ``reader``
extra chooses the client: ``kafka-python`` (pure Python, the default) or ``confluent`` (librdkafka, the
``[confluent]`` extra), which fetches and decodes in its own threads, off the GIL.

Readers hand out :class:`Batch` objects, column lists rather than record objects, so the export
handles a poll's worth of values at once. Clients are built by the hook; readers only wrap them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

log = logging.getLogger(__name__)

#: The names a ``strm_kafka`` connection's ``reader`` extra accepts; the first is the default.
READERS = ("kafka-python", "confluent")
#: Records per poll: a batch is a few MB of values.
BATCH_RECORDS = 10_000


class RecordMeta(NamedTuple):
    """What the export needs of a record besides its value: where it was and when it was produced."""

    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    headers: list[tuple[str, bytes | None]]


class Batch:
    """Records of one partition, in offset order, all inside the requested range (possibly none).

    ``values`` is a plain list (the export validates and writes them in one go); the rest of a
    record is looked up only where the export needs it (a file's first record, a dead letter).
    """

    __slots__ = ("_meta", "_records", "partition", "values")

    def __init__(
        self,
        partition: int,
        values: list[bytes | None],
        records: list[Any],
        meta: Callable[[Any], RecordMeta],
    ) -> None:
        self.partition = partition
        self.values = values
        self._records = records
        self._meta = meta

    def meta(self, index: int) -> RecordMeta:
        """Offset, timestamp, key and headers of record ``index``."""
        return self._meta(self._records[index])

    def timestamps(self, start: int = 0, stop: int | None = None) -> list[int]:
        """The timestamps (milliseconds since the epoch) of records ``start`` up to ``stop``, in order."""
        meta = self._meta
        return [meta(record).timestamp for record in self._records[start:stop]]


class RecordReader(Protocol):
    """Reads ``[start, end)`` of one partition; offsets may have gaps (transaction markers, compaction)."""

    def batches(self, topic: str, partition: int, start: int, end: int) -> Iterator[Batch]:
        """Yield batches until the partition's position reaches ``end``.

        An empty batch means a poll returned nothing (about a second passed): the caller decides
        when silence becomes a stall.
        """
        ...

    def prefetch(self, topic: str, partition: int, start: int) -> None:
        """A hint: the export reads this partition from ``start`` next (a reader may start fetching now)."""
        ...

    def close(self) -> None: ...


class KafkaPythonReader:
    """kafka-python's ``KafkaConsumer`` (assign/seek/poll), with no group: it never commits."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def batches(self, topic: str, partition: int, start: int, end: int) -> Iterator[Batch]:
        from kafka import TopicPartition

        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        while True:
            records = self._consumer.poll(timeout_ms=1000).get(tp, [])
            if records and records[-1].offset >= end:
                records = [r for r in records if r.offset < end]
            yield Batch(partition, [r.value for r in records], records, _kafka_python_meta)
            if (records and records[-1].offset >= end - 1) or self._consumer.position(tp) >= end:
                return

    def prefetch(self, topic: str, partition: int, start: int) -> None:
        """kafka-python decodes in the calling thread: fetching ahead would only take turns with it."""

    def close(self) -> None:
        self._consumer.close()


class ConfluentReader:
    """confluent-kafka's ``Consumer``: librdkafka fetches the next batch while Python writes this one.

    Two consumers at most: the one reading the current range and, after :meth:`prefetch`, one
    already fetching the next, so a partition switch does not wait for the broker.

    Partition EOF events tell where the log ends when the last planned offsets hold no record
    (transaction markers): the range is done once the consumer's position reaches ``end``.
    """

    def __init__(self, new_consumer: Callable[[], Any]) -> None:
        self._new_consumer = new_consumer
        self._idle: list[Any] = []
        self._ahead: dict[tuple[str, int, int], Any] = {}

    def _assigned(self, topic: str, partition: int, start: int) -> Any:
        from confluent_kafka import TopicPartition

        consumer = self._idle.pop() if self._idle else self._new_consumer()
        consumer.assign([TopicPartition(topic, partition, start)])
        return consumer

    def prefetch(self, topic: str, partition: int, start: int) -> None:
        """Start fetching the range the export reads next, on a second consumer, while it reads this one."""
        if (topic, partition, start) not in self._ahead:
            self._ahead[topic, partition, start] = self._assigned(topic, partition, start)

    def batches(self, topic: str, partition: int, start: int, end: int) -> Iterator[Batch]:
        from confluent_kafka import KafkaError, KafkaException

        consumer = self._ahead.pop((topic, partition, start), None) or self._assigned(topic, partition, start)
        position = start
        try:
            while True:
                messages = _take(consumer, max(1, min(BATCH_RECORDS, end - position)))
                if messages and any(m.error() is not None for m in messages):
                    kept = []
                    for m in messages:
                        err = m.error()
                        if err is None:
                            kept.append(m)
                        elif err.code() == KafkaError._PARTITION_EOF:
                            position = max(position, m.offset())
                        elif err.fatal():
                            raise KafkaException(err)
                        else:  # transient (broker restarting, connection cut): librdkafka retries by itself
                            log.warning("partition %s: %s (retrying)", partition, err.str())
                    messages = kept
                if messages:
                    if messages[-1].offset() >= end:
                        messages = [m for m in messages if m.offset() < end]
                        position = end
                    if messages:
                        position = max(position, messages[-1].offset() + 1)
                yield Batch(partition, [m.value() for m in messages], messages, _confluent_meta)
                if position >= end:
                    return
        finally:
            consumer.unassign()
            self._idle.append(consumer)

    def close(self) -> None:
        for consumer in [*self._idle, *self._ahead.values()]:
            consumer.close()
        self._idle, self._ahead = [], {}


def _take(consumer: Any, wanted: int) -> list[Any]:
    """What is queued now (up to ``wanted``), else the first message within a second and what came with it.

    ``consume(n, timeout)`` waits until it has ``n`` messages, so a range's last, short batch
    would cost the whole timeout; ``poll`` returns as soon as one message is there.
    """
    messages = consumer.consume(num_messages=wanted, timeout=0)
    if messages:
        return messages
    first = consumer.poll(1.0)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=wanted - 1, timeout=0)] if wanted > 1 else [first]


def _kafka_python_meta(record: Any) -> RecordMeta:
    return RecordMeta(record.offset, record.timestamp, record.key, record.headers or [])


def _confluent_meta(message: Any) -> RecordMeta:
    return RecordMeta(message.offset(), message.timestamp()[1], message.key(), message.headers() or [])
