# ruff: noqa: F811 (the fixtures imported from tests.test_cli are parameters of the tests)
"""One parser per connection type: the hook (and so Airflow's Test button), ``strm create data-connector`` and
the UI's connection form accept the same values and refuse the others with the same message.

The CLI runs as a subprocess against a real Airflow metadata DB; the hooks read connections the way Airflow
delivers them outside a task (``AIRFLOW_CONN_<ID>``); the form is the provider info Airflow registers.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from devstack.airflow import conn_env
from strm_provider.get_provider_info import get_provider_info
from strm_provider.hooks import StorageError, storage_hook
from strm_provider.hooks.kafka import StrmKafkaHook
from tests.exporting import connections
from tests.test_cli import SECRETS, Cli, aws_credentials, home, strm  # noqa: F401 (fixtures)

JSON_ERROR = "the connection's extra is not valid JSON: Expecting property name enclosed in double quotes at position 1"


def connection_type(conn_type: str) -> dict[str, Any]:
    """The connection type as the provider registers it with Airflow (the UI's form)."""
    return next(c for c in get_provider_info()["connection-types"] if c["connection-type"] == conn_type)


def button_message(conn: dict[str, Any]) -> str:
    """What the Test button says of data connector ``dc``, which must fail."""
    with connections(dc=conn):
        ok, message = storage_hook("dc").test_connection()
    assert not ok, message
    return message


def key_file(tmp_path: Path, content: dict[str, Any]) -> Path:
    path = tmp_path / f"creds-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(content))
    return path


AWS_KEY = {"AccessKey": {"AccessKeyId": "AKIDEXAMPLE", "SecretAccessKey": "secret-" + uuid.uuid4().hex}}
SECRETS.add(AWS_KEY["AccessKey"]["SecretAccessKey"])
S3_COMPATIBLE = {"url": "http://127.0.0.1:9", "accessKey": "ak", "secretKey": "sk-" + uuid.uuid4().hex}
SECRETS.add(S3_COMPATIBLE["secretKey"])


@pytest.mark.parametrize(
    ("kind", "bucket", "file", "options", "extra", "hint", "problem"),
    [
        (
            "s3", "Bad_Bucket", AWS_KEY, [], {}, "'BUCKET'",
            "extra 'bucket' must be an S3 bucket name (3-63 lowercase letters, digits, '.', '-'), got 'Bad_Bucket'",
        ),
        (
            "s3", "bucket-ok", AWS_KEY, ["--kms-key-id", "k1"], {"kms_key_id": "k1"}, "'--kms-key-id'",
            "extra 'kms_key_id' needs extra 'sse' set to aws:kms",
        ),
        (
            "s3", "bucket-ok", {**S3_COMPATIBLE, "api": "s3v3"}, [], {"api": "s3v3"}, "'--credentials-file'",
            "extra 'api' must be one of s3v4, s3v2, got 's3v3'",
        ),
        (
            "s3", "bucket-ok", {**S3_COMPATIBLE, "path": "sideways"}, [], {"path": "sideways"}, "'--credentials-file'",
            "extra 'path' must be one of auto, path, virtual, got 'sideways'",
        ),
    ],
    ids=["bucket-name", "kms-without-sse", "api", "addressing"],
)  # fmt: skip
def test_the_cli_and_the_test_button_refuse_a_setting_with_one_message(
    strm: Cli,
    tmp_path: Path,
    kind: str,
    bucket: str,
    file: dict[str, Any],
    options: list[str],
    extra: dict[str, Any],
    hint: str,
    problem: str,
) -> None:
    creds = key_file(tmp_path, file)
    line = strm.bad("create", "data-connector", kind, "x", bucket, f"--credentials-file={creds}", *options)
    assert line == f"Error: Invalid value for {hint}: {problem}"
    if "url" in file:
        conn = {"conn_type": "strm_s3_compatible", "host": file["url"], "login": "ak", "password": "sk"}
    else:
        conn = {"conn_type": "strm_s3", "login": "AKIDEXAMPLE", "password": "sk"}
    assert button_message({**conn, "extra": {"bucket": bucket, **extra}}) == f"data connector 'dc': {problem}"


def test_s3v2_is_one_choice_of_the_form_the_cli_and_the_hook(
    strm: Cli, tmp_path: Path, s3_compatible_target: Any
) -> None:
    """The S3-compatible hook signs with SigV2 for ``api: s3v2``; the CLI validates and stores it, the form
    offers it."""
    schema = connection_type("strm_s3_compatible")["conn-fields"]["api"]["schema"]
    assert schema == {"type": ["string", "null"], "enum": ["s3v4", "s3v2"], "default": "s3v4"}
    target, prefix = s3_compatible_target, f"s3v2-{uuid.uuid4().hex[:8]}"
    conn = target.connection(prefix)
    conn["extra"] |= {"api": "s3v2"}
    SECRETS.add(conn["password"])
    creds = {"url": target.endpoint, "accessKey": conn["login"], "secretKey": conn["password"], "api": "s3v2"}
    path = key_file(tmp_path, {**creds, "path": "path"})
    made = strm("create", "data-connector", "s3", "compat-v2", target.bucket, f"--credentials-file={path}",
                "--test-prefix", prefix)  # fmt: skip
    assert made.json() == {"ref": {"name": "compat-v2"}, "s3Bucket": {"bucketName": target.bucket}}
    with connections(dc=conn):
        hook = storage_hook("dc")
        ok, message = hook.test_connection()
        assert ok, message
        assert hook.client.meta.config.signature_version == "s3"  # botocore's name for SigV2
    assert len(target.objects(prefix)) == 2  # the validation files of the CLI and of the Test button


def test_a_bad_extra_on_a_kafka_connection_is_named_as_the_kafka_connections(strm: Cli) -> None:
    """The Kafka hook reads its extra with the Kafka settings: a refusal names the Kafka connection, never a
    data connector or storage, and the CLI says what the Test button says."""
    conn = {"conn_type": "strm_kafka", "host": "127.0.0.1:9", "extra": "{not json"}
    with connections(k=conn):
        ok, message = StrmKafkaHook("k").test_connection()
        with pytest.raises(ValueError) as err:
            StrmKafkaHook("k").client_config()
    assert not ok and message == f"Kafka connection 'k': {JSON_ERROR}"
    assert not isinstance(err.value, StorageError) and str(err.value) == message
    problem = "extra 'security_protocol' must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got 'TLS'"
    conn["extra"] = json.dumps({"security_protocol": "tls"})
    with connections(k=conn):
        ok, message = StrmKafkaHook("k").test_connection()
    assert not ok and message == f"Kafka connection 'k': {problem}"
    strm.env[conn_env("k")] = json.dumps(conn)
    line = strm.bad("create", "stream", "clicks", "--kafka-connection", "k")
    assert line == f"Error: Invalid value for '--kafka-connection': {message}"


def test_a_data_connector_whose_extra_is_not_json_says_so(strm: Cli) -> None:
    """A stored extra that is not JSON (typed in by hand) is not read as empty: ``strm get`` and the Test
    button both say what is wrong with it."""
    db = strm.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as rows:
        rows.execute(
            "INSERT INTO connection (conn_id, conn_type, is_encrypted, is_extra_encrypted, extra) "
            "VALUES ('hand-typed', 'strm_s3', 0, 0, '{not json')"
        )
    shown = strm("get", "data-connector", "hand-typed").json()
    assert shown == {"ref": {"name": "hand-typed"}, "error": f"data connector 'hand-typed': {JSON_ERROR}"}
    assert button_message({"conn_type": "strm_s3", "extra": "{not json"}) == f"data connector 'dc': {JSON_ERROR}"


def test_server_side_encryption_none_is_a_choice_of_the_form_the_cli_and_the_hook(
    strm: Cli, tmp_path: Path, s3_target: Any
) -> None:
    """The form's select has an explicit ``none`` (not an empty ``null``), the CLI's ``--sse`` the same
    choices, and ``none`` writes without asking for encryption, as a connection without ``sse`` does."""
    schema = connection_type("strm_s3")["conn-fields"]["sse"]["schema"]
    assert schema == {"type": ["string", "null"], "enum": ["none", "AES256", "aws:kms"], "default": "none"}
    creds = key_file(tmp_path, AWS_KEY)
    line = strm.bad("create", "data-connector", "s3", "x", "bucket-ok", f"--credentials-file={creds}", "--sse", "x")
    assert "'x' is not one of 'none', 'AES256', 'aws:kms'" in line
    prefix = f"sse-{uuid.uuid4().hex[:8]}"
    made = strm("create", "data-connector", "s3", "plain", s3_target.bucket,
                f"--credentials-file={aws_credentials(tmp_path, s3_target, prefix)}", "--endpoint-url",
                s3_target.endpoint, "--test-prefix", prefix, "--sse", "none")  # fmt: skip
    assert made.json() == {"ref": {"name": "plain"}, "s3Bucket": {"bucketName": s3_target.bucket}}
    conn = s3_target.connection(prefix)
    with connections(dc={**conn, "extra": {**conn["extra"], "sse": "none"}}):
        ok, message = storage_hook("dc").test_connection()
    assert ok and "encrypted with" not in message, message


def test_the_kafka_form_shows_the_port_the_hook_reads(kafka: Any) -> None:
    """A connection given as a URI holds one server's port in ``port``: the form shows it, the hook uses it."""
    behaviour = connection_type("strm_kafka")["ui-field-behaviour"]
    assert "port" not in behaviour["hidden-fields"]
    host, port = kafka.bootstrap.rsplit(":", 1)
    conn = {**kafka.connection(), "host": host, "port": int(port)}
    with connections(k=conn):
        ok, message = StrmKafkaHook("k").test_connection()
    assert ok and message.startswith(f"Connected to {host}:{port}: "), message
