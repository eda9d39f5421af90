"""Scale-out on an existing engine: CeleryExecutor, Redis as broker, PostgreSQL as metadata DB, two workers.

Everything runs as separate processes, as in a deployment: ``airflow db migrate`` on a fresh
PostgreSQL database, then the scheduler, the DAG processor, the API server (the workers' tasks talk
to its execution API) and two ``airflow celery worker`` processes with distinct names. One exporter
with ``partition_sets: 4`` runs once; its four mapped export tasks must have run on both workers,
and the bucket must hold exactly the produced events. The same run proves the observability
contract in a real deployment: each export task's XCom summary (no secrets) and the Asset event
that triggers the example downstream DAG.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devstack import free_port, wait_for_port
from devstack.postgres import Postgres
from strm_provider.naming import parse_key
from tests.exporting import data_files, events_in, exporter_dag, exporter_group, write_exporter

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).parent / "airflow")
WORKERS = ("worker-1", "worker-2")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the test's workers: both run on this host, so tell them apart."""
    import socket

    return f"{os.environ.get('STRM_TEST_WORKER', 'unknown')}@{socket.getfqdn()}"


def query(server: Postgres, dbname: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = server.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def database(postgres: Postgres) -> Iterator[str]:
    """A fresh database on the tests' own PostgreSQL for this test's Airflow, dropped afterwards."""
    name = f"strm_celery_{uuid.uuid4().hex[:10]}"
    conn = postgres.connect()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run an Airflow component; stop it and every process it started at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            for member in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    member.terminate()
            _, alive = psutil.wait_procs(family, timeout=15)
            for member in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    member.kill()
        proc.wait(10)


def wait_for(what: str, check: Any, timeout: float, logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.glob("*.log")))
    pytest.fail(f"{what} not reached after {timeout:.0f}s\n{tails}")


def test_mapped_exports_run_on_both_celery_workers(
    kafka: Any,
    s3_target: Any,
    postgres: Postgres,
    redis_url: str,
    database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the data: 8 partitions, 400 events, exported by 4 partition sets
    topic = kafka.create_topic(f"celery-{uuid.uuid4().hex[:8]}", partitions=8)
    sent = [{"seq": i, "payload": "x" * 50} for i in range(400)]
    kafka.produce(topic, sent)
    prefix = f"celery-{topic}"
    conn = s3_target.connection(prefix)
    exporters = tmp_path / "exporters"
    name = f"celery-{topic}"
    asset = f"s3://{s3_target.bucket}/{prefix}"
    write_exporter(
        exporters,
        name=name,
        stream=topic,
        data_connector="s3",
        path_prefix=prefix,
        interval="1d",  # one scheduled run now (catchup off), the next one tomorrow
        partition_sets=4,
        include_existing_events=True,
        asset_uri=asset,  # as `strm create batch-exporter` writes it
    )
    api_port = free_port()
    home = tmp_path / "airflow"
    home.mkdir()
    queue = f"strm-test-{uuid.uuid4().hex[:8]}"  # this test's queue: other Celery users of Redis never see it
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STRM_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url(database),
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": postgres.url(database, driver="db+postgresql"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.test_celery.worker_hostname",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "STRM_EXPORTERS_DIR": str(exporters),
        "STRM_DOWNSTREAM_ASSET": asset,
        "AIRFLOW_CONN_STRM_KAFKA_DEFAULT": json.dumps(kafka.connection()),
        "AIRFLOW_CONN_S3": json.dumps(conn),
        "PYTHONPATH": str(REPO),
        "NO_PROXY": "*",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    dag_id = exporter_dag(name)
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([AIRFLOW, "api-server"], env, logs / "api-server.log"))
        stack.enter_context(process([AIRFLOW, "dag-processor"], env, logs / "dag-processor.log"))
        stack.enter_context(process([AIRFLOW, "scheduler"], env, logs / "scheduler.log"))
        for worker in WORKERS:
            cmd = [AIRFLOW, "celery", "worker", "--celery-hostname", f"{worker}@%h", "--queues", queue]
            stack.enter_context(
                process([*cmd, "--skip-serve-logs"], {**env, "STRM_TEST_WORKER": worker}, logs / f"{worker}.log")
            )
        wait_for_port(api_port, timeout=120)
        run = wait_for("the exporter's scheduled run", lambda: run_state_of(postgres, database, dag_id), 200, logs)
        assert run == "success"
        tis = query(
            postgres,
            database,
            "SELECT map_index, state, hostname FROM task_instance WHERE dag_id = %s AND task_id = 'export'",
            dag_id,
        )
        downstream = wait_for(
            "the downstream DAG triggered by the Asset",
            lambda: run_state_of(postgres, database, "example_strm_downstream"),
            90,
            logs,
        )
        xcoms = query(
            postgres, database, "SELECT map_index, value FROM xcom WHERE dag_id = %s AND task_id = 'export'", dag_id
        )
        events = query(
            postgres,
            database,
            "SELECT a.uri, count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE e.source_dag_id = %s GROUP BY a.uri",
            dag_id,
        )
    assert len(query(postgres, database, "SELECT 1 FROM dag_run WHERE dag_id = %s", dag_id)) == 1

    # the four mapped exports ran, and both workers took some
    assert sorted(m for m, _, _ in tis) == [0, 1, 2, 3]
    assert {s for _, s, _ in tis} == {"success"}
    workers = {host.split("@")[0] for _, _, host in tis}
    assert workers == set(WORKERS), f"hostnames: {[h for _, _, h in tis]}"

    # exact content: every event once, files named per partition set, offsets committed
    objects = s3_target.objects(prefix)
    files = data_files(objects)
    assert len(files) == 4
    parts = sorted(p for key in files for p in parse_key(key).partitions)
    assert parts == list(range(8))
    assert sorted(e["seq"] for e in events_in(objects)) == list(range(400))
    assert kafka.committed(exporter_group(name), topic) == kafka.end_offsets(topic)

    # observability: each export's XCom is a summary without secrets; the Asset got one event per export
    for _, raw in xcoms:
        value = raw if isinstance(raw, dict) else json.loads(raw)
        assert value["events"] > 0 and value["bytes"] > 0 and value["committed"] is True
        assert all(key in files for key in value["files"])
        assert all({"partition", "start", "end", "lag_left"} <= set(p) for p in value["partitions"])
        text = json.dumps(value)
        assert conn["password"] not in text and conn["login"] not in text
    assert sum(json.loads(raw)["events"] if isinstance(raw, str) else raw["events"] for _, raw in xcoms) == 400
    assert events == [(asset, 4)]
    assert downstream == "success"


def run_state_of(server: Postgres, database: str, dag_id: str) -> str | None:
    rows = query(server, database, "SELECT state FROM dag_run WHERE dag_id = %s", dag_id)
    return rows[0][0] if rows and rows[0][0] in ("success", "failed") else None
