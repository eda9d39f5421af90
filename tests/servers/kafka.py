"""The Kafka-compatible broker from the ``noida-db`` wheel, on 127.0.0.1, with helpers the tests use."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions, NewTopic

from tests.servers import free_port, running


class Broker:
    """A running broker and the few things tests do with it."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.bootstrap = f"127.0.0.1:{port}"
        self._admin: KafkaAdminClient | None = None

    def connection(self) -> dict[str, Any]:
        """The ``strm_kafka`` Airflow connection for this broker."""
        return {
            "conn_type": "strm_kafka",
            "host": self.bootstrap,
            "extra": {"security_protocol": "PLAINTEXT"},
        }

    @property
    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        return self._admin

    def reset_clients(self) -> None:
        """Forget cached clients (after a broker restart)."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
        self._admin = None

    def create_topic(self, name: str, partitions: int = 5, configs: dict[str, str] | None = None) -> str:
        self.admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        deadline = time.monotonic() + 10
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            while len(consumer.partitions_for_topic(name) or ()) < partitions:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {name} not ready")
                time.sleep(0.05)
                consumer.close()
                consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        finally:
            consumer.close()
        return name

    def add_partitions(self, name: str, total: int) -> None:
        self.admin.create_partitions({name: NewPartitions(total_count=total)})

    def produce(
        self, topic: str, values: Iterable[bytes | dict | None], partitions: int | None = None
    ) -> list[tuple[int, int]]:
        """Send values round-robin over ``partitions`` (or the topic's); return (partition, offset) of each."""
        count = partitions or len(self.partitions(topic))
        # A producer per call: a session-long kafka-python producer's network thread was seen spinning
        # with the GIL held late in the session, slowing every in-process DAG run after it.
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, batch_size=256 * 1024)
        try:
            futures = []
            for i, value in enumerate(values):
                payload = json.dumps(value).encode() if isinstance(value, dict) else value
                futures.append(producer.send(topic, value=payload, partition=i % count))
            producer.flush()
            return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
        finally:
            producer.close(timeout=10)

    def partitions(self, topic: str) -> list[int]:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            return sorted(consumer.partitions_for_topic(topic) or ())
        finally:
            consumer.close()

    def end_offsets(self, topic: str) -> dict[int, int]:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            return {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
        finally:
            consumer.close()

    def committed(self, group: str, topic: str) -> dict[int, int | None]:
        """The group's committed offset per partition, as Kafka holds it."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False)
        try:
            parts = sorted(consumer.partitions_for_topic(topic) or ())
            return {p: consumer.committed(TopicPartition(topic, p)) for p in parts}
        finally:
            consumer.close()


def clickstream_event(rng: random.Random, i: int) -> dict[str, Any]:
    """An event shaped like the seed's example (used by tests; the demo has its own generator)."""
    return {
        "strmMeta": {
            "schemaId": "clickstream",
            "nonce": rng.randrange(1 << 31),
            "timestamp": 1_700_000_000_000 + i,
            "keyLink": f"key-{i}",
            "billingId": "demo",
            "consentLevels": [0, 1],
        },
        "seq": i,
        "url": f"https://example.com/{i}",
        "customer": {"id": f"c{i % 97}"},
        "abTests": [],
    }


def start_broker(data_dir: Path, port: int | None = None) -> Any:
    """Context manager running one broker process on ``port`` with data in ``data_dir``."""
    port = port or free_port()
    binary = shutil.which("noida-db", path=str(Path(sys.executable).parent)) or "noida-db"
    cmd = [
        binary,
        "start",
        "--data-dir",
        str(data_dir),
        "--only",
        "kafka",
        "--kafka-port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    return running(cmd, log=data_dir / "broker.log", port=port)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session; tests use their own topics."""
    data_dir = tmp_path_factory.mktemp("kafka")
    port = free_port()
    with start_broker(data_dir, port):
        broker = Broker(port, data_dir)
        yield broker
        broker.reset_clients()
