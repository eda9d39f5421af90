"""The reader: the export's data path out of Kafka, behind one small interface.

The export reads a partition from a planned start to a planned end and never touches group
offsets while doing so (a second kafka-python consumer of :class:`~strm_provider.hooks.kafka.StrmKafkaHook`
plans and commits). The interface, :class:`RecordReader`, is what the export and the tests' fault
seams see.

The reader hands out :class:`Batch` objects, column lists rather than record objects, so the export
handles a poll's worth of values at once. The consumer is built by the hook; the reader only wraps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

#: Records per poll (kafka-python's ``max_poll_records``): a batch is a few MB of values.
BATCH_RECORDS = 10_000


class Batch:
    """Records of one partition, in offset order, all inside the requested range (possibly none).

    ``values`` is a plain list (the export validates and writes them in one go); the rest of a
    record (kafka-python's ``ConsumerRecord``) is looked up only where the export needs it (a file's
    first record, a dead letter).
    """

    __slots__ = ("_records", "partition", "values")

    def __init__(self, partition: int, records: list[Any]) -> None:
        self.partition = partition
        self.values: list[bytes | None] = [r.value for r in records]
        self._records = records

    def meta(self, index: int) -> tuple[int, int, bytes | None]:
        """(offset, timestamp in ms, key) of record ``index``."""
        record = self._records[index]
        return record.offset, record.timestamp, record.key


class RecordReader(Protocol):
    """Reads ``[start, end)`` of one partition; offsets may have gaps (transaction markers, compaction)."""

    def batches(self, topic: str, partition: int, start: int, end: int) -> Iterator[Batch]:
        """Yield batches until the partition's position reaches ``end``.

        An empty batch means a poll returned nothing (about a second passed): the caller decides
        when silence becomes a stall.
        """
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
            yield Batch(partition, records)
            if (records and records[-1].offset >= end - 1) or self._consumer.position(tp) >= end:
                return

    def close(self) -> None:
        self._consumer.close()
