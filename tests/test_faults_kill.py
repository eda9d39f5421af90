"""Fault 1: the export task's process SIGKILLed at each phase, then Airflow's retry, then the next run.

The task runs in a subprocess (tests/faults/runner.py) that stops at the phase and is SIGKILLed
there, as an OOM kill or a lost worker would. The retry re-runs the same partition set (what the
plan task left in XCom); the next run plans afresh through the real DAG. Nothing may be missing
or doubled at the end, and every object present right after the kill must be complete (a Parquet file
readable whole). The same phases run for Parquet files of JSON events (``value_schema``) and of an
Avro topic decoded through the Schema Registry.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
import pytest

from strm_provider.readers import READERS
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter
from tests.faults.scenario import check_exactly_once, plan_sets, run_task, seq_events, task_spec, unique
from tests.registry_data import produce_avro

MiB = 1024 * 1024
#: phase -> (events, filler bytes per event, operator settings, runner settings)
CASES: dict[str, tuple[int, int, dict[str, Any], dict[str, Any]]] = {
    "reading": (6000, 40, {"max_file_events": 1000}, {}),
    # ~17 MiB in 5 MiB parts, files of 8 MiB: the first completes, the second is killed mid-multipart
    "mid-upload": (
        60_000,
        250,
        {"max_file_bytes": 8 * MiB},
        {"part_size": 5 * MiB, "pause_file": 1, "pause_after_bytes": 5 * MiB + 1},
    ),
    "before-commit": (6000, 40, {"max_file_events": 1000}, {}),
    "after-commit": (6000, 40, {"max_file_events": 1000}, {}),
}


#: the same phases once more with gzip files under hourly folders (default reader): partitions 0-1
#: hold 10:00's events and 2-4 11:00's, so files are cut on compressed bytes and at the hour; the
#: filler is random hex, so the mid-upload file still spans two 5 MiB parts when compressed
GZIP_HOURLY = {"compression": "gzip", "path_prefix": "{prefix}/dt={{date}}/hour={{hour}}"}
TEN = 1796378400000  # 2026-12-04T10:00:00Z


#: the same phases writing Parquet files; the files span more than one 5 MiB part mid-upload. Rows reach a
#: Parquet file in row groups (here one per file: fewer rows and value bytes than a row group holds), so the
#: file killed mid-upload is written whole into the upload stream and the SIGKILL comes between its parts.
#: snappy barely shrinks the random hex filler: ~8 MiB of values make a ~7.7 MiB file in fewer events than zstd.
#: The task stops as the second part is to be read (the first part's 5 MiB are read to decide on a multipart
#: upload): one part is uploaded, the file's last ~2.7 MiB are not.
PARQUET_CASES: dict[str, tuple[int, int, dict[str, Any], dict[str, Any]]] = {
    **{phase: CASES[phase] for phase in ("reading", "before-commit", "after-commit")},
    "mid-upload": (
        17_000,
        1000,
        {"max_file_bytes": 8 * MiB, "compression": "snappy"},
        {"part_size": 5 * MiB, "pause_file": 1, "pause_after_bytes": 5 * MiB},
    ),
}
#: the columns of :func:`seq_events` for a Parquet exporter of JSON events: a JSON Schema, and an Avro record
SEQ_JSON_SCHEMA = {
    "type": "object",
    "properties": {"seq": {"type": "integer"}, "url": {"type": "string"}, "pad": {"type": "string"}},
}
SEQ_AVRO = {
    "type": "record",
    "name": "Seq",
    "namespace": "strm.test",
    "fields": [{"name": "seq", "type": "long"}, {"name": "url", "type": "string"}, {"name": "pad", "type": "string"}],
}
PARQUET_JSON = {"file_format": "parquet", "value_schema": SEQ_JSON_SCHEMA}


#: every phase with each reader; SIGKILL mid-upload with the default reader is in the compatibility subset
EACH_READER_AND_PHASE = [
    pytest.param(reader, phase, marks=[pytest.mark.compat] if (reader, phase) == (READERS[0], "mid-upload") else [])
    for phase in CASES
    for reader in READERS
]


@pytest.mark.usefixtures("each_reader")
@pytest.mark.parametrize(("each_reader", "phase"), EACH_READER_AND_PHASE, indirect=["each_reader"])
def test_sigkill_then_retry_then_next_run(kafka: Any, s3_target: Any, phase: str) -> None:
    sigkill_then_retry_then_next_run(kafka, s3_target, phase, {})


@pytest.mark.parametrize("phase", list(CASES))
def test_sigkill_gzip_hourly(kafka: Any, s3_target: Any, phase: str) -> None:
    sigkill_then_retry_then_next_run(kafka, s3_target, phase, GZIP_HOURLY)


@pytest.mark.parametrize("phase", ["mid-upload", "before-commit"])
def test_sigkill_through_an_aws_connection(kafka: Any, s3_target: Any, phase: str) -> None:
    """The same exactly-once through the Amazon provider's ``aws`` connection, the bucket in the exporter."""
    sigkill_then_retry_then_next_run(kafka, s3_target, phase, {}, aws_connection=True)


@pytest.mark.parametrize("phase", list(PARQUET_CASES))
def test_sigkill_parquet(kafka: Any, s3_target: Any, phase: str) -> None:
    """JSON events written as Parquet files (``value_schema``: a JSON Schema, an Avro record for mid-upload)."""
    schema = SEQ_AVRO if phase == "mid-upload" else SEQ_JSON_SCHEMA
    sigkill_then_retry_then_next_run(kafka, s3_target, phase, {**PARQUET_JSON, "value_schema": schema})


@pytest.mark.parametrize("phase", ["mid-upload", "before-commit"])
def test_sigkill_avro_topic_as_parquet(kafka: Any, s3_target: Any, schema_registry: Any, phase: str) -> None:
    """Avro records framed by the Schema Registry, decoded by the exporter into Parquet files."""
    client = schema_registry.client()

    def produce(topic: str, events: list[dict[str, Any]]) -> None:
        produce_avro(kafka.bootstrap, client, topic, events, schema_str=json.dumps(SEQ_AVRO))

    conn = kafka.connection()
    registry = {**conn, "extra": {**conn["extra"], "schema_registry_url": schema_registry.url}}
    sigkill_then_retry_then_next_run(
        kafka,
        s3_target,
        phase,
        {"value_format": "avro", "file_format": "parquet"},
        produce=produce,
        kafka_conn=registry,
    )


def sigkill_then_retry_then_next_run(
    kafka: Any,
    s3_target: Any,
    phase: str,
    layout: dict[str, Any],
    *,
    aws_connection: bool = False,
    produce: Callable[[str, list[dict[str, Any]]], None] | None = None,
    kafka_conn: dict[str, Any] | None = None,
) -> None:
    parquet = layout.get("file_format") == "parquet"
    count, pad, settings, runner = (PARQUET_CASES if parquet else CASES)[phase]
    if produce is None:
        produce = lambda topic, events: kafka.produce(topic, events)  # noqa: E731
    name, prefix = unique(f"kill-{phase}"), unique("kill")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 5)
    hourly = "path_prefix" in layout
    if hourly:
        settings = {**settings, **layout, "path_prefix": layout["path_prefix"].format(prefix=prefix)}
        hours = [TEN + (3_600_000 if i % 5 >= 2 else 0) + i for i in range(count)]
        kafka.produce(topic, seq_events(0, count, pad, noise=True), timestamps=hours)
    else:
        settings = {**settings, **layout, "path_prefix": prefix}
        produce(topic, seq_events(0, count, pad, noise=parquet))  # random filler: Parquet compresses "x" away
    conn = s3_target.connection(prefix, endings=(".parquet",) if parquet else (".jsonl", ".jsonl.gz"))
    if aws_connection:
        conn = s3_target.aws_connection(prefix)
        settings = {**settings, "bucket": s3_target.bucket}
    with connections(strm_kafka_default=kafka_conn or kafka.connection(), dc=conn):
        path = write_exporter(name=name, stream=topic, data_connector="dc", include_existing_events=True, **settings)
        (work,) = plan_sets(group, topic)
        spec = task_spec(topic, group, work=work, **settings)

        assert run_task(spec, phase=phase, **runner) is None  # SIGKILLed at the phase
        after_kill = data_files(s3_target.objects(prefix))
        committed = kafka.committed(group, topic)
        if phase == "after-commit":
            assert committed == kafka.end_offsets(topic)
        else:
            planned_from = {r["partition"]: r["committed"] for r in work["ranges"]}
            assert committed == planned_from, "nothing may be committed before every file is uploaded"
        if phase == "mid-upload":
            assert len(after_kill) == 1, "the first file completed; the one being uploaded must not exist yet"
            open_parts = uploaded_parts(s3_target, prefix)
            assert len(open_parts) == 1 and all(open_parts.values()), f"killed after a part was uploaded: {open_parts}"
        if parquet:
            for key, body in after_kill.items():
                assert key.endswith(".parquet") and pq.read_table(io.BytesIO(body)).num_rows > 0, key

        # Airflow's retry: the same partition set from XCom, run to the end
        result = run_task(spec, **runner)
        assert result is not None and result["committed"]
        after_retry = data_files(s3_target.objects(prefix))
        for key, body in after_kill.items():
            assert after_retry[key] == body, f"{key} was present after the kill but not complete"
        if phase == "after-commit":  # the retry finds its plan committed: nothing to redo
            assert result["events"] == 0 and result["files"] == [] and after_retry == after_kill
        else:
            assert result["events"] == count and set(after_retry) == set(result["files"])
        assert kafka.committed(group, topic) == kafka.end_offsets(topic)

        if phase == "mid-upload":  # the file killed mid-upload, written again by the retry, spans parts
            ((killed, parts),) = open_parts.items()
            size = len(after_retry[killed])
            assert size > runner["part_size"], (killed, size)
            if parquet:  # killed between two parts of the file: some of its bytes were never sent
                assert sum(parts) < size, (killed, parts, size)
            print(f"KILLED-UPLOAD | {killed} | {size} bytes | parts uploaded at the kill: {parts}", flush=True)

        # the next scheduled run: a fresh plan through the real DAG
        produce(topic, seq_events(count, 500, pad, noise=parquet))
        assert run_exporter(path).state == "success"
    if hourly:
        assert {k.rsplit("/", 1)[0] for k in after_retry} == {f"{prefix}/dt=2026-12-04/hour={h}" for h in ("10", "11")}
        assert all(k.endswith(".jsonl.gz") for k in after_retry)
    through = ", aws connection" if aws_connection else ""
    if parquet:
        schema = "Avro" if layout.get("value_schema", {}).get("type") == "record" else "JSON Schema"
        source = "Avro topic" if layout.get("value_format") == "avro" else f"JSON events, {schema} value_schema"
        through += f", Parquet from {source}"
    scenario = f"SIGKILL {phase}{', gzip, hourly folders' if hourly else ''}{through}, retry, next run"
    check_exactly_once(scenario, kafka, s3_target, prefix, topic, group, count + 500)


def uploaded_parts(s3_target: Any, prefix: str) -> dict[str, list[int]]:
    """Key -> the sizes of the parts its multipart upload, still open under ``prefix``, has received (admin view)."""
    client = s3_target.client()
    uploads = client.list_multipart_uploads(Bucket=s3_target.bucket, Prefix=prefix).get("Uploads", [])
    return {
        u["Key"]: [
            p["Size"] for p in client.list_parts(Bucket=s3_target.bucket, Key=u["Key"], UploadId=u["UploadId"])["Parts"]
        ]
        for u in uploads
    }
