"""The reader choice (the Kafka connection's ``reader`` extra) and the batch writer's file boundaries.

The exactly-once scenarios run once per reader (``each_reader`` in the e2e, fault and bad-input
modules); this module covers what is specific to the choice: both readers hand over the same records
for the same range, gaps included, on plain and secured listeners; a bad ``reader`` value is refused
by name; a missing library fails the plan task naming the extra to install.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from contextlib import contextmanager
from itertools import accumulate
from typing import Any

import pytest
from kafka import KafkaProducer

from strm_provider.hooks.kafka import StrmKafkaHook
from strm_provider.lines import Lines
from strm_provider.readers import READERS, Batch, RecordMeta
from strm_provider.writer import RollingFile
from tests.conftest import REPO
from tests.exporting import conn_env, connections, exporter_group, opened
from tests.faults.scenario import unique


def read_all(hook: StrmKafkaHook, topic: str, partition: int, start: int, end: int) -> list[tuple[int, bytes | None]]:
    reader = hook.reader(exporter_group("readers-test"))
    try:
        return [
            (batch.meta(i).offset, value)
            for batch in reader.batches(topic, partition, start, end)
            for i, value in enumerate(batch.values)
        ]
    finally:
        reader.close()


def test_both_readers_give_the_same_records_across_transaction_markers(kafka: Any) -> None:
    """Committed transactions leave marker offsets; aborted ones must stay hidden (read_committed)."""
    topic = kafka.create_topic(unique("readers"), 1)
    plain = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for i in range(5):
        plain.send(topic, f'{{"n": {i}}}'.encode(), partition=0)
    plain.flush()
    plain.close()
    txn = KafkaProducer(bootstrap_servers=kafka.bootstrap, transactional_id=unique("txn"))
    txn.init_transactions()
    txn.begin_transaction()
    for i in range(5, 8):
        txn.send(topic, f'{{"n": {i}}}'.encode(), partition=0)
    txn.commit_transaction()
    txn.begin_transaction()
    txn.send(topic, b'{"n": "aborted"}', partition=0)
    txn.flush()
    txn.abort_transaction()
    txn.close()
    end = kafka.end_offsets(topic)[0]
    assert end == 11, "5 plain, 3 committed, a commit marker, 1 aborted, an abort marker"

    seen = {}
    for name in READERS:
        conn = {**kafka.connection(), "extra": {"reader": name}}
        with connections(strm_kafka_default=conn):
            hook = StrmKafkaHook()
            assert hook.reader_name == name
            seen[name] = everything = read_all(hook, topic, 0, 0, end)
            assert [json.loads(v)["n"] for _, v in everything] == list(range(8))
            assert [o for o, _ in everything] == list(range(8))
            assert read_all(hook, topic, 0, 2, 7) == everything[2:7]
            assert read_all(hook, topic, 0, 8, end) == [], "only a marker and an aborted record are left"
    assert seen["confluent"] == seen["kafka-python"]


def test_the_task_log_keeps_the_clients_warnings_but_not_its_slow_step_notices(
    kafka: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """kafka-python warns whenever a step of its network loop is slow, as on any busy worker."""
    with connections(strm_kafka_default=kafka.connection()):
        StrmKafkaHook().consumer().close()
    selector = logging.getLogger("kafka.net.selector")
    with caplog.at_level(logging.INFO):
        selector.warning(
            "Task <kafka.net.selector.Task object> ran for 0.407s (>0.100s threshold). It is blocking the event "
            "loop -- likely a tight sync loop inside a coroutine. Other pollers will time out."
        )
        kept = "Task <kafka.net.selector.Task object> left RUNNING after step; demoting to UNSCHEDULED"
        selector.warning(kept)
        selector.info("Connected to broker")
    assert [r.getMessage() for r in caplog.records] == [kept]


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_confluent_reader_reads_through_sasl_and_tls(kafka: Any, protocol: str) -> None:
    """The connection's SASL user, password, mechanism and CA reach librdkafka as they reach kafka-python."""
    topic = kafka.create_topic(unique("secured-read"), 1)
    kafka.produce(topic, [{"n": i} for i in range(50)])
    conn = kafka.connection(protocol)
    conn["extra"]["reader"] = "confluent"
    with connections(strm_kafka_default=conn):
        got = read_all(StrmKafkaHook(), topic, 0, 0, 50)
    assert [json.loads(v)["n"] for _, v in got] == list(range(50))


@pytest.mark.parametrize("value", ["librdkafka", "Confluent-Kafka", 3])
def test_unknown_reader_is_refused_naming_the_field(value: Any) -> None:
    conn = {"conn_type": "strm_kafka", "host": "127.0.0.1:9", "extra": {"reader": value}}
    with connections(strm_kafka_default=conn), pytest.raises(ValueError) as err:
        StrmKafkaHook().reader("g")
    assert str(err.value) == (
        "Kafka connection 'strm_kafka_default': extra 'reader' must be one of kafka-python, confluent, "
        f"got {str(value).lower()!r}"
    )


def test_confluent_reader_without_the_library_fails_the_plan_naming_the_extra(kafka: Any, s3_target: Any) -> None:
    """A deployment without confluent-kafka: the plan task fails in one line, before reading or committing."""
    topic, prefix = kafka.create_topic(unique("no-librdkafka"), 2), unique("no-librdkafka")
    kafka.produce(topic, [{"n": i} for i in range(10)])
    conn = {**kafka.connection(), "extra": {"reader": "confluent"}}
    group = exporter_group(topic)
    script = (
        "import sys; sys.modules['confluent_kafka'] = None  # as if not installed\n"
        "from strm_provider.operators import KafkaExportPlanOperator\n"
        f"KafkaExportPlanOperator(task_id='plan', stream={topic!r}, storage_conn_id='dc', group_id={group!r},"
        " include_existing_events=True).execute({})\n"
    )
    env = {
        **os.environ,
        conn_env("strm_kafka_default"): json.dumps(conn),
        conn_env("dc"): json.dumps(s3_target.connection(prefix)),
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "ValueError: Kafka connection 'strm_kafka_default': extra 'reader' is 'confluent', which needs the "
        "confluent-kafka library: pip install 'strm-airflow-provider[confluent]'"
    )
    assert kafka.committed(group, topic) == {0: None, 1: None}, "nothing planned, nothing pinned"
    assert s3_target.objects(prefix) == {}, "not even the validation file"


class _Memory:
    """Storage that keeps what each open writer received (the rotation logic is ours, not a boundary)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    @contextmanager
    def open_writer(self, key: str) -> Any:
        parts: list[bytes] = []

        class Writer:
            def write(self, data: Any) -> int:
                parts.append(bytes(data))
                return len(data)

        yield Writer()
        self.objects[key] = b"".join(parts)


def _one_at_a_time(lines: list[bytes], max_bytes: int, max_events: int | None) -> list[list[bytes]]:
    """The rotation rule, line by line: a file takes a line while within both limits, and always its first."""
    files: list[list[bytes]] = []
    size = 0
    for line in lines:
        if files and (size + len(line) > max_bytes or (max_events is not None and len(files[-1]) >= max_events)):
            files.append([])
            size = 0
        if not files:
            files.append([])
        files[-1].append(line)
        size += len(line)
    return [f for f in files if f]


@pytest.mark.parametrize("seed", range(8))
def test_batched_writes_cut_files_where_line_by_line_writes_would(seed: int) -> None:
    """Rotation points must not depend on how records were batched: a retry re-cuts the same files."""
    rng = random.Random(seed)
    lines = [b"x" * rng.choice([1, 5, 30, 200]) + b"\n" for _ in range(400)]
    max_bytes = rng.choice([50, 300, 1000, 10**6])
    max_events = rng.choice([None, 1, 7, 50])
    expected = _one_at_a_time(lines, max_bytes, max_events)

    storage = _Memory()
    names = iter(range(10**6))
    files = RollingFile(storage, lambda partition, first: f"{next(names):04d}", max_bytes, max_events)  # type: ignore[arg-type]
    i = 0
    while i < len(lines):  # batches of random sizes
        n = rng.randint(1, 60)
        files.write(_records(lines[i : i + n], i, [0] * n))
        i += n
    files.close()
    got = [storage.objects[k] for k in files.keys]
    assert got == [b"".join(f) for f in expected]
    assert files.total_events == len(lines) and files.total_bytes == sum(map(len, lines))


def _records(lines: list[bytes], offset: int, timestamps: list[int]) -> Lines:
    """``lines`` as the writer receives them: records ``offset, offset + 1, ...`` of partition 0, at ``timestamps``."""
    records = [RecordMeta(offset + i, ts, None, []) for i, ts in enumerate(timestamps[: len(lines)])]
    batch = Batch(0, lines, records, lambda record: record)  # type: ignore[arg-type]
    return Lines(b"".join(lines), list(accumulate(map(len, lines))), batch, 0)


def _write_in_batches(
    lines: list[bytes], periods: list[int], rng: random.Random, **settings: Any
) -> list[tuple[str, bytes]]:
    """The lines through a RollingFile in batches of random sizes, line ``i`` in folder ``periods[i]`` of an
    hourly prefix; each file named by its first offset."""
    storage = _Memory()
    hour = 3_600_000
    files = RollingFile(storage, lambda partition, first: str(first.offset), period_ms=hour, **settings)  # type: ignore[arg-type]
    timestamps = [period * hour + 59_999 for period in periods]
    i = 0
    while i < len(lines):
        n = rng.randint(1, 300)
        files.write(_records(lines[i : i + n], i, timestamps[i : i + n]))
        i += n
    files.close()
    return [(k, storage.objects[k]) for k in files.keys]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_files_are_cut_and_named_alike_whatever_the_batches(compression: str, seed: int) -> None:
    """Rotation counts compressed bytes, yet two batchings of the same lines give the same files, byte for
    byte: what a retry needs to overwrite instead of duplicating. No file spans two folders (periods)."""
    rng = random.Random(seed)
    lines = [b'{"n":%d,"p":"%s"}\n' % (i, rng.randbytes(rng.choice([2, 20, 200])).hex().encode()) for i in range(3000)]
    periods = [i // rng.choice([400, 1000, 5000]) for i in range(len(lines))]
    settings = {
        "max_bytes": rng.choice([1024, 8192, 10**6]),
        "max_events": rng.choice([None, 700]),
        "compression": compression,
    }
    first = _write_in_batches(lines, periods, random.Random(seed * 2), **settings)
    again = _write_in_batches(lines, periods, random.Random(seed * 2 + 1), **settings)
    assert first == again
    opened = [opened_body(compression, body) for _, body in first]
    assert b"".join(opened) == b"".join(lines)
    starts = [int(k) for k, _ in first]
    for start, body in zip(starts, opened, strict=True):
        count = body.count(b"\n")
        assert len(set(periods[start : start + count])) == 1, "a file spans two folders"
        assert settings["max_events"] is None or count <= settings["max_events"]


def opened_body(compression: str, body: bytes) -> bytes:
    return opened(".jsonl.gz" if compression == "gzip" else ".jsonl.zst", body)
