"""``strm`` for exporters of Schema Registry topics and Parquet files: ``create batch-exporter``'s
``--value-format``, ``--file-format``, ``--schema``, ``--compression`` and ``--name-style``, the checks it makes
before writing anything (the schema file, the Schema Registry the Kafka connection names, the validation file
with the exporter's ending), and ``monitor``'s dead letters with their reasons.

Real servers: Apache Kafka, the Schema Registry, moto S3 with IAM enforced; the run is ``dag.test()`` against
the session's metadata database.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from confluent_kafka.schema_registry import Schema

from devstack import free_port
from devstack.airflow import conn_env
from strm_provider.naming import is_test_object
from tests.exporting import connections, run_exporter, write_exporter
from tests.registry_data import ORDER_JSON_SCHEMA, produce_avro, rich_avro_records
from tests.test_cli import (  # noqa: F401  (fixtures)
    BIN,
    SECRETS,
    Cli,
    api_server,
    base_env,
    home,
    remote,
    s3_connector,
    session_strm,
    strm,
    unique,
)

#: an Avro record schema as a ``.avsc`` file holds it
ORDER_AVSC = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def with_kafka(cli: Cli, kafka: Any, registry_url: str | None = None, conn_id: str = "strm_kafka_default") -> Cli:
    """``cli`` with the Kafka connection ``conn_id`` (an environment variable, as a deployment's secrets give it),
    naming ``registry_url`` as its Schema Registry."""
    conn = kafka.connection()
    if registry_url:
        conn = {**conn, "extra": {**conn["extra"], "schema_registry_url": registry_url}}
    return Cli({**cli.env, conn_env(conn_id): json.dumps(conn)})


def test_create_writes_the_formats_into_the_yaml_and_checks_schema_registry_and_ending(
    strm: Cli,  # noqa: F811
    tmp_path: Path,
    s3_target: Any,
    kafka: Any,
    schema_registry: Any,
) -> None:
    stream = kafka.create_topic(unique("orders"), partitions=1)
    cli = with_kafka(strm, kafka, schema_registry.url)
    cli = with_kafka(cli, kafka, None, "no_registry")
    cli = with_kafka(cli, kafka, f"http://127.0.0.1:{free_port()}", "registry_down")
    prefix = unique("pq")
    s3_connector(cli, tmp_path, s3_target, "s3", prefix, endings=(".jsonl", ".parquet"))
    folder = Path(cli.env["STRM_EXPORTERS_DIR"])

    avro = cli(
        "create", "batch-exporter", stream, "--name", "avro-pq", "--path-prefix", prefix,
        "--value-format", "avro", "--file-format", "parquet", "--compression", "snappy", "--name-style", "compact",
    ).json()  # fmt: skip
    assert {k: avro[k] for k in ("valueFormat", "fileFormat", "compression", "nameStyle")} == {
        "valueFormat": "avro",
        "fileFormat": "parquet",
        "compression": "snappy",
        "nameStyle": "compact",
    }
    saved = yaml.safe_load((folder / "avro-pq.yaml").read_text())
    assert {k: saved[k] for k in ("value_format", "file_format", "compression", "name_style")} == {
        "value_format": "avro",
        "file_format": "parquet",
        "compression": "snappy",
        "name_style": "compact",
    }
    assert cli("get", "batch-exporter", "avro-pq").json() == avro
    # the validation file has the exporter's ending
    probes = [k for k in s3_target.objects(prefix) if is_test_object(k)]
    # the connector's, the exporter's
    assert sorted(k.rsplit(".", 1)[1] for k in probes) == ["jsonl", "parquet"], probes

    # JSON events as Parquet: the columns from --schema, inline in the file; a Parquet file's default zstd shows
    avsc, schema_json = tmp_path / "order.avsc", tmp_path / "order.schema.json"
    avsc.write_text(json.dumps(ORDER_AVSC, indent=2))
    schema_json.write_text(json.dumps(ORDER_JSON_SCHEMA))
    from_avsc = cli(
        "create", "batch-exporter", stream, "--name", "json-pq", "--path-prefix", prefix,
        "--file-format", "parquet", "--schema", str(avsc), "--no-validate",
    ).json()  # fmt: skip
    assert (from_avsc["valueSchema"], from_avsc["compression"]) == (ORDER_AVSC, "zstd")
    assert yaml.safe_load((folder / "json-pq.yaml").read_text())["value_schema"] == ORDER_AVSC
    plain = cli(
        "create", "batch-exporter", stream, "--name", "json-pq-plain", "--path-prefix", prefix,
        "--file-format", "parquet", "--schema", str(schema_json), "--compression", "none", "--no-validate",
    ).json()  # fmt: skip
    assert (plain["valueSchema"], plain["compression"]) == (ORDER_JSON_SCHEMA, "none")
    assert cli("get", "batch-exporter", "json-pq-plain").json() == plain  # none stays none when read back

    # or from a version of a registry subject, which must exist
    subject = unique("order-columns")
    registered = schema_registry.client().register_schema(subject, Schema(json.dumps(ORDER_AVSC), "AVRO"))
    assert registered
    by_subject = cli(
        "create", "batch-exporter", stream, "--name", "json-pq-subject", "--path-prefix", prefix,
        "--file-format", "parquet", "--schema-subject", subject, "--schema-version", "1",
    ).json()  # fmt: skip
    assert by_subject["valueSchema"] == {"subject": subject, "version": 1}
    assert yaml.safe_load((folder / "json-pq-subject.yaml").read_text())["value_schema"] == by_subject["valueSchema"]
    error = cli.bad(
        "create", "batch-exporter", stream, "--name", "no-version", "--path-prefix", prefix,
        "--file-format", "parquet", "--schema-subject", subject, "--schema-version", "2",
    )  # fmt: skip
    assert "'--schema-subject'" in error and f"{subject} version 2" in error and schema_registry.url in error, error

    table = cli("list", "batch-exporters").out.splitlines()
    assert "VALUE FORMAT" in table[0] and "FILE FORMAT" in table[0]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["avro-pq"][-4:] == ["avro", "parquet", "snappy", "value"]
    assert rows["json-pq-plain"][-4:] == ["json", "parquet", "none", "value"]

    # bad input: one line naming the option, nothing written (every refusal: test_bad_format_input_is_refused...)
    bad = ["create", "batch-exporter", stream, "--name", "bad", "--path-prefix", prefix]
    not_json = tmp_path / "order.proto"
    not_json.write_text('syntax = "proto3";\nmessage Order { string id = 1; }\n')
    error = cli.bad(*bad, "--file-format", "parquet", "--schema", str(not_json))
    assert "'--schema'" in error and f"{not_json} is not JSON" in error, error
    error = cli.bad(*bad, "--compression", "snappy")
    assert "'--compression'" in error and "jsonl files take none, gzip, zstd, got 'snappy'" in error, error

    # framed records need a Schema Registry that answers: refused in one line (exit 1), unless --no-validate
    error = cli.bad(*bad, "--value-format", "protobuf", "--kafka-connection", "no_registry", code=1)
    assert "Kafka connection 'no_registry' names no Schema Registry" in error and "--no-validate" in error, error
    error = cli.bad(*bad, "--value-format", "avro", "--kafka-connection", "registry_down", code=1)
    down = json.loads(cli.env[conn_env("registry_down")])["extra"]["schema_registry_url"]
    assert f"Schema Registry {down}: unreachable" in error and "nothing was created" in error, error
    assert not (folder / "bad.yaml").exists()
    cli(*bad, "--value-format", "avro", "--kafka-connection", "registry_down", "--no-validate")
    assert yaml.safe_load((folder / "bad.yaml").read_text())["kafka_connection"] == "registry_down"

    # a validation refused by storage names the exporter's ending: this connector may write .jsonl only
    jsonl_only = unique("jsonl")
    s3_connector(cli, tmp_path, s3_target, "s3-jsonl", jsonl_only)
    error = cli.bad(
        "create", "batch-exporter", stream, "--data-connector", "s3-jsonl", "--path-prefix", jsonl_only,
        "--value-format", "avro", "--file-format", "parquet", code=1,
    )  # fmt: skip
    assert "AccessDenied" in error and f"as {jsonl_only}/*.parquet" in error, error


def refused(*args: str) -> str:
    """What ``strm ARGS`` answers to input it refuses before it reads anything: the one-line error, run in
    this process (the subprocess runs above show the same line as the CLI prints it)."""
    from strm_provider.cli import batch_exporters  # noqa: F401  (adds the commands)
    from strm_provider.cli.app import cli

    with pytest.raises(click.UsageError) as refusal:
        cli.main(args=list(args), prog_name="strm", standalone_mode=False)
    message = refusal.value.format_message()
    assert "\n" not in message, message
    return message


def test_bad_format_input_is_refused_naming_the_option(tmp_path: Path) -> None:
    bad = ["create", "batch-exporter", "orders", "--data-connector", "s3", "--name", "bad"]
    avsc = tmp_path / "order.avsc"
    avsc.write_text(json.dumps(ORDER_AVSC))
    array = tmp_path / "array.json"
    array.write_text('{"type": "array", "items": "string"}')
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    unknown = tmp_path / "unknown.avsc"
    unknown.write_text(json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "nosuch"}]}))
    expected = {
        ("--file-format", "parquet", "--schema", str(array)): (
            "'--schema'", "expected an Avro record schema (type: record), a JSON Schema (type: object)"
        ),
        ("--file-format", "parquet", "--schema", str(listed)): ("'--schema'", f"{listed} holds a JSON list"),
        ("--file-format", "parquet", "--schema", str(tmp_path / "absent.avsc")): ("'--schema'", "cannot read"),
        ("--file-format", "parquet", "--schema", str(unknown)): ("'--schema'", "not a schema of Parquet columns"),
        ("--file-format", "parquet"): ("'--schema'", "a Parquet exporter of JSON events needs the schema"),
        ("--value-format", "avro", "--schema", str(avsc)): (
            "'--schema'", "only a Parquet exporter of JSON events takes one"
        ),
        ("--file-format", "parquet", "--schema", str(avsc), "--schema-subject", "s", "--schema-version", "1"): (
            "'--schema-subject'", "give --schema or --schema-subject, not both"
        ),
        ("--file-format", "parquet", "--schema-subject", "orders-value"): ("'--schema-version'", "required with"),
        ("--file-format", "parquet", "--schema-version", "1"): ("'--schema-version'", "goes with --schema-subject"),
        ("--file-format", "parquet", "--schema-subject", "s", "--schema-version", "0"): ("'--schema-version'", "0"),
        ("--schema-subject", "s", "--schema-version", "1"): (
            "'--schema-subject'", "only a Parquet exporter of JSON events takes one"
        ),
        ("--compression", "snappy"): ("'--compression'", "jsonl files take none, gzip, zstd, got 'snappy'"),
        ("--file-format", "parquet", "--value-format", "avro", "--compression", "lz4"): ("'--compression'", "lz4"),
        ("--name-style", "short"): ("'--name-style'", "'short' is not one of 'standard', 'compact'"),
        ("--value-format", "thrift"): ("'--value-format'", "'thrift'"),
        ("--file-format", "orc"): ("'--file-format'", "'orc'"),
    }  # fmt: skip
    for args, (option, message) in expected.items():
        error = refused(*bad, *args)
        assert option in error and message in error, (args, error)


def test_monitor_shows_the_last_runs_dead_letters_and_their_reasons(
    session_strm: Cli,  # noqa: F811
    remote: Cli,  # noqa: F811
    s3_target: Any,
    kafka: Any,
    schema_registry: Any,
) -> None:
    topic, prefix = kafka.create_topic(unique("orders"), 1), unique("dead")
    records = rich_avro_records(4, seed=7)
    produce_avro(kafka.bootstrap, schema_registry.client(), topic, records[:2], partition=0)
    kafka.produce(topic, [b'{"plain": "json"}', b"not framed", None], partitions=1, keys=[b"k"] * 3)
    produce_avro(kafka.bootstrap, schema_registry.client(), topic, records[2:], partition=0)
    conn = kafka.connection()
    kafka_conn = {**conn, "extra": {**conn["extra"], "schema_registry_url": schema_registry.url}}
    name = unique("dl")
    with connections(strm_kafka_default=kafka_conn, dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=name,
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            value_format="avro",
        )
        assert run_exporter(path).state == "success"
    local = Cli({**session_strm.env, conn_env("strm_kafka_default"): json.dumps(kafka_conn)})
    through_api = Cli({**remote.env, "STRM_EXPORTERS_DIR": str(path.parent)})
    try:
        for cli in (local, through_api):
            monitor_shows_dead_letters(cli, name)
    finally:
        path.unlink()

    # through the REST API, which masks the registry's password, the check says so rather than send "***"
    kafka_id, dc_id, password = unique("kafka-registry"), unique("dc"), "registry-pw-" + uuid.uuid4().hex
    SECRETS.add(password)
    extra = {**kafka_conn["extra"], "schema_registry_user": "orders", "schema_registry_password": password}
    airflow("connections", "add", kafka_id, "--conn-json", json.dumps({**kafka_conn, "extra": extra}))
    airflow("connections", "add", dc_id, "--conn-json", json.dumps(s3_target.connection(prefix)))
    try:
        error = through_api.bad(
            "create", "batch-exporter", topic, "--name", unique("masked"), "--data-connector", dc_id,
            "--path-prefix", prefix, "--value-format", "avro", "--kafka-connection", kafka_id, code=1,
        )  # fmt: skip
        assert "does not reveal the Kafka connection's schema_registry_password" in error, error
    finally:
        for conn_id in (kafka_id, dc_id):
            airflow("connections", "delete", conn_id)


def airflow(*args: str) -> None:
    """Airflow's own CLI on the session's metadata database (what the REST API serves)."""
    subprocess.run([str(BIN / "airflow"), *args], check=True, capture_output=True, env=base_env(), timeout=120)


def monitor_shows_dead_letters(cli: Cli, name: str) -> None:
    """What ``strm monitor`` shows of a run that refused 3 records (by 3 reasons) and exported 4 events."""
    shown = cli("monitor", "batch-exporter", name, "-o", "json").json()
    last = shown["lastRun"]
    assert (last["events"], last["deadLetters"]) == (4, 3), shown
    assert last["deadLetterReasons"] == {
        "magic byte 123, expected 0 (Schema Registry wire format)": 1,
        "magic byte 110, expected 0 (Schema Registry wire format)": 1,
        "null value (tombstone)": 1,
    }
    table = cli("monitor", "batch-exporter", name).out.splitlines()
    header = table[0]
    assert "DEAD LETTERS" in header
    start = header.index("DEAD LETTERS")
    assert table[1][start : header.index("LAG", start)].strip() == "3"
    [note] = [line for line in table if line.startswith(f"{name}: 3 dead letters")]
    assert re.fullmatch(
        rf"{name}: 3 dead letters in run {re.escape(last['runId'])}: "
        r"magic byte 110, expected 0 \(Schema Registry wire format\) \(1\); "
        r"magic byte 123, expected 0 \(Schema Registry wire format\) \(1\); null value \(tombstone\) \(1\)",
        note,
    ), note
