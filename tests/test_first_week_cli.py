"""What a first week on the stack asks of ``strm`` (issue 28): why an exporter fails and since when, the last
finished run while the next one runs, a broken exporter file as a row of its own, readable logs, and every
field of an exporter's YAML in its JSON.

Runs are real: each exporter's DAG runs with ``dag.test()`` against the session's metadata database (moto S3
with IAM enforced, Apache Kafka), the next run is queued with ``airflow dags trigger`` as the scheduler queues
it, and a retry is left waiting as a worker leaves it. ``strm`` reads them locally and through the REST API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack import free_port
from strm_provider.version_compat import AIRFLOW_VERSION
from tests.exporting import (
    connections,
    data_files,
    environ,
    exporter_dag,
    exporters_folder,
    load_dag,
    opened,
    write_exporter,
)
from tests.test_cli import (  # noqa: F401  (api_server, remote, session_strm: fixtures)
    BIN,
    JWT_ISSUER,
    JWT_SECRET,
    ApiServer,
    Cli,
    add_kafka,
    api_server,
    remote,
    session_strm,
    unique,
)

REPO = Path(__file__).resolve().parent.parent
HEADERS = [
    "NAME", "STATE", "LAST RUN ENDED (UTC)", "EVENTS", "JSON BYTES", "STORED BYTES", "FILES", "DEAD LETTERS",
    "LAG", "LAG PER PARTITION", "PROBLEM",
]  # fmt: skip


def airflow(*args: str) -> None:
    subprocess.run([str(BIN / "airflow"), *args], check=True, capture_output=True, env=os.environ.copy(), timeout=300)


def rows(out: str) -> dict[str, dict[str, str]]:
    """The monitor table's rows by name, each cell under its column's heading (cells may hold spaces)."""
    header, *lines = out.splitlines()
    assert header.split("  ")[0] == "NAME" and all(h in header for h in HEADERS), header
    starts = [header.index(h) for h in HEADERS]
    found = {}
    for line in lines:
        if not line.strip():
            break  # the notes below the table
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        found[cells[0]] = dict(zip(HEADERS, cells, strict=True))
    return found


def utc(iso: str) -> str:
    """How the table prints an ISO date of the JSON."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def task_state(dag_id: str, task_id: str) -> str | None:
    """The state of ``task_id`` in the DAG's newest run, as the metadata database holds it."""
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()))
        if run is None:
            return None
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id, TaskInstance.task_id == task_id
            )
        )
        return None if ti is None else str(getattr(ti.state, "value", ti.state))


def executor_settings(server: ApiServer) -> dict[str, str]:
    """What a LocalExecutor's workers need to run tasks through the session's api-server."""
    return {
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{server.url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
        "AIRFLOW__API_AUTH__JWT_ISSUER": JWT_ISSUER,
    }


def run_with_logs(dag_id: str, server: ApiServer) -> Any:
    """Run the DAG once through the LocalExecutor, whose workers write their task logs as a deployment's do
    (``dag.test()`` alone runs the tasks in this process, leaving no log for Airflow's log reader)."""
    with environ(executor_settings(server)):
        return load_dag(dag_id, to_db=True).test(use_executor=True)


def leave_waiting_for_retry(dag_id: str, server: ApiServer) -> None:
    """Run the DAG in a process of its own until its export task failed and waits for its retry, then stop that
    process and its workers: the run stays running with the task up for retry, as a scheduler leaves it
    for the retry delay."""
    code = "import sys; from tests.exporting import load_dag; load_dag(sys.argv[1]).test(use_executor=True)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, dag_id],
        cwd=REPO,
        env={**os.environ, **executor_settings(server)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while task_state(dag_id, "export") != "up_for_retry":
            assert proc.poll() is None and time.monotonic() < deadline, "the export task never waited for a retry"
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


#: not on Airflow 3.0, whose dag.test(use_executor=True) hands its workers a DAG they look up in the serialized
#: DAG table and do not find there (a gap of this test's way of running, named in the README's support table)
COMPAT_BUT_3_0 = pytest.mark.compat if AIRFLOW_VERSION.release[:2] != (3, 0) else pytest.mark.slow


@COMPAT_BUT_3_0
def test_monitor_and_logs_read_real_runs_locally_and_remotely(
    session_strm: Cli,  # noqa: F811
    remote: Cli,  # noqa: F811
    api_server: ApiServer,  # noqa: F811
    s3_target: Any,
    kafka: Any,
) -> None:
    """What every Airflow line shows of real runs whose workers wrote their task logs: a healthy exporter with
    its last run's figures, a failed one with its failed task and error, and that task's log; from the
    metadata database and through the REST API."""
    kafka_id, prefix = unique("kafka"), unique("local")
    add_kafka(session_strm, kafka, kafka_id)
    stream = kafka.create_topic(unique("local"), partitions=2)
    kafka.produce(stream, [{"n": i} for i in range(4)])
    good, denied = unique("good"), unique("denied")
    remote = Cli({**remote.env, "STRM_EXPORTERS_DIR": str(exporters_folder())})
    common = {"stream": stream, "data_connector": "localdc", "kafka_connection": kafka_id}
    with connections(localdc=s3_target.connection(prefix)):
        good_file = write_exporter(name=good, path_prefix=prefix, include_existing_events=True, **common)
        denied_file = write_exporter(name=denied, path_prefix="elsewhere", retries=0, **common)
        try:
            t0 = datetime.now(UTC)
            assert run_with_logs(exporter_dag(good), api_server).state == "success"
            assert run_with_logs(exporter_dag(denied), api_server).state == "failed"
            stored = sum(map(len, data_files(s3_target.objects(prefix)).values()))
            for cli in (session_strm, remote):
                row = cli("monitor", "batch-exporter", good, "-o", "json").json()
                assert row["state"] == "HEALTHY" and row["lastRun"]["state"] == "success", row
                assert (row["lastRun"]["events"], row["lastRun"]["storedBytes"]) == (4, stored), row
                assert row["lastRun"]["ended"] >= t0.isoformat() and row["lag"]["total"] == 0, row
                row = cli("monitor", "batch-exporter", denied, "-o", "json").json()
                assert row["state"] == "UNHEALTHY" and row["lastRun"]["state"] == "failed", row
                assert row["failedTask"] == "export" and "AccessDenied" in row["error"], row
                assert t0 <= datetime.fromisoformat(row["failedAt"]) <= datetime.now(UTC), row
                shown = rows(cli("monitor", "batch-exporter").out)
                assert shown[good]["STATE"] == "HEALTHY" and shown[good]["EVENTS"] == "4", shown[good]
                assert shown[denied]["PROBLEM"].startswith("export (failed "), shown[denied]
                logs = cli("logs", "batch-exporter", denied).out
                assert "=== export, try 1 (failed)" in logs and "AccessDenied" in logs, logs
                assert "::group::" not in logs and "Log message source details" not in logs, logs
        finally:
            for path in (good_file, denied_file):
                path.unlink(missing_ok=True)


def test_monitor_shows_failures_with_their_time_the_last_finished_run_and_invalid_files(
    session_strm: Cli,  # noqa: F811
    remote: Cli,  # noqa: F811
    api_server: ApiServer,  # noqa: F811
    s3_target: Any,
    kafka: Any,
) -> None:
    kafka_id, prefix = unique("kafka"), unique("week")
    add_kafka(session_strm, kafka, kafka_id)
    stream = kafka.create_topic(unique("week"), partitions=2)
    kafka.produce(stream, [{"n": i} for i in range(6)])
    good, denied, typo = unique("good"), unique("denied"), unique("typo")
    remote = Cli({**remote.env, "STRM_EXPORTERS_DIR": str(exporters_folder())})
    common = {"stream": stream, "data_connector": "weekdc", "kafka_connection": kafka_id}
    # the data connector may write below ``prefix`` only: the exporter writing elsewhere is refused by S3
    with connections(weekdc=s3_target.connection(prefix, endings=(".jsonl", ".jsonl.gz"))):
        good_file = write_exporter(
            name=good, path_prefix=prefix, include_existing_events=True, compression="gzip", **common
        )
        denied_file = write_exporter(name=denied, path_prefix="elsewhere", retries=0, **common)
        typo_file = exporters_folder() / f"{typo}.yaml"
        typo_file.write_text(f"stream: {stream}\ndata_conector: weekdc\n")
        try:
            t0 = datetime.now(UTC)
            assert run_with_logs(exporter_dag(good), api_server).state == "success"
            assert run_with_logs(exporter_dag(denied), api_server).state == "failed"
            assert run_with_logs(exporter_dag(typo), api_server).state == "failed"
            files = data_files(s3_target.objects(prefix))
            stored, as_json = sum(map(len, files.values())), sum(len(opened(k, body)) for k, body in files.items())
            # the scheduler queues the next runs
            airflow("dags", "trigger", exporter_dag(good))
            airflow("dags", "trigger", exporter_dag(denied))

            for cli in (session_strm, remote):
                # good: RUNNING, with the figures of its last finished run beside it
                row = cli("monitor", "batch-exporter", good, "-o", "json").json()
                assert row["state"] == "RUNNING", row
                assert row["lastRun"]["state"] == "success" and row["lastRun"]["events"] == 6, row
                assert (row["lastRun"]["bytes"], row["lastRun"]["storedBytes"]) == (as_json, stored), row
                assert row["lastRun"]["files"] == 1 and row["lastRun"]["ended"] >= t0.isoformat(), row
                assert row["currentRun"]["state"] == "queued", row
                assert row["currentRun"]["runId"] != row["lastRun"]["runId"]
                assert "failedTask" not in row and "error" not in row
                # denied: RUNNING too, but its last run failed, and the row says why and when
                row = cli("monitor", "batch-exporter", denied, "-o", "json").json()
                assert row["state"] == "RUNNING" and row["lastRun"]["state"] == "failed", row
                assert row["failedTask"] == "export" and "AccessDenied" in row["error"], row
                assert t0 <= datetime.fromisoformat(row["failedAt"]) <= datetime.now(UTC), row
                failed_at = row["failedAt"]
                shown = rows(cli("monitor", "batch-exporter").out)
                assert shown[good]["STATE"] == "RUNNING" and shown[good]["EVENTS"] == "6", shown[good]
                assert (shown[good]["JSON BYTES"], shown[good]["STORED BYTES"]) == (f"{as_json:,}", f"{stored:,}")
                assert shown[good]["LAST RUN ENDED (UTC)"] and shown[good]["PROBLEM"] == "", shown[good]
                assert shown[denied]["STATE"] == "RUNNING", shown[denied]
                assert shown[denied]["PROBLEM"].startswith(
                    f"the last run failed: export (failed {utc(failed_at)} UTC): AccessDenied: "
                ), shown[denied]
                assert "AccessDenied" in shown[denied]["PROBLEM"]

            # denied's next run: its export task fails (planning, on the validation file) and waits for its retry
            denied_file.write_text(denied_file.read_text().replace("retries: 0", "retries: 1\nretry_delay: 1h"))
            t1 = datetime.now(UTC)
            leave_waiting_for_retry(exporter_dag(denied), api_server)
            for cli in (session_strm, remote):
                row = cli("monitor", "batch-exporter", denied, "-o", "json").json()
                assert row["state"] == "RETRYING" and row["failedTask"] == "export", row
                assert "AccessDenied" in row["error"] and datetime.fromisoformat(row["failedAt"]) >= t1, row
                assert row["lastRun"]["state"] == "failed" and row["currentRun"]["state"] == "running", row
                problem = rows(cli("monitor", "batch-exporter").out)[denied]["PROBLEM"]
                assert problem.startswith(f"export (failed {utc(row['failedAt'])} UTC): AccessDenied: "), problem
                assert "AccessDenied" in problem

                # the broken file: a row of its own, with its DAG's last run
                row = cli("monitor", "batch-exporter", typo, "-o", "json").json()
                assert row["state"] == "INVALID" and row["file"] == str(typo_file), row
                assert row["error"].startswith("field 'data_conector': unknown field, did you mean 'data_connector'?")
                assert row["lastRun"]["state"] == "failed" and row["failedTask"] == "check_config", row
                listed = cli("monitor", "batch-exporter", "-o", "json").json()["batchExporters"]
                assert row in listed
                shown = rows(cli("monitor", "batch-exporter").out)[typo]
                assert shown["STATE"] == "INVALID" and shown["PROBLEM"].startswith(
                    f"{typo_file}: field 'data_conector'"
                )
                assert shown["LAST RUN ENDED (UTC)"] == utc(row["lastRun"]["ended"]), shown
        finally:
            for path in (good_file, denied_file, typo_file):
                path.unlink(missing_ok=True)


def test_an_invalid_exporter_file_is_listed_explained_and_its_logs_are_read(
    session_strm: Cli,  # noqa: F811
    api_server: ApiServer,  # noqa: F811
) -> None:
    typo = unique("typo")
    path = exporters_folder() / f"{typo}.yaml"
    path.write_text("stream: demo\ndata_conector: dc\ncolour: red\n")
    try:
        listed = session_strm("list", "batch-exporters", "-o", "json")
        assert listed.err == ""  # the row says it: no warning besides
        invalid = [i for i in listed.json()["invalidBatchExporters"] if i["ref"] == {"name": typo}]
        error = (
            "field 'data_conector': unknown field, did you mean 'data_connector'?; field 'colour': unknown field; "
            "allowed fields: asset_uri, bucket, compression, data_connector, file_format, format, "
            "include_existing_events, interval, kafka_connection, max_file_bytes, max_file_events, name, name_style, "
            "on_invalid_event, partition_sets, path_prefix, retries, retry_delay, stream, stream_pattern, streams, "
            "value_format, value_schema"
        )
        assert invalid == [{"ref": {"name": typo}, "state": "INVALID", "file": str(path), "error": error}]
        assert all("streamRef" in item for item in listed.json()["batchExporters"])
        line = next(line for line in session_strm("list", "batch-exporters").out.splitlines() if typo in line)
        assert line.split()[:3] == [typo, "INVALID", str(path)] and line.endswith(error)

        got = session_strm("get", "batch-exporter", typo, ok=False)
        assert got.code == 1 and got.out == ""
        assert got.error_line() == f"Error: batch exporter '{typo}' is invalid: {path}: {error}"

        assert "has no run yet" in session_strm("logs", "batch-exporter", typo, ok=False).err
        assert run_with_logs(exporter_dag(typo), api_server).state == "failed"
        logs = session_strm("logs", "batch-exporter", typo).out
        assert "=== check_config, try 1 (failed)" in logs, logs
        assert f"AirflowFailException: invalid exporter file: {path}: {error}" in logs, logs
        assert logs.count("allowed fields:") == logs.count("invalid exporter file:"), logs
        # Airflow's log plumbing is not shown: its group markers, where the log was read from
        assert "::group::" not in logs and "::endgroup::" not in logs, logs
        assert "Log message source details" not in logs and "http://" not in logs and ".log\n" not in logs, logs

        # a task still running on a worker whose log server does not answer: one line says so, no traceback
        running_on_a_silent_worker(exporter_dag(typo), "check_config")
        silent = Cli({**session_strm.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())})
        read = silent("logs", "batch-exporter", typo)  # fails on a "Traceback" in its stderr
        assert "Could not read served logs" in read.out, read.out
        assert [line for line in read.err.splitlines() if "Could not read served logs: " in line], read.err
    finally:
        path.unlink(missing_ok=True)


def running_on_a_silent_worker(dag_id: str, task_id: str) -> None:
    """Mark ``task_id`` of the DAG's newest run running on 127.0.0.1, as a worker that is running it leaves it."""
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()))
        assert run is not None
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id, TaskInstance.task_id == task_id
            )
        )
        ti.state, ti.hostname = TaskInstanceState.RUNNING, "127.0.0.1"
