"""The in-process methods, each run in a fresh process (``python -m bench.workers METHOD SPEC``) so that
its peak memory is its own. A worker writes its figures as JSON to ``spec["result"]``.

``BENCH_PROFILE=1`` runs the worker under cProfile (``<result>.prof`` beside its result).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.backlog import AVRO_TOPIC, TOPIC
from bench.measure import settle, tree_cpu

#: kafka-python tuned as well as it goes (the ceiling of the client the export uses).
KAFKA_PYTHON_TUNED = {
    "check_crcs": False,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_poll_records": 10_000,
}


def _start(spec: dict[str, Any]) -> float:
    """Mark the start of a worker's measured work (imports and set-up excluded); return the wall clock."""
    spec["cpu0"], spec["server_cpu0"] = time.process_time(), tree_cpu(spec["servers"])
    return time.perf_counter()


def _done(spec: dict[str, Any], events_read: int, value_bytes: int, seconds: float, **more: Any) -> None:
    """Write a worker's figures; besides events, bytes and seconds, the CPU seconds since :func:`_start`
    of its own process (``work_cpu_s``, every thread) and of the broker and S3 server (``server_cpu_s``)."""
    Path(spec["result"]).write_text(
        json.dumps(
            {
                "events": events_read,
                "bytes": value_bytes,
                "seconds": seconds,
                "work_cpu_s": round(time.process_time() - spec["cpu0"], 2),
                "server_cpu_s": round(tree_cpu(spec["servers"]) - spec["server_cpu0"], 2),
                **more,
            }
        )
    )


def worker_kafka_python(spec: dict[str, Any]) -> None:
    """Raw kafka-python: partitions read one after another to their end offsets (as the export reads them),
    values counted."""
    from kafka import KafkaConsumer, TopicPartition

    start = _start(spec)
    consumer = KafkaConsumer(bootstrap_servers=spec["bootstrap"], enable_auto_commit=False, **KAFKA_PYTHON_TUNED)
    count = size = 0
    for partition in range(spec["partitions"]):
        tp = TopicPartition(TOPIC, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        end = consumer.end_offsets([tp])[tp]
        while consumer.position(tp) < end:
            for records in consumer.poll(timeout_ms=1000).values():
                count += len(records)
                size += sum(len(r.value) for r in records)
    seconds = time.perf_counter() - start
    consumer.close()
    _done(spec, count, size, seconds)


def worker_confluent(spec: dict[str, Any]) -> None:
    """Raw confluent-kafka: every partition assigned from the beginning, consumed in batches."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    start = _start(spec)
    consumer = Consumer(
        {
            "bootstrap.servers": spec["bootstrap"],
            "group.id": "bench-confluent-raw",
            "enable.auto.commit": False,
            "fetch.max.bytes": 128 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(spec["partitions"])])
    count = size = 0
    target = spec["events"]
    while count < target:
        # consume() waits until it has num_messages (or the timeout): never ask for more than remain
        for msg in consumer.consume(num_messages=min(10_000, target - count), timeout=1.0):
            if msg.error():
                continue
            count += 1
            size += len(msg.value())
    seconds = time.perf_counter() - start
    consumer.close()
    _done(spec, count, size, seconds)


def worker_export(spec: dict[str, Any]) -> None:
    """One KafkaToStorageOperator export of the whole backlog (read, upload, commit), as the DAG runs it.

    The plan comes first, untimed, as the DAG's own ``plan`` task decides it (and commits the new exporter's start):
    (c) measures the export task alone; (d) includes the plan.
    """
    from strm_provider.hooks.kafka import StrmKafkaHook
    from strm_provider.offsets import plan_stream
    from strm_provider.operators import KafkaToStorageOperator
    from strm_provider.planning import PlanRequest

    method = spec["method"]
    topic = AVRO_TOPIC if method in FORMATS else TOPIC
    common = {
        "stream": topic,
        "storage_conn_id": f"bench_s3_{method}",
        "group_id": f"strm-exporter-bench-{method}",
        "path_prefix": PREFIXES[method],
        "kafka_conn_id": KAFKA_CONNS[method],
    }
    context: Any = {"run_id": "bench"}
    consumer = StrmKafkaHook(KAFKA_CONNS[method]).consumer(common["group_id"])
    try:
        [work] = plan_stream(consumer, PlanRequest(topic, include_existing_events=True)).sets
    finally:
        consumer.close()
    partition_set = work.to_xcom()
    settle(spec["servers"])
    codec = {"compression": CODECS[method]} if method in CODECS else {}
    if method in FORMATS:
        value_format, file_format = FORMATS[method]
        codec = {"value_format": value_format, "file_format": file_format}
        codec |= {"compression": "zstd"} if file_format == "parquet" else {}
    operator = KafkaToStorageOperator(task_id="export", partition_set=partition_set, **common, **codec)
    start = _start(spec)
    summary = operator.execute(context)
    seconds = time.perf_counter() - start
    _done(spec, summary["events"], summary["bytes"] - summary["events"], seconds, files=len(summary["files"]))


def worker_s3_ingest(spec: dict[str, Any]) -> None:
    """The exports' upload alone: the JSON Lines of the backlog, from a local file, through the same hook.

    Every method that uploads shares the machine with the S3 server, whose CPU per byte received is
    the same whoever sends: this is the fastest any export into it can be.
    """
    from strm_provider.hooks import storage_hook

    storage = storage_hook("bench_s3_s3_ingest")
    storage.client  # noqa: B018  (region lookup and client set-up, outside the measured time)
    size = 0
    start = _start(spec)
    with open(spec["spool"], "rb") as src, storage.open_writer(f"{PREFIXES['s3_ingest']}/backlog.jsonl") as out:
        while chunk := src.read(8 * 1024 * 1024):
            out.write(chunk)
            size += len(chunk)
    seconds = time.perf_counter() - start
    _done(spec, spec["events"], size - spec["events"], seconds, files=1)


WORKERS = {
    "kafka_python_raw": worker_kafka_python,
    "confluent_raw": worker_confluent,
    "s3_ingest": worker_s3_ingest,
    "export_task": worker_export,
    "export_task_confluent": worker_export,
    "export_task_gzip": worker_export,
    "export_task_zstd": worker_export,
    "export_task_avro_jsonl": worker_export,
    "export_task_avro_parquet": worker_export,
}
#: the compressed exports (with the confluent reader, where the codec's cost shows most)
CODECS = {"export_task_gzip": "gzip", "export_task_zstd": "zstd"}
#: the exports of the Avro topic (bench/backlog.py produce_avro): (value_format, file_format); Parquet with zstd
FORMATS = {"export_task_avro_jsonl": ("avro", "jsonl"), "export_task_avro_parquet": ("avro", "parquet")}
#: where each export method writes in the bucket
PREFIXES = {
    "export_task": "task",
    "export_task_confluent": "task-confluent",
    "export_task_gzip": "task-gzip",
    "export_task_zstd": "task-zstd",
    "export_task_avro_jsonl": "task-avro-jsonl",
    "export_task_avro_parquet": "task-avro-parquet",
    "s3_ingest": "ingest",
}
#: the Kafka connection of each exporting method: the confluent ones choose the reader there
KAFKA_CONNS = {
    "export_task": "bench_kafka",
    "export_task_confluent": "bench_kafka_confluent",
    "export_task_gzip": "bench_kafka_confluent",
    "export_task_zstd": "bench_kafka_confluent",
    "export_task_avro_jsonl": "bench_kafka_avro",
    "export_task_avro_parquet": "bench_kafka_avro",
    "dag_run": "bench_kafka",
    "dag_run_confluent": "bench_kafka_confluent",
}


def main(argv: list[str]) -> None:
    method, spec = argv[0], json.loads(argv[1])
    if os.environ.get("BENCH_PROFILE") == "1":
        import cProfile

        cProfile.runctx("WORKERS[method](spec)", globals(), locals(), filename=spec["result"] + ".prof")
    else:
        WORKERS[method](spec)


if __name__ == "__main__":
    main(sys.argv[1:])
