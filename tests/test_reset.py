"""``strm reset batch-exporter`` and the exporter's progress record in Airflow, on a real Kafka broker and a
real Airflow metadata database (locally, and through the REST API).

What is asserted is what a user sees: the command's lines, the group's committed offsets in Kafka, the
Variable's JSON in Airflow's database, and, end to end, the events a run exports after a reset.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from strm_provider import progress
from strm_provider.planning import PartitionRange, PartitionSet, Progress, RunPlan
from tests.exporting import connections, events_in, exporter_dag, exporter_group, run_exporter, write_exporter
from tests.test_cli import (  # noqa: F401  (api_server, home, remote, session_strm, strm: fixtures)
    BIN,
    Cli,
    add_kafka,
    api_server,
    base_env,
    gcs_key,
    home,
    remote,
    session_strm,
    strm,
    unique,
)


# ----- what Airflow and Kafka hold ----------------------------------------------------------------
@contextlib.contextmanager
def airflow_db(env: dict[str, str]) -> Iterator[Any]:
    """A session on the metadata database the CLI of ``env`` uses (Airflow's own models read and write it)."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with Session(engine) as session:
            yield session
            session.commit()
    finally:
        engine.dispose()


def key_of(name: str) -> str:
    return progress.variable_key(exporter_group(name))


def variable(env: dict[str, str], name: str) -> str | None:
    """The raw value of exporter ``name``'s progress Variable, decrypted as Airflow does."""
    from airflow.models import Variable
    from sqlalchemy import select

    with airflow_db(env) as session:
        row = session.scalar(select(Variable).where(Variable.key == key_of(name)))
        return None if row is None else row.val


def record(env: dict[str, str], name: str) -> dict[str, Any] | None:
    raw = variable(env, name)
    return None if raw is None else json.loads(raw)


def write_variable(env: dict[str, str], name: str, value: str) -> None:
    from airflow.models import Variable

    with airflow_db(env) as session:
        Variable.set(key_of(name), value, description="written by the test", session=session)


def delete_variable(env: dict[str, str], name: str) -> None:
    from airflow.models import Variable

    with airflow_db(env) as session:
        Variable.delete(key_of(name), session=session)


def group(name: str) -> str:
    return exporter_group(name)


def committed_with_metadata(kafka: Any, name: str, stream: str) -> dict[int, tuple[int, str] | None]:
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group(name), enable_auto_commit=False)
    try:
        held = {p: consumer.committed(TopicPartition(stream, p), metadata=True) for p in kafka.partitions(stream)}
        return {p: None if h is None else (h.offset, h.metadata) for p, h in held.items()}
    finally:
        consumer.close()


def commit(kafka: Any, name: str, stream: str, offsets: dict[int, int], metadata: str = "by hand") -> None:
    """Move the group's offsets outside the exporter (what a user's consumer or a tool could do)."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group(name), enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(stream, p): OffsetAndMetadata(o, metadata, -1) for p, o in offsets.items()})
    finally:
        consumer.close()


def forget(kafka: Any, name: str, stream: str, partitions: list[int]) -> None:
    """Delete the group's committed offsets of ``partitions``, as Kafka does once their retention expires."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        errors = admin.delete_group_offsets(group(name), [TopicPartition(stream, p) for p in partitions])
        assert all(e.__name__ == "NoError" for e in errors.values()), errors
    finally:
        admin.close()
    assert all(kafka.committed(group(name), stream)[p] is None for p in partitions)


def topic_id(kafka: Any, stream: str) -> str | None:
    from strm_provider.offsets import read_stream

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id="strm-test-topic-id", enable_auto_commit=False)
    try:
        return read_stream(consumer, stream).topic_id
    finally:
        consumer.close()


def table(out: str) -> list[list[str]]:
    """The command's table rows (header included), cells split where two spaces or more separate them."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("PARTITION"))
    end = next(i for i, line in enumerate(lines) if line.startswith("TOTAL"))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start : end + 1]]


def add_run(env: dict[str, str], dag_id: str, state: str) -> str:
    """A DAG run of the exporter, in ``state``, as the scheduler records one."""
    from airflow.models import DagRun

    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    with airflow_db(env) as session:
        session.add(
            DagRun(dag_id=dag_id, run_id=run_id, run_type="manual", state=state, run_after=now, logical_date=now)
        )
    return run_id


def set_run_state(env: dict[str, str], dag_id: str, run_id: str, state: str) -> None:
    from airflow.models import DagRun
    from sqlalchemy import select

    with airflow_db(env) as session:
        session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).state = state


def airflow(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(BIN / "airflow"), *args], check=True, capture_output=True, env=env, timeout=300)


# ----- set-up -------------------------------------------------------------------------------------
@pytest.fixture
def gcs(strm: Cli, tmp_path: Path, kafka: Any) -> Cli:  # noqa: F811
    """``strm`` on a fresh local DB with the Kafka connection and a data connector (``gcs``, never written to:
    exporters are created with --no-validate and nothing here exports)."""
    add_kafka(strm, kafka)
    strm("create", "data-connector", "gcs", "gcs", "strm-reset-test", f"--credentials-file={gcs_key(tmp_path)}",
         "--no-validate")  # fmt: skip
    return strm


def create(cli: Cli, stream: str, name: str, *extra: str) -> None:
    cli("create", "batch-exporter", stream, "--data-connector", "gcs", "--name", name, "--no-validate", *extra)


# ----- create and delete keep the record ----------------------------------------------------------
def test_create_records_the_pinned_start_and_delete_removes_the_record(gcs: Cli, kafka: Any) -> None:
    stream = kafka.create_topic(unique("rec"), partitions=3)
    kafka.produce(stream, [{"n": i} for i in range(7)])
    name = unique("pinned")
    create(gcs, stream, name)
    assert kafka.committed(group(name), stream) == {0: 3, 1: 2, 2: 2}
    assert record(gcs.env, name) == {
        "stream": stream,
        "topic_id": topic_id(kafka, stream),
        "committed": {"0": 3, "1": 2, "2": 2},
        "plan": None,
        "recovered": None,
    }
    assert record(gcs.env, name)["topic_id"], "Kafka 4 gives every topic an id"

    # a fresh group that starts at the earliest offsets pins nothing: a record left behind by an earlier
    # exporter of that name is removed, or the first run would take it for offsets Kafka forgot
    fresh = unique("fresh")
    write_variable(gcs.env, fresh, json.dumps({"stream": stream, "committed": {"0": 1, "1": 1, "2": 1}}))
    create(gcs, stream, fresh, "--include-existing-events")
    assert kafka.committed(group(fresh), stream) == {0: None, 1: None, 2: None}
    assert variable(gcs.env, fresh) is None

    # only the exporters that had a record are named on the second line
    assert gcs("delete", "batch-exporter", name, fresh).out == (
        f"Batch Exporters have been deleted: {name}, {fresh}\nProgress record in Airflow has been deleted: {name}\n"
    )
    assert variable(gcs.env, name) is None
    assert gcs("list", "batch-exporters", "-o", "json").json() == {"batchExporters": []}


# ----- reset: the dry run -------------------------------------------------------------------------
def test_dry_run_shows_each_partition_and_the_effect_and_changes_nothing(gcs: Cli, kafka: Any) -> None:
    stream = kafka.create_topic(unique("dry"), partitions=3)
    kafka.produce(stream, [{"n": i} for i in range(30)])  # 10 per partition
    name = unique("dry")
    create(gcs, stream, name)  # pinned at 10, 10, 10
    kafka.produce(stream, [{"n": i} for i in range(30, 36)])  # ends 12, 12, 12
    # a run planned partition 0's 10..12 and has not committed it; Kafka has forgotten partition 1
    in_flight = RunPlan(
        "scheduled__2026-12-04T10:00:00+00:00",
        [PartitionSet(0, [0, 1, 2], [PartitionRange(0, 10, 12, 10), PartitionRange(1, 10, 10, 10),
                                     PartitionRange(2, 10, 10, 10)])],
        {"path_prefix": "", "compression": "none"},
    )  # fmt: skip
    write_variable(gcs.env, name, progress.dumps(Progress(stream, {0: 10, 1: 10, 2: 10}, None, in_flight)))
    commit(kafka, name, stream, {0: 10}, "strm:plan:12")
    forget(kafka, name, stream, [1])
    kafka_before, record_before = committed_with_metadata(kafka, name, stream), variable(gcs.env, name)

    out = gcs("reset", "batch-exporter", name, "--to-offsets", "0:12,2:3").out
    lines = out.splitlines()
    assert lines[0] == (
        f"Batch exporter '{name}' (stream {stream}, Kafka group {exporter_group(name)}), to the offsets given "
        "(other partitions keep theirs):"
    )
    assert lines[1].startswith(
        "Airflow's record: plan in flight of run scheduled__2026-12-04T10:00:00+00:00 (2 events), not seen "
        "committed in Kafka"
    )
    assert table(out) == [
        ["PARTITION", "KAFKA", "AIRFLOW", "TARGET", "EFFECT"],
        ["0", "10", "10, in flight to 12", "12", "2 skipped"],
        ["1", "forgotten", "10", "10", "no change"],
        ["2", "10", "10", "3", "7 exported again"],
        ["TOTAL", "7 exported again, 2 skipped"],
    ]
    assert lines[-1] == "Dry run: nothing was changed. Add --execute to apply."

    earliest = gcs("reset", "batch-exporter", name, "--to-earliest", "-o", "json").json()
    assert earliest == {
        "ref": {"name": name},
        "streamRef": {"name": stream},
        "to": {"earliest": True},
        "planInFlight": {"runId": "scheduled__2026-12-04T10:00:00+00:00", "events": 2},
        "partitions": [
            {"partition": 0, "kafka": 10, "airflow": 10, "inFlightTo": 12, "target": 0, "exportedAgain": 10,
             "skipped": 0},
            {"partition": 1, "kafka": None, "airflow": 10, "target": 0, "exportedAgain": 10, "skipped": 0},
            {"partition": 2, "kafka": 10, "airflow": 10, "target": 0, "exportedAgain": 10, "skipped": 0},
        ],
        "total": {"exportedAgain": 30, "skipped": 0},
        "executed": False,
    }  # fmt: skip
    assert committed_with_metadata(kafka, name, stream) == kafka_before
    assert variable(gcs.env, name) == record_before


def recreate(kafka: Any, stream: str, partitions: int) -> None:
    """Delete the topic and create it again under the same name (a new topic id, offsets from 0)."""
    from kafka.errors import TopicAlreadyExistsError

    kafka.admin.delete_topics([stream])
    deadline = time.monotonic() + 60
    while True:
        try:
            kafka.create_topic(stream, partitions=partitions)
            return
        except TopicAlreadyExistsError:  # the deletion completes in the background
            assert time.monotonic() < deadline, f"topic {stream} still exists"
            time.sleep(0.5)


def test_a_recreated_stream_is_named_and_the_reset_records_its_new_id(gcs: Cli, kafka: Any) -> None:
    stream = kafka.create_topic(unique("again"), partitions=2)
    kafka.produce(stream, [{"n": i} for i in range(20)])
    name = unique("again")
    create(gcs, stream, name)  # pinned at 10, 10
    old_id = record(gcs.env, name)["topic_id"]
    recreate(kafka, stream, 2)
    kafka.produce(stream, [{"n": i} for i in range(4)])  # ends 2, 2
    new_id = topic_id(kafka, stream)
    assert new_id and new_id != old_id

    out = gcs("reset", "batch-exporter", name, "--to-earliest").out
    assert out.splitlines()[2] == (
        f"The stream was deleted and recreated since (topic id {old_id}, now {new_id}): the offsets Airflow "
        "recorded are the old topic's"
    )
    assert [row[2:4] for row in table(out)[1:3]] == [["10", "0"], ["10", "0"]]
    assert gcs("reset", "batch-exporter", name, "--to-earliest", "-o", "json").json()["streamRecreated"] is True
    gcs("reset", "batch-exporter", name, "--to-earliest", "--execute")
    assert record(gcs.env, name) == {
        "stream": stream,
        "topic_id": new_id,
        "committed": {"0": 0, "1": 0},
        "plan": None,
        "recovered": None,
    }
    assert kafka.committed(group(name), stream) == {0: 0, 1: 0}
    assert "recreated" not in gcs("reset", "batch-exporter", name, "--to-earliest").out


# ----- reset --execute, to each target ------------------------------------------------------------
def test_execute_moves_kafka_and_the_record_to_each_target(gcs: Cli, kafka: Any) -> None:
    stream = kafka.create_topic(unique("exe"), partitions=2)
    # an hour ago (older events would fall to the broker's retention), whole seconds; partition 0 holds the
    # events of seconds 0, 2, 4, 6, 8 from then, partition 1 those of seconds 1, 3, 5, 7, 9
    t0 = datetime.fromtimestamp(int(time.time()) - 3600, UTC)
    millis = int(t0.timestamp()) * 1000
    kafka.produce(stream, [{"n": i} for i in range(10)], timestamps=[millis + 1000 * i for i in range(10)])
    name = unique("exe")
    create(gcs, stream, name, "--include-existing-events")  # a fresh group: nothing pinned, no record
    assert variable(gcs.env, name) is None
    tid = topic_id(kafka, stream)

    def execute(*target: str) -> str:
        return gcs("reset", "batch-exporter", name, *target, "--execute").out

    def assert_at(offsets: dict[int, int]) -> None:
        assert committed_with_metadata(kafka, name, stream) == {p: (o, "strm:reset") for p, o in offsets.items()}
        assert record(gcs.env, name) == {
            "stream": stream,
            "topic_id": tid,
            "committed": {str(p): o for p, o in offsets.items()},
            "plan": None,
            "recovered": None,
        }

    out = execute("--to-latest")
    assert table(out)[1:] == [
        ["0", "forgotten", "none", "5", "no offset to compare"],
        ["1", "forgotten", "none", "5", "no offset to compare"],
        ["TOTAL", "0 exported again, 0 skipped"],
    ]
    assert out.splitlines()[-1] == (
        f"Reset: Kafka group {exporter_group(name)} and Airflow's record now hold the targets; the next run exports "
        "from there."
    )
    assert_at({0: 5, 1: 5})

    out = execute("--to-earliest")
    assert table(out)[-1] == ["TOTAL", "10 exported again, 0 skipped"], out
    assert_at({0: 0, 1: 0})

    # the first event at or after second 5: offset 3 of partition 0 (second 6), offset 2 of partition 1 (second 5);
    # a time without an offset is UTC
    second_5 = t0 + timedelta(seconds=5)
    out = execute("--to-datetime", second_5.strftime("%Y-%m-%dT%H:%M:%S"))
    assert f"to the first events at or after {second_5.isoformat()}:" in out.splitlines()[0]
    assert table(out)[1:] == [
        ["0", "0", "0", "3", "3 skipped"],
        ["1", "0", "0", "2", "2 skipped"],
        ["TOTAL", "0 exported again, 5 skipped"],
    ]
    assert_at({0: 3, 1: 2})

    assert table(execute("--to-offsets", "1:4"))[1:] == [
        ["0", "3", "3", "3", "no change"],
        ["1", "2", "2", "4", "2 skipped"],
        ["TOTAL", "0 exported again, 2 skipped"],
    ]
    assert_at({0: 3, 1: 4})

    # the same instant with an offset; then a time after every event: each partition goes to its end
    at_plus_one = second_5.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert table(execute("--to-datetime", at_plus_one))[-1] == ["TOTAL", "2 exported again, 0 skipped"]
    assert_at({0: 3, 1: 2})
    later = (t0 + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    json_out = gcs("reset", "batch-exporter", name, "--to-datetime", later, "--execute", "-o", "json")
    assert json_out.json()["executed"] is True
    assert json_out.json()["to"] == {"datetime": (t0 + timedelta(seconds=10)).isoformat()}
    assert [p["target"] for p in json_out.json()["partitions"]] == [5, 5]
    assert_at({0: 5, 1: 5})


def test_bad_targets_get_one_line_naming_the_option(gcs: Cli, kafka: Any) -> None:
    stream = kafka.create_topic(unique("bad"), partitions=2)
    kafka.produce(stream, [{"n": i} for i in range(8)])  # ends 4, 4
    name = unique("bad")
    create(gcs, stream, name)
    kafka_before, record_before = kafka.committed(group(name), stream), variable(gcs.env, name)
    reset = ["reset", "batch-exporter", name]
    cases = {
        ("--to-offsets", "0=3"): "Invalid value for '--to-offsets': expected PARTITION:OFFSET pairs separated by "
        "commas, such as 0:120,1:98; got '0=3'",
        ("--to-offsets", "0:1,x:2"): "got 'x:2'",
        ("--to-offsets", "0:1,0:2"): "Invalid value for '--to-offsets': partition 0 is given twice",
        ("--to-offsets", "7:0"): "Invalid value for '--to-offsets': partition 7 does not exist in the stream "
        "(its partitions: 0-1)",
        ("--to-offsets", "1:5", "--execute"): "Invalid value for '--to-offsets': partition 1: expected an offset "
        "from its earliest 0 to its end 4, got 5",
        ("--to-datetime", "yesterday"): "Invalid value for '--to-datetime': expected an ISO 8601 time such as "
        "2026-12-04T10:00:00Z, got 'yesterday'",
        (): "expected exactly one of --to-earliest, --to-latest, --to-datetime, --to-offsets",
        ("--to-earliest", "--to-latest"): "expected exactly one of --to-earliest, --to-latest, --to-datetime, "
        "--to-offsets, got 2",
    }
    for args, expected in cases.items():
        assert expected in gcs.bad(*reset, *args), args
    assert "Invalid value for 'NAME': no batch exporter named 'nope'" in gcs.bad(
        "reset", "batch-exporter", "nope", "--to-earliest"
    )
    # a partition not given must have an offset to keep
    forget(kafka, name, stream, [1])
    delete_variable(gcs.env, name)
    line = gcs.bad(*reset, "--to-offsets", "0:1", "--execute")
    assert "Invalid value for '--to-offsets': partition 1 is not given and has no offset to keep" in line
    assert kafka.committed(group(name), stream) == {**kafka_before, 1: None}
    assert record_before and variable(gcs.env, name) is None


# ----- reset waits for runs -----------------------------------------------------------------------
def test_reset_is_refused_while_a_run_is_running_or_about_to(gcs: Cli, kafka: Any) -> None:
    stream = kafka.create_topic(unique("busy"), partitions=1)
    kafka.produce(stream, [{"n": i} for i in range(3)])
    name = unique("busy")
    create(gcs, stream, name)
    dag_id = exporter_dag(name)
    before = variable(gcs.env, name)
    # the DAG, as Airflow knows it (new DAGs are paused), and a run the scheduler started
    airflow(gcs.env, "dags", "reserialize")
    run_id = add_run(gcs.env, dag_id, "running")
    reset = ["reset", "batch-exporter", name, "--to-earliest", "--execute"]
    assert gcs.bad(*reset, code=1) == (
        f"Error: batch exporter '{name}' has a run running ({run_id}): wait for it to end, pausing the exporter "
        f"first so that no new run starts (`airflow dags pause {dag_id}`), then run this again"
    )
    # a queued run starts any moment while the exporter is not paused
    set_run_state(gcs.env, dag_id, run_id, "queued")
    airflow(gcs.env, "dags", "unpause", dag_id)
    assert f"has a run queued ({run_id})" in gcs.bad(*reset, code=1)
    assert kafka.committed(group(name), stream) == {0: 3} and variable(gcs.env, name) == before
    # paused, a queued run cannot start: the reset goes ahead
    airflow(gcs.env, "dags", "pause", dag_id)
    gcs(*reset)
    assert kafka.committed(group(name), stream) == {0: 0}
    assert record(gcs.env, name)["committed"] == {"0": 0}


# ----- monitor shows the record -------------------------------------------------------------------
def test_monitor_shows_the_plan_in_flight_and_a_recovery(gcs: Cli, kafka: Any) -> None:
    stream = kafka.create_topic(unique("mon"), partitions=2)
    kafka.produce(stream, [{"n": i} for i in range(10)])  # ends 5, 5
    name = unique("mon")
    create(gcs, stream, name, "--include-existing-events")
    plan = RunPlan(
        "scheduled__2026-12-04T11:00:00+00:00",
        [PartitionSet(0, [0], [PartitionRange(0, 0, 5, 0)]), PartitionSet(1, [1], [PartitionRange(1, 2, 5, 2)])],
        {},
    )
    recovered = {"run_id": "scheduled__2026-12-04T11:00:00+00:00", "at": "2026-12-04T11:00:02+00:00",
                 "partitions": {"1": 2}}  # fmt: skip
    write_variable(gcs.env, name, progress.dumps(Progress(stream, {0: 0, 1: 2}, None, plan, recovered)))
    commit(kafka, name, stream, {0: 0, 1: 2}, "strm:plan:5")

    row = gcs("monitor", "batch-exporter", name, "-o", "json").json()
    assert row["progress"] == {
        "planInFlight": {"runId": "scheduled__2026-12-04T11:00:00+00:00", "events": 8},
        "recovered": {"runId": "scheduled__2026-12-04T11:00:00+00:00", "at": "2026-12-04T11:00:02+00:00",
                      "partitions": {"1": 2}},
    }  # fmt: skip
    assert row["lag"] == {"total": 8, "partitions": {"0": 5, "1": 3}} and "progressError" not in row
    notes = gcs("monitor", "batch-exporter", name).out.splitlines()[-2:]
    assert notes == [
        f"{name}: plan in flight: run scheduled__2026-12-04T11:00:00+00:00, 8 events planned, not seen committed in "
        "Kafka yet",
        f"{name}: Kafka had forgotten the offsets of partitions 1; run scheduled__2026-12-04T11:00:00+00:00 took "
        "them from Airflow's record at 2026-12-04 11:00:02 UTC",
    ]

    # once Kafka holds every range's end the plan is done, though the record keeps it until the next run
    commit(kafka, name, stream, {0: 5, 1: 5}, "strm:run")
    assert gcs("monitor", "batch-exporter", name, "-o", "json").json()["progress"]["planInFlight"] is None

    # a record that cannot be read is one line; the rest of the row still shows
    write_variable(gcs.env, name, "not a record")
    row = gcs("monitor", "batch-exporter", name, "-o", "json").json()
    assert row["progress"] is None and row["lag"]["total"] == 0 and row["state"] == "WAITING"
    assert row["progressError"].startswith(f"Airflow Variable '{key_of(name)}': expected the exporter's progress")
    table_out = gcs("monitor", "batch-exporter", name).out
    assert f"{name}: progress record unreadable: Airflow Variable '{key_of(name)}'" in table_out
    assert table_out.splitlines()[1].split()[:2] == [name, "WAITING"]


# ----- through a remote Airflow's REST API --------------------------------------------------------
def test_remote_create_reset_monitor_and_delete_keep_the_record(
    remote: Cli,  # noqa: F811
    session_strm: Cli,  # noqa: F811
    tmp_path: Path,
    kafka: Any,
) -> None:
    """The record through ``/api/v2/variables``: created (POST), moved (PATCH), read, deleted (DELETE)."""
    kafka_id, name, connector = unique("kafka"), unique("remote-reset"), unique("gcs")
    add_kafka(session_strm, kafka, kafka_id)
    remote("create", "data-connector", "gcs", connector, "strm-reset-test", f"--credentials-file={gcs_key(tmp_path)}",
           "--no-validate")  # fmt: skip
    stream = kafka.create_topic(unique("remote"), partitions=2)
    kafka.produce(stream, [{"n": i} for i in range(6)])  # ends 3, 3
    remote("create", "batch-exporter", stream, "--data-connector", connector, "--name", name, "--kafka-connection",
           kafka_id, "--no-validate")  # fmt: skip
    assert record(session_strm.env, name)["committed"] == {"0": 3, "1": 3}

    out = remote("reset", "batch-exporter", name, "--to-offsets", "0:1", "--execute").out
    assert table(out)[1:] == [
        ["0", "3", "3", "1", "2 exported again"],
        ["1", "3", "3", "3", "no change"],
        ["TOTAL", "2 exported again, 0 skipped"],
    ]
    assert kafka.committed(group(name), stream) == {0: 1, 1: 3}
    assert record(session_strm.env, name)["committed"] == {"0": 1, "1": 3}
    delete_variable(session_strm.env, name)  # the next --execute creates it
    remote("reset", "batch-exporter", name, "--to-earliest", "--execute")
    assert record(session_strm.env, name)["committed"] == {"0": 0, "1": 0}

    row = remote("monitor", "batch-exporter", name, "-o", "json").json()
    assert row["progress"] == {"planInFlight": None, "recovered": None} and row["lag"]["total"] == 6
    assert remote("delete", "batch-exporter", name).out == (
        f"Batch Exporter has been deleted: {name}\nProgress record in Airflow has been deleted: {name}\n"
    )
    assert variable(session_strm.env, name) is None
    remote("delete", "data-connector", connector)


# ----- end to end: a refused run, a reset, a run that exports exactly what the reset said ----------
def test_a_run_refused_for_offsets_moved_by_hand_runs_again_after_a_reset(
    session_strm: Cli,  # noqa: F811
    kafka: Any,
    s3_target: Any,
) -> None:
    stream = kafka.create_topic(unique("e2e-reset"), partitions=2)
    name, prefix = unique("e2e-reset"), unique("reset")
    kafka.produce(stream, [{"n": i} for i in range(10)])  # ends 5, 5
    cli = Cli({**session_strm.env, "AIRFLOW_CONN_STRM_KAFKA_DEFAULT": json.dumps(kafka.connection())})
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=name, stream=stream, data_connector="dc", path_prefix=prefix, include_existing_events=True
        )
        try:
            assert run_exporter(path).state == "success"
            assert sorted(e["n"] for e in events_in(s3_target.objects(prefix))) == list(range(10))
            # Kafka forgets partition 1: the run's export task reported its commit, so the record puts the
            # exporter at the plan's end there, and nothing is in flight
            forget(kafka, name, stream, [1])
            out = cli("reset", "batch-exporter", name, "--to-latest").out
            assert out.splitlines()[1] == "Airflow's record: no plan in flight"
            assert table(out)[1:3] == [["0", "5", "5", "5", "no change"], ["1", "forgotten", "5", "5", "no change"]]
            assert cli("monitor", "batch-exporter", name, "-o", "json").json()["progress"]["planInFlight"] is None
            commit(kafka, name, stream, {1: 5})
            # someone moves partition 0 back by hand; more events arrive
            commit(kafka, name, stream, {0: 2})
            kafka.produce(stream, [{"n": i} for i in range(10, 14)])  # ends 7, 7
            assert run_exporter(path).state == "failed"  # the plan refuses to guess
            assert kafka.committed(group(name), stream) == {0: 2, 1: 5}

            dry = cli("reset", "batch-exporter", name, "--to-offsets", "0:5").out
            assert table(dry)[1:] == [
                ["0", "2", "0, in flight to 5", "5", "3 skipped"],
                ["1", "5", "0, in flight to 5", "5", "no change"],
                ["TOTAL", "0 exported again, 3 skipped"],
            ]
            cli("reset", "batch-exporter", name, "--to-offsets", "0:5", "--execute")
            assert run_exporter(path).state == "success"
            assert sorted(e["n"] for e in events_in(s3_target.objects(prefix))) == list(range(14))
            assert kafka.committed(group(name), stream) == {0: 7, 1: 7}
        finally:
            path.unlink(missing_ok=True)
            delete_variable(session_strm.env, name)
