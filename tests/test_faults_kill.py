"""Fault 1: the export task's process SIGKILLed at each phase, then Airflow's retry, then the next run.

The task runs in a subprocess (tests/faults/runner.py) that stops at the phase and is SIGKILLed
there, as an OOM kill or a lost worker would. The retry re-runs the same partition set (what the
plan task left in XCom); the next run plans afresh through the real DAG. Nothing may be missing
or doubled at the end, and every object present right after the kill must be complete.
"""

from __future__ import annotations

from typing import Any

import pytest

from strm_provider.readers import READERS
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter
from tests.faults.scenario import check_exactly_once, plan_sets, run_task, seq_events, task_spec, unique

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


def sigkill_then_retry_then_next_run(
    kafka: Any, s3_target: Any, phase: str, layout: dict[str, Any], *, aws_connection: bool = False
) -> None:
    count, pad, settings, runner = CASES[phase]
    name, prefix = unique(f"kill-{phase}"), unique("kill")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 5)
    if layout:
        settings = {**settings, **layout, "path_prefix": layout["path_prefix"].format(prefix=prefix)}
        hours = [TEN + (3_600_000 if i % 5 >= 2 else 0) + i for i in range(count)]
        kafka.produce(topic, seq_events(0, count, pad, noise=True), timestamps=hours)
    else:
        settings = {**settings, "path_prefix": prefix}
        kafka.produce(topic, seq_events(0, count, pad))
    conn = s3_target.connection(prefix, endings=(".jsonl", ".jsonl.gz"))
    if aws_connection:
        conn = s3_target.aws_connection(prefix)
        settings = {**settings, "bucket": s3_target.bucket}
    with connections(strm_kafka_default=kafka.connection(), dc=conn):
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

        # the next scheduled run: a fresh plan through the real DAG
        kafka.produce(topic, seq_events(count, 500, pad))
        assert run_exporter(path).state == "success"
    if layout:
        assert {k.rsplit("/", 1)[0] for k in after_retry} == {f"{prefix}/dt=2026-12-04/hour={h}" for h in ("10", "11")}
        assert all(k.endswith(".jsonl.gz") for k in after_retry)
    through = ", aws connection" if aws_connection else ""
    scenario = f"SIGKILL {phase}{', gzip, hourly folders' if layout else ''}{through}, retry, next run"
    check_exactly_once(scenario, kafka, s3_target, prefix, topic, group, count + 500)
