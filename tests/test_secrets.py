"""No secret leaks: recognizable fake secrets must appear in no log, XCom, rendered field, import error,
exception or CLI output, after a successful export and after a failing one.

Connections come from ``AIRFLOW_CONN_*`` variables, so the secrets are in no table of the metadata
database unless something copied them there: every table but ``connection`` is searched, and every
file under ``AIRFLOW_HOME`` besides the database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from strm_provider.hooks.storage import StorageError
from strm_provider.operators import KafkaToStorageOperator
from tests.exporting import connections, exporter_dag, exporter_group, run_exporter, write_exporter
from tests.faults.scenario import plan_sets, seq_events, task_spec, unique

KAFKA_CANARY = "SECRET-canary-kafka-123"
WRONG_S3_CANARY = "SECRET-canary-s3-456"
YAML_CANARY = "SECRET-canary-yaml-789"
CLI_CANARY = "SECRET-canary-cli-0AB"


def leaks(canaries: list[str], text: str) -> list[str]:
    return [c for c in canaries if c in text]


def database_text() -> str:
    """Every row of every table except ``connection`` (where a stored connection legitimately lives)."""
    db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    out = []
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            if table == "connection":
                continue
            for row in con.execute(f'select * from "{table}"'):  # table names come from sqlite_master
                out.append(repr(row))
    return "\n".join(out)


def home_files_text() -> str:
    home = Path(os.environ["AIRFLOW_HOME"])
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in home.rglob("*")
        if p.is_file() and not p.name.startswith("airflow.db")
    )


def test_no_secret_in_logs_xcom_fields_errors_or_cli(
    kafka: Any, s3_target: Any, capfd: pytest.CaptureFixture, tmp_path: Path
) -> None:
    name, prefix = unique("secrets"), unique("secrets")
    topic = kafka.create_topic(name, 2)
    kafka.produce(topic, seq_events(0, 100))
    real = s3_target.connection(prefix)
    real_secret = real["password"]
    # the real secret via credentials_json (as `aws iam create-access-key` prints it); a Kafka password
    kafka_conn = {**kafka.connection(), "login": "", "password": KAFKA_CANARY}
    creds = {"AccessKey": {"AccessKeyId": real["login"], "SecretAccessKey": real_secret, "UserName": "u"}}
    good = {"conn_type": "strm_s3", "extra": {**real["extra"], "credentials_json": json.dumps(creds)}}
    wrong = {**real, "password": WRONG_S3_CANARY}
    canaries = [KAFKA_CANARY, WRONG_S3_CANARY, real_secret, YAML_CANARY, CLI_CANARY]

    with connections(strm_kafka_default=kafka_conn, dc=good, wrong=wrong):
        path = write_exporter(
            name=name, stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True
        )
        assert run_exporter(path).state == "success"
        kafka.produce(topic, seq_events(100, 10))
        bad = write_exporter(name=f"{name}-bad", stream=topic, data_connector="wrong", path_prefix=prefix)
        assert run_exporter(bad).state == "failed"

        # the exception a failing task raises, in this process
        (work,) = plan_sets(exporter_group(name), topic)
        spec = task_spec(topic, exporter_group(name), prefix, work)
        spec["operator"]["storage_conn_id"] = "wrong"
        with pytest.raises(StorageError) as err:
            KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": "manual__secrets"})
        assert "SignatureDoesNotMatch" in str(err.value)
        assert not leaks(canaries, f"{err.value!s} {err.value!r} {err.value.__cause__!r}")

        # a broken exporter file holding a secret-looking field: its failing DAG names the field only
        broken = write_exporter(name=f"{name}-broken", stream=topic, data_connector="dc", password=YAML_CANARY)
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        shown = bag.dags[exporter_dag(f"{name}-broken")]
        errors = f"{bag.import_errors} {shown.description} {shown.doc_md} {shown.get_task('check_config').op_args}"
        assert "field 'password'" in errors, errors
        broken.unlink()

        # the CLI: a data connector whose validation fails with a wrong secret, then list and get
        cred_file = tmp_path / "s3.json"
        cred_file.write_text(json.dumps({"AccessKey": {"AccessKeyId": real["login"], "SecretAccessKey": CLI_CANARY}}))
        strm = str(Path(sys.executable).parent / "strm")
        cli = [
            subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=120)
            for cmd in (
                [
                    strm,
                    "create",
                    "data-connector",
                    "s3",
                    f"{name}-cli",
                    s3_target.bucket,
                    f"--credentials-file={cred_file}",
                    f"--endpoint-url={s3_target.endpoint}",
                    f"--test-prefix={prefix}",
                ],
                [
                    strm,
                    "create",
                    "data-connector",
                    "s3",
                    f"{name}-cli2",
                    s3_target.bucket,
                    f"--credentials-file={cred_file}",
                    f"--endpoint-url={s3_target.endpoint}",
                    "--no-validate",
                ],
                [strm, "list", "data-connectors", "-o", "json"],
                [strm, "get", "data-connector", f"{name}-cli2", "-o", "json"],
            )
        ]
        assert cli[0].returncode != 0, "validation with a wrong secret must fail"
        cli_text = "\n".join(p.stdout + p.stderr for p in cli)

    out = capfd.readouterr()
    found = {
        "CLI output": leaks(canaries, cli_text),
        "test output (task logs of dag.test)": leaks(canaries, out.out + out.err),
        "metadata DB (XCom, rendered fields, import errors, logs)": leaks(canaries, database_text()),
        "files under AIRFLOW_HOME (task logs)": leaks(canaries, home_files_text()),
        "broken exporter DAG": leaks(canaries, errors),
    }
    assert found == {k: [] for k in found}
