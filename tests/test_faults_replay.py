"""Exactly once across runs: a failed run is replayed whole, nothing is guessed, commits never rewind.

A run that uploads some files and then fails for good (retries spent: revoked credentials, a long
storage outage) leaves objects in the bucket. The next run must write them again under the same
names with the same bytes, whatever changed in between: events in a partition the failed run found
empty, a partition added, the exporter's ``partition_sets``, ``max_file_events`` or compression.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from strm_provider.progress import variable_key
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter, xcom_values
from tests.faults.scenario import check_exactly_once, plan_sets, seq_events, seqs_in, task_spec, unique
from tests.faults.seams import before_commits, on_batches


def send(kafka: Any, topic: str, events: list[dict[str, Any]], partitions: list[int]) -> None:
    """Produce ``events`` round-robin over exactly ``partitions``."""
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    try:
        for i, event in enumerate(events):
            producer.send(topic, json.dumps(event).encode(), partition=partitions[i % len(partitions)])
        producer.flush()
    finally:
        producer.close(timeout=10)


def fail_after_a_file(monkeypatch: pytest.MonkeyPatch, storage: Any, prefix: str) -> None:
    """From the second batch read on, once a data file is in the bucket, the export fails (as when the
    writer's permission is revoked mid-run): some files are uploaded, the rest of the plan is not."""

    def fail(batches: int) -> None:
        if batches < 2:
            return
        deadline = time.monotonic() + 15
        while not data_files(storage.objects(prefix)) and time.monotonic() < deadline:
            time.sleep(0.1)
        raise RuntimeError("the storage refused the writer (simulated outage)")

    on_batches(fail, monkeypatch)


def a_failed_run(monkeypatch: pytest.MonkeyPatch, storage: Any, prefix: str, path: Path) -> tuple[Any, dict]:
    """Run the exporter once, failing it for good once a file is uploaded: the run, and the data files it left."""
    fail_after_a_file(monkeypatch, storage, prefix)
    failed = run_exporter(path)
    monkeypatch.undo()
    assert failed.state == "failed"
    left = data_files(storage.objects(prefix))
    assert left, "the failed run uploaded some files"
    return failed, left


def columns(body: bytes) -> list[str]:
    """The column names of a Parquet file."""
    import io

    import pyarrow.parquet as pq

    return pq.read_schema(io.BytesIO(body)).names


def strm(*args: str) -> str:
    """The ``strm`` command as a user runs it, on this session's Airflow; its standard output."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "strm"), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"strm {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def progress_record(group: str) -> dict[str, Any] | None:
    """The exporter's record in Airflow, as the Variables page shows it."""
    from airflow.models.variable import Variable

    raw = Variable.get(variable_key(group), default_var=None)
    return None if raw is None else json.loads(raw)


#: what changes between the failed run and its replay, as the YAML's settings after the failure
CHANGES: dict[str, dict[str, Any]] = {
    "events in a partition it found empty": {},
    "a partition added": {},
    "partition_sets 1 -> 2": {"partition_sets": 2},
    "max_file_events 200 -> 150": {"max_file_events": 150},
    "gzip by size, then compression off": {"compression": "none"},
}


#: the columns of :func:`seq_events` for a Parquet exporter of JSON events
SEQ_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"seq": {"type": "integer"}, "url": {"type": "string"}, "pad": {"type": "string"}},
}
PARQUET = {"file_format": "parquet", "value_schema": SEQ_JSON_SCHEMA}
#: the same changes for a Parquet exporter, and a column added to its ``value_schema``
PARQUET_CHANGES: dict[str, dict[str, Any]] = {
    **{change: CHANGES[change] for change in list(CHANGES)[:4]},
    "zstd by size, then compression none": {"compression": "none"},
    "value_schema gains a column": {
        "value_schema": {**SEQ_JSON_SCHEMA, "properties": {**SEQ_JSON_SCHEMA["properties"], "host": {"type": "string"}}}
    },
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_failed_run_is_replayed_whole(
    kafka: Any, s3_target: Any, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The failed run's objects are written again with the same names and bytes; what arrived since waits."""
    failed_run_replayed_whole(kafka, s3_target, monkeypatch, change, CHANGES[change], {})


@pytest.mark.parametrize("change", list(PARQUET_CHANGES))
def test_a_failed_parquet_run_is_replayed_whole(
    kafka: Any, s3_target: Any, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The same for Parquet files of JSON events: the replay writes the plan's files, columns and codec."""
    failed_run_replayed_whole(kafka, s3_target, monkeypatch, change, PARQUET_CHANGES[change], PARQUET)


def failed_run_replayed_whole(
    kafka: Any,
    s3_target: Any,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
    changed: dict[str, Any],
    file_settings: dict[str, Any],
) -> None:
    name, prefix = unique("replay"), unique("replay")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 4)
    send(kafka, topic, seq_events(0, 900, noise=True), [1, 2, 3])  # none in partition 0
    settings: dict[str, Any] = {"partition_sets": 1, "max_file_events": 200, "retries": 0, **file_settings}
    if "by size" in change:
        codec = "zstd" if file_settings else "gzip"
        settings = {"partition_sets": 1, "compression": codec, "max_file_bytes": 4096, "retries": 0, **file_settings}
    common = {"name": name, "stream": topic, "data_connector": "dc", "path_prefix": prefix}
    endings = (".parquet",) if file_settings else (".jsonl", ".jsonl.gz")
    conn = s3_target.connection(prefix, endings=endings)
    with connections(strm_kafka_default=kafka.connection(), dc=conn):
        path = write_exporter(**common, include_existing_events=True, **settings)
        failed, left = a_failed_run(monkeypatch, s3_target, prefix, path)
        record = progress_record(group)
        assert record is not None and record["plan"]["run_id"] == failed.run_id
        assert sorted(r["partition"] for s in record["plan"]["sets"] for r in s["ranges"]) == [0, 1, 2, 3]

        send(kafka, topic, seq_events(900, 60), [0])
        produced = 960
        if change == "a partition added":
            kafka.add_partitions(topic, 5)
            deadline = time.monotonic() + 10
            while len(kafka.partitions(topic)) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            send(kafka, topic, seq_events(960, 40), [4])
            produced = 1000
        path = write_exporter(**common, include_existing_events=True, **{**settings, **changed})

        replay = run_exporter(path)
        assert replay.state == "success"
        planned = {(r["partition"], r["start"], r["end"]) for s in record["plan"]["sets"] for r in s["ranges"]}
        replayed = {
            (e["partition"], e["start"], e["end"]) for s in xcom_values(replay, "export") for e in s["partitions"]
        }
        assert {r for r in replayed if r[2] > r[1]} == {r for r in planned if r[2] > r[1]}, "the failed run's plan"
        objects = data_files(s3_target.objects(prefix))
        assert {key: objects[key] for key in left} == left, "the failed run's objects, rewritten byte for byte"
        assert sum(seqs_in(s3_target, prefix).values()) == 900, "what arrived since waits for the next run"
        assert progress_record(group)["plan"]["run_id"] == failed.run_id  # until a run sees it committed

        assert run_exporter(path).state == "success"
        assert progress_record(group)["plan"]["run_id"] != failed.run_id
        if "value_schema" in changed:  # the replay wrote the plan's columns; the next run writes the new ones
            newer = {k: v for k, v in data_files(s3_target.objects(prefix)).items() if k not in objects}
            assert newer and all("host" in columns(body) for body in newer.values()), sorted(newer)
            assert not any("host" in columns(body) for body in objects.values())
    scenario = f"failed {'Parquet ' if file_settings else ''}run replayed after: {change}"
    check_exactly_once(scenario, kafka, s3_target, prefix, topic, group, produced)


def test_a_recreated_topic_is_refused_until_reset(kafka: Any, s3_target: Any, capfd: pytest.CaptureFixture) -> None:
    """The topic is deleted and recreated under the same name: the run refuses, writing and committing
    nothing, until the exporter is moved with strm reset."""
    name, prefix = unique("recreated"), unique("recreated")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 2)
    kafka.produce(topic, seq_events(0, 200))
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(name=name, stream=topic, data_connector="dc", path_prefix=prefix, retries=0,
                              include_existing_events=True)  # fmt: skip
        assert run_exporter(path).state == "success"
        kafka.admin.delete_topics([topic])
        deadline = time.monotonic() + 30
        while kafka.partitions(topic) and time.monotonic() < deadline:
            time.sleep(0.2)
        while time.monotonic() < deadline:
            try:
                kafka.create_topic(topic, 2)
                break
            except Exception:  # the deletion is still going on
                time.sleep(0.5)
        kafka.reset_clients()
        kafka.produce(topic, seq_events(200, 50))
        before = data_files(s3_target.objects(prefix))
        record = progress_record(group)
        capfd.readouterr()

        run = run_exporter(path)
        assert run.state == "failed"
        assert data_files(s3_target.objects(prefix)) == before, "nothing exported"
        assert progress_record(group) == record, "nothing recorded"
        assert set(kafka.committed(group, topic).values()) <= {None, 100}, "nothing committed"
        log = capfd.readouterr()
        error = next(line for line in (log.out + log.err).splitlines() if "AirflowFailException: " in line)
        assert f"stream '{topic}' was deleted and recreated (topic id " in error, error
        assert f"`strm reset batch-exporter {name} --to-earliest`" in error, error
        strm("reset", "batch-exporter", name, "--to-earliest", "--execute")
        assert run_exporter(path).state == "success"
    check_exactly_once("topic deleted and recreated: refused, then reset", kafka, s3_target, prefix, topic, group, 250)


def test_retention_deleting_offsets_mid_run_is_counted(kafka: Any, s3_target: Any, monkeypatch) -> None:
    """Retention deletes offsets the run is about to read: the run goes on from the earliest offset and
    reports exactly how many offsets it lost, as a loss found at planning time is reported."""
    name, prefix = unique("midrun"), unique("midrun")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 1)
    kafka.produce(topic, seq_events(0, 5000, pad=4000))  # ~20 MB: several 4 MiB fetches
    deleted: list[int] = []

    def retention(batches: int) -> None:
        if batches == 1:
            kafka.admin.delete_records({TopicPartition(topic, 0): 4000})
            deleted.append(4000)

    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        (work,) = plan_sets(group, topic)
        on_batches(retention, monkeypatch)
        from strm_provider.operators import KafkaToStorageOperator

        spec = task_spec(topic, group, prefix, work)
        result = KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": "manual__midrun"})
    found = seqs_in(s3_target, prefix)
    assert deleted and result["committed"]
    lost = result["partitions"][0]["lost_to_retention"]
    assert lost > 0 and result["lost_to_retention"] == lost
    assert max(found.values()) == 1 and len(found) + lost == 5000, (len(found), lost)
    assert set(range(4000, 5000)) <= set(found), "everything past the deletion point is exported"
    print(f"FAULT-TABLE | retention deleted offsets mid-run ({lost} reported lost) | 5000 | {len(found)} | 0 | 0 |")


def test_two_runs_racing_the_final_commit(kafka: Any, s3_target: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tasks holding the same plan reach the final commit together; a late retry of it afterwards
    neither rewinds the group nor erases the newer run's plan marker."""
    import threading

    from strm_provider.operators import KafkaToStorageOperator

    name, prefix = unique("race"), unique("race")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 3)
    kafka.produce(topic, seq_events(0, 600))
    both = threading.Barrier(2, timeout=60)
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        (work,) = plan_sets(group, topic)
        spec = task_spec(topic, group, prefix, work, max_file_events=100)
        before_commits(both.wait, monkeypatch)  # each checked the group; both commit at once
        results: list[Any] = []

        def export(run_id: str) -> None:
            try:
                results.append(KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": run_id}))
            except Exception as err:
                results.append(err)

        threads = [threading.Thread(target=export, args=(f"manual__race{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        monkeypatch.undo()
        assert all(isinstance(r, dict) and r["committed"] for r in results), results
        assert kafka.committed(group, topic) == kafka.end_offsets(topic)

        kafka.produce(topic, seq_events(600, 90))
        plan_sets(group, topic)  # a newer run plans: its marker sits on the ends just committed
        marked = _metadata(kafka, group, topic)
        assert all(m.startswith("strm:plan:") for m in marked.values()), marked
        late = KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": "manual__late"})
        assert late["committed"] and late["events"] == 0
        assert _metadata(kafka, group, topic) == marked, "the late retry left the newer plan's marker alone"

        path = write_exporter(name=name, stream=topic, data_connector="dc", path_prefix=prefix)
        assert run_exporter(path).state == "success"
    check_exactly_once(
        "two runs racing the final commit, then a late retry", kafka, s3_target, prefix, topic, group, 690
    )


def _metadata(kafka: Any, group: str, topic: str) -> dict[int, str]:
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {
            p: consumer.committed(TopicPartition(topic, p), metadata=True).metadata for p in kafka.partitions(topic)
        }
    finally:
        consumer.close()
