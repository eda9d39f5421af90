"""Apache Kafka on 127.0.0.1 for the tests (``devstack.apache_kafka``), with helpers the tests use.

The session broker also offers the secured listeners users run: SASL_PLAINTEXT with PLAIN, and
SASL_SSL with SCRAM-SHA-512 behind a certificate from a CA the tests make. ``make demo``'s
pip-only default, the embedded broker of the ``noida-db`` wheel, is :func:`start_embedded_broker`.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions, NewTopic

from devstack import free_port, running
from devstack.apache_kafka import VERSION, Listeners, controller_port, start_kafka
from strm_provider.readers import READERS

#: the users of the secured listeners (PLAIN on SASL_PLAINTEXT, SCRAM-SHA-512 on SASL_SSL)
SASL_USER = "strm-exporter"
SASL_PASSWORD = "kafka-test-password-7f3a"


@dataclass
class Secured:
    """The session broker's secured listeners and what a client needs to trust them."""

    sasl_plaintext: int
    sasl_ssl: int
    ca_file: Path


class Broker:
    """A running broker and the few things tests do with it."""

    version = VERSION
    #: The ``reader`` extra of :meth:`connection` (the ``each_reader`` fixture switches it per test).
    reader = READERS[0]

    def __init__(self, port: int, data_dir: Path, secured: Secured | None = None) -> None:
        self.port = port
        self.data_dir = data_dir
        self.bootstrap = f"127.0.0.1:{port}"
        self.secured = secured
        self._admin: KafkaAdminClient | None = None

    def connection(self, protocol: str = "PLAINTEXT", password: str = SASL_PASSWORD) -> dict[str, Any]:
        """The ``strm_kafka`` Airflow connection for this broker, on the listener of ``protocol``."""
        if protocol == "PLAINTEXT":
            extra = {"security_protocol": "PLAINTEXT", "reader": self.reader}
            return {"conn_type": "strm_kafka", "host": self.bootstrap, "extra": extra}
        assert self.secured, "this broker has no secured listeners"
        if protocol == "SASL_PLAINTEXT":
            port, extra = self.secured.sasl_plaintext, {"sasl_mechanism": "PLAIN"}
        else:
            port = self.secured.sasl_ssl
            extra = {"sasl_mechanism": "SCRAM-SHA-512", "ssl_cafile": str(self.secured.ca_file)}
        return {
            "conn_type": "strm_kafka",
            "host": f"127.0.0.1:{port}",
            "login": SASL_USER,
            "password": password,
            "extra": {"security_protocol": protocol, "reader": self.reader, **extra},
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
        self,
        topic: str,
        values: Iterable[bytes | dict | None],
        partitions: int | None = None,
        *,
        timestamps: Sequence[int] | None = None,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[list[tuple[str, bytes]]] | None = None,
    ) -> list[tuple[int, int]]:
        """Send values round-robin over ``partitions`` (or the topic's); return (partition, offset) of each.

        ``timestamps`` (ms), ``keys`` and ``headers`` give each record's own, by position.
        """
        count = partitions or len(self.partitions(topic))
        # A producer per call: a session-long kafka-python producer's network thread was seen spinning
        # with the GIL held late in the session, slowing every in-process DAG run after it.
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, batch_size=256 * 1024)
        try:
            futures = []
            for i, value in enumerate(values):
                payload = json.dumps(value).encode() if isinstance(value, dict) else value
                futures.append(
                    producer.send(
                        topic,
                        value=payload,
                        partition=i % count,
                        timestamp_ms=None if timestamps is None else timestamps[i],
                        key=None if keys is None else keys[i],
                        headers=None if headers is None else headers[i],
                    )
                )
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
    """An event shaped like the documentation's example (used by tests; the demo has its own generator)."""
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


def start_broker(data_dir: Path, port: int | None = None) -> contextlib.AbstractContextManager[Any]:
    """Context manager running one Apache Kafka node on ``port`` with data in ``data_dir`` (kept across restarts)."""
    return start_kafka(data_dir, Listeners(port or free_port(), controller_port(data_dir)))


@contextlib.contextmanager
def start_secured_broker(data_dir: Path, port: int) -> Iterator[Secured]:
    """A node with the PLAINTEXT listener and the two secured ones, its certificate from a CA made here."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    tls = data_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tls / "server.pem").write_bytes(pkcs8 + b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    secured = Secured(free_port(), free_port(), tls / "ca.pem")
    plain_jaas = f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}="{SASL_PASSWORD}";'
    listeners = Listeners(
        port,
        controller_port(data_dir),
        sasl_plaintext=secured.sasl_plaintext,
        sasl_ssl=secured.sasl_ssl,
        extra={
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain_jaas,
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls / "server.pem"),
        },
    )
    scram = f"SCRAM-SHA-512=[name={SASL_USER},password={SASL_PASSWORD}]"
    with start_kafka(data_dir, listeners, format_args=("--add-scram", scram)):
        yield secured


def start_embedded_broker(data_dir: Path, port: int | None = None) -> contextlib.AbstractContextManager[Any]:
    """The Kafka-compatible broker of the ``noida-db`` wheel: ``make demo``'s default, nothing but Python."""
    port = port or free_port()
    binary = shutil.which("noida-db", path=str(Path(sys.executable).parent)) or "noida-db"
    cmd = [binary, "start", "--data-dir", str(data_dir), "--only", "kafka", "--kafka-port", str(port)]
    return running([*cmd, "--host", "127.0.0.1"], log=data_dir / "broker.log", port=port)
