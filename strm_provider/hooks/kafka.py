"""Hook for the ``strm_kafka`` connection: the one place that builds Kafka clients."""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.common.compat.sdk import mask_secret

from strm_provider.connection_settings import KafkaSettings
from strm_provider.connection_types import KAFKA, KAFKA_DEFAULT, KAFKA_TYPE
from strm_provider.hooks.connection import ConnectionHook, quiet_library_log
from strm_provider.readers import BATCH_RECORDS, ConfluentReader, KafkaPythonReader, RecordReader
from strm_provider.schema_registry import RegistryClient

#: Reader settings measured to move kafka-python 5x faster than its defaults (see bench/). They also
#: bound the reader's memory: one partition is read at a time, and a fetch holds at most
#: ``max_partition_fetch_bytes`` of it (Kafka returns a larger first record batch whole). 4 MiB
#: fetches peaked at 275 MB for the whole export task against 321 MB with 16 MiB, and were no slower
#: (bench/memory.py on Apache Kafka; README "Memory").
FAST_READ = {
    "check_crcs": False,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_bytes": 8 * 1024 * 1024,
    # One reader batch (BATCH_RECORDS, a few MB) per poll: as fast as 100k records in bench/, and far fewer
    # live record objects.
    "max_poll_records": BATCH_RECORDS,
    # The broker holds a fetch at the log's end this long (default 500 ms) for more records to arrive.
    # A run reads every partition up to the log's end, and the fetch left waiting there delayed the
    # next partition's first fetch by the whole wait: 0.5 s per partition, most of a small run.
    "fetch_max_wait_ms": 10,
}

#: librdkafka settings of the ``confluent`` reader: the fetch sizes of :data:`FAST_READ`, and a
#: prefetch queue of a few fetches per consumer (librdkafka's default queues up to 64 MiB).
CONFLUENT_READ = {
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
    "fetch.max.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 4 * 1024,
    # librdkafka pauses a partition's fetching this long once its queue is full (default 1 s): with a
    # queue of a few fetches, that pause left the export waiting for records half of the time.
    "fetch.queue.backoff.ms": 10,
    "fetch.wait.max.ms": FAST_READ["fetch_max_wait_ms"],
}

#: kafka-python setting -> librdkafka property, for the ``confluent`` reader
_LIBRDKAFKA = {
    "bootstrap_servers": "bootstrap.servers",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
}


class KafkaUnavailable(Exception):
    """The brokers could not be reached; the message names the bootstrap servers, not the secret."""


#: what kafka-python logs while it retries a refused bootstrap -> the cause a user can act on
REFUSALS = {
    "SaslAuthenticationFailed": "authentication failed (wrong user or password, or a SASL mechanism the listener "
    "does not offer)",
    "CERTIFICATE_VERIFY_FAILED": "certificate not trusted (the broker's certificate is not signed by a CA in "
    "ssl_cafile)",
    "WRONG_VERSION_NUMBER": "the listener does not speak TLS (security_protocol SSL/SASL_SSL on a plaintext port)",
}


#: a SASL listener that closes every connection without a word: kafka-python over TLS often loses the
#: broker's authentication error in the close (seen with a wrong SCRAM password on SASL_SSL)
SILENT_SASL_REFUSAL = (
    "authentication failed (the broker closed every connection while authenticating: a wrong user or "
    "password, a SASL mechanism the listener does not offer, or a listener of another security_protocol)"
)


def _not_a_slow_step(record: logging.LogRecord) -> bool:
    """kafka-python warns when one step of its network loop takes over 0.1 s. On a busy Airflow worker
    that is the operating system's scheduling, not a fault a user can act on, and it would sit in every
    export's task log; everything else the library warns about still reaches the log."""
    return "blocking the event loop" not in str(record.msg)


class _Refusals(logging.Handler):
    """Collects why the brokers refused: kafka-python retries a refused bootstrap until its timeout and
    raises only ``KafkaTimeoutError``; the reason is in what it logs meanwhile."""

    def __init__(self, sasl: bool) -> None:
        super().__init__(logging.ERROR)
        self.sasl = sasl
        self.named: str | None = None  # the first cause the library logged
        self.closed_by_broker = False

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.closed_by_broker |= "socket disconnected" in text
        if self.named is None:
            self.named = next((cause for marker, cause in REFUSALS.items() if marker in text), None)

    def cause(self) -> str | None:
        if self.named:
            return self.named
        return SILENT_SASL_REFUSAL if self.sasl and self.closed_by_broker else None


class StrmKafkaHook(ConnectionHook):
    """Kafka cluster from an Airflow connection (its settings: :class:`.KafkaSettings`).

    host = bootstrap servers (``h1:9092,h2:9092``), login/password = SASL credentials, extra =
    ``security_protocol``, ``sasl_mechanism``, ``ssl_cafile`` and ``reader`` (``kafka-python`` or
    ``confluent``: the client the export reads records with).

    Planning and commits always go through kafka-python, whichever reader reads: the offsets the
    exactly-once guarantee rests on have one code path, tested once, on the one client every
    installation has.
    """

    conn_name_attr = "kafka_conn_id"
    default_conn_name = KAFKA_DEFAULT
    conn_type = KAFKA
    hook_name = KAFKA_TYPE.name
    settings_class = KafkaSettings

    def __init__(self, kafka_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka_conn_id = kafka_conn_id

    def settings_error(self, problem: str) -> ValueError:
        return ValueError(f"Kafka connection '{self.kafka_conn_id}': {problem}")

    @property
    def bootstrap_servers(self) -> str:
        return str(self.settings.bootstrap_servers)

    def client_config(self) -> dict[str, Any]:
        """kafka-python settings shared by consumers, producers and admin clients."""
        s = self.settings
        config: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers,
            "security_protocol": s.security_protocol,
            # A healthy cluster answers in milliseconds; a refused or unreachable one fails the task in
            # 10 s per client instead of kafka-python's 30 s (the task's retries then take over).
            "bootstrap_timeout_ms": 10_000,
        }
        if s.security_protocol.startswith("SASL"):
            config |= {
                "sasl_mechanism": s.sasl_mechanism,
                "sasl_plain_username": s.login,
                "sasl_plain_password": s.password,
            }
        if s.ssl_cafile:
            config["ssl_cafile"] = s.ssl_cafile
        return config

    @property
    def reader_name(self) -> str:
        """The client the export reads with: the connection's ``reader`` extra (default ``kafka-python``)."""
        return str(self.settings.reader)

    def check_reader(self) -> None:
        """Fail in one line, naming the extra to install, if the chosen reader's library is missing."""
        if self.reader_name != "confluent":
            return
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            raise ValueError(
                f"Kafka connection '{self.kafka_conn_id}': extra 'reader' is 'confluent', which needs the "
                "confluent-kafka library: pip install 'strm-airflow-provider[confluent]'"
            ) from None

    def _connect(self, client: Any, settings: dict[str, Any]) -> Any:
        """``client(**settings)``, failing with the reason the brokers refused it, if they said one."""
        from kafka.errors import KafkaError

        refusals = _Refusals(sasl=str(settings.get("security_protocol", "")).startswith("SASL"))
        quiet_library_log("kafka")
        logging.getLogger("kafka.net.selector").addFilter(_not_a_slow_step)
        library_log = logging.getLogger("kafka")
        library_log.addHandler(refusals)
        try:
            return client(**settings)
        except KafkaError as err:
            where = f"Kafka connection '{self.kafka_conn_id}'"
            if cause := refusals.cause():
                raise KafkaUnavailable(f"{where}: {cause} at {self.bootstrap_servers}") from None
            raise KafkaUnavailable(
                f"{where}: no broker reachable at {self.bootstrap_servers} ({type(err).__name__})"
            ) from None
        finally:
            library_log.removeHandler(refusals)

    def consumer(self, group_id: str | None = None, **overrides: Any) -> Any:
        """A consumer with manual offsets only: nothing is committed unless we commit it."""
        from kafka import KafkaConsumer

        settings = {
            **self.client_config(),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed",
            "request_timeout_ms": 30_000,
            "reconnect_backoff_max_ms": 2_000,
            **FAST_READ,
            **overrides,
        }
        return self._connect(KafkaConsumer, settings)

    def reader(self, group_id: str) -> RecordReader:
        """The export's data reader, as the connection chooses; it reads only and never commits.

        librdkafka wants a group even for assigned partitions, so the ``confluent`` reader names the
        exporter's own group (which the credentials may use anyway); it never joins or commits it.
        """
        self.check_reader()
        if self.reader_name == "kafka-python":
            return KafkaPythonReader(self.consumer(None))
        from confluent_kafka import Consumer

        settings = {_LIBRDKAFKA[k]: v for k, v in self.client_config().items() if k in _LIBRDKAFKA}
        settings |= {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **CONFLUENT_READ,
        }
        library_log = logging.getLogger("confluent_kafka")
        return ConfluentReader(lambda: Consumer(settings, logger=library_log))

    def schema_registry(self) -> RegistryClient:
        """The Schema Registry the connection names, for exporters of framed records."""
        s = self.settings
        if not s.schema_registry_url:
            raise self.settings_error(
                "value_format avro, protobuf and json_schema need a Schema Registry: set the connection's extra "
                "'schema_registry_url'"
            )
        for secret in (s.schema_registry_password, s.schema_registry_token):
            if secret:
                mask_secret(secret)
        return RegistryClient(
            url=s.schema_registry_url.strip(),
            user=s.schema_registry_user,
            password=s.schema_registry_password,
            token=s.schema_registry_token,
            ca_file=s.schema_registry_ca,
            cert_file=s.schema_registry_cert,
            key_file=s.schema_registry_key,
        )

    def producer(self, **overrides: Any) -> Any:
        from kafka import KafkaProducer

        return self._connect(KafkaProducer, {**self.client_config(), "linger_ms": 20, **overrides})

    def admin(self) -> Any:
        from kafka import KafkaAdminClient

        return self._connect(KafkaAdminClient, self.client_config())

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's Test button: list the topics the credentials can see."""
        try:
            consumer = self.consumer()
            try:
                topics = consumer.topics()
            finally:
                consumer.close()
        except Exception as err:
            return False, str(err)
        return True, f"Connected to {self.bootstrap_servers}: {len(topics)} topics visible"
