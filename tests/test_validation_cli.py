# ruff: noqa: F811 (the fixtures imported from tests.test_cli are parameters of the tests)
"""``strm`` validates a data connector the way the exporter will write: the files' ending and this hour's folder.

Run as a subprocess against a real Airflow metadata DB (and, for the Test button, a real api-server), moto
with IAM enforced under the README's minimal policy, and Apache Kafka.
"""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from strm_provider.naming import is_test_object
from tests.test_cli import (  # noqa: F401 (fixtures)
    SECRETS,
    ApiServer,
    Cli,
    add_kafka,
    api_server,
    home,
    remote,
    session_strm,
    strm,
    unique,
)


def credentials(tmp_path: Path, s3_target: Any, prefix: str, endings: tuple[str, ...]) -> Path:
    """What ``aws iam create-access-key`` prints, for a user allowed to write ``<prefix>/*<ending>``."""
    user = s3_target.user_for(prefix, endings=endings)
    SECRETS.add(user["SecretAccessKey"])
    path = tmp_path / f"s3-{uuid.uuid4().hex[:6]}.json"
    key = {"UserName": user["UserName"], "AccessKeyId": user["AccessKeyId"], "Status": "Active"}
    path.write_text(json.dumps({"AccessKey": {**key, "SecretAccessKey": user["SecretAccessKey"]}}))
    return path


def create_connector(strm: Cli, tmp_path: Path, s3_target: Any, name: str, prefix: str, *endings: str) -> None:
    creds = credentials(tmp_path, s3_target, prefix, endings)
    args = ["data-connector", "s3", name, s3_target.bucket, f"--credentials-file={creds}"]
    strm("create", *args, "--endpoint-url", s3_target.endpoint, "--test-prefix", prefix)


def gzip_exporter(stream: str, connector_name: str, folder: str, name: str) -> list[str]:
    return [
        "create",
        "batch-exporter",
        stream,
        "--data-connector",
        connector_name,
        "--name",
        name,
        "--compression",
        "gzip",
        "--path-prefix",
        f"{folder}/dt={{date}}/hour={{hour}}",
        "--interval",
        "10s",
    ]


def probes(s3_target: Any, prefix: str) -> list[str]:
    return sorted(k for k in s3_target.objects(prefix) if is_test_object(k))


def test_a_gzip_exporter_is_refused_at_creation_with_the_ending_to_grant_then_created_once_granted(
    strm: Cli, tmp_path: Path, s3_target: Any, kafka: Any
) -> None:
    """The stack's trap: a key allowed ``*.jsonl`` only used to pass the check and then fail every run."""
    stream, prefix = kafka.create_topic(unique("gz"), partitions=1), unique("events")
    add_kafka(strm, kafka)
    create_connector(strm, tmp_path, s3_target, "s3", prefix, ".jsonl")
    before = probes(s3_target, prefix)
    line = strm.bad(*gzip_exporter(stream, "s3", f"{prefix}/gz", "demo-gz"), code=1)
    assert "validation of data connector 's3' failed, nothing was created" in line
    assert f"/{prefix}/gz/dt=" in line and ".jsonl.gz: AccessDenied" in line, line
    assert f"the exporter writes its files as {prefix}/gz/dt={{date}}/hour={{hour}}/*.jsonl.gz" in line, line
    assert "fix the credentials" not in line
    assert probes(s3_target, prefix) == before  # refused: nothing written
    assert not list(Path(strm.env["STRM_EXPORTERS_DIR"]).glob("*.yaml"))

    create_connector(strm, tmp_path, s3_target, "s3-gz", prefix, ".jsonl", ".jsonl.gz")
    before = probes(s3_target, prefix)
    created = strm(*gzip_exporter(stream, "s3-gz", f"{prefix}/gz", "demo-gz")).json()
    assert created["compression"] == "gzip"
    [probe] = sorted(set(probes(s3_target, prefix)) - set(before))
    hour = datetime.now(UTC).strftime("dt=%Y-%m-%d/hour=%H")
    assert probe.startswith(f"{prefix}/gz/{hour}/.strm_test_") and probe.endswith(".jsonl.gz"), probe
    assert gzip.decompress(s3_target.objects(prefix)[probe]) == b""
    saved = yaml.safe_load((Path(strm.env["STRM_EXPORTERS_DIR"]) / "demo-gz.yaml").read_text())
    assert saved["compression"] == "gzip"


def connector_args(tmp_path: Path, s3_target: Any, prefix: str) -> list[str]:
    creds = credentials(tmp_path, s3_target, prefix, (".jsonl",))
    args = ["create", "data-connector", "s3", unique("tb"), s3_target.bucket, f"--credentials-file={creds}"]
    return [*args, "--endpoint-url", s3_target.endpoint, "--test-prefix", f"{prefix}/dt={{date}}"]


def test_the_connector_validation_takes_the_exporters_ending_and_folder(
    strm: Cli, tmp_path: Path, s3_target: Any
) -> None:
    """``--test-compression`` (extra ``test_compression``, the Test button's too) gives the connector's check the
    exporters' ending; ``{date}`` in ``--test-prefix`` is today's folder."""
    prefix = unique("tb")
    args = connector_args(tmp_path, s3_target, prefix)
    line = strm.bad(*args, "--test-compression", "zstd", code=1)
    assert f"/{prefix}/dt=" in line and ".jsonl.zst: AccessDenied" in line, line
    # a misspelled bucket: the message blames the bucket and points nowhere else
    typo = [a if a != s3_target.bucket else "strmprivacy-expotr-demo" for a in args]
    line = strm.bad(*typo, code=1)
    assert "GetBucketLocation of bucket 'strmprivacy-expotr-demo' failed" in line, line
    assert line.endswith("(or skip the check with --no-validate)") and "credentials or" not in line, line
    strm(*args)  # the same with the .jsonl the policy grants
    [probe] = probes(s3_target, prefix)
    assert probe.startswith(f"{prefix}/dt={datetime.now(UTC):%Y-%m-%d}/.strm_test_") and probe.endswith(".jsonl")


def test_a_remote_airflows_test_button_validates_with_the_exporters_ending(
    remote: Cli, api_server: ApiServer, tmp_path: Path, s3_target: Any, kafka: Any, session_strm: Cli
) -> None:
    """An exporter created through a remote Airflow is checked by its Test button (POST /connections/test),
    which writes with the exporter's ending."""
    prefix = unique("tb")
    name = unique("remote-gz")
    args = connector_args(tmp_path, s3_target, prefix)
    remote(*args[:3], name, *args[4:])
    kafka_id = unique("kafka")
    add_kafka(session_strm, kafka, kafka_id)
    stream = kafka.create_topic(unique("remote-gz"), partitions=1)
    create = [*gzip_exporter(stream, name, prefix, unique("x")), "--kafka-connection", kafka_id]
    line = remote.bad(*create, code=1)
    assert ".jsonl.gz: AccessDenied" in line and "*.jsonl.gz" in line, line
    assert not [p for p in probes(s3_target, prefix) if p.endswith(".gz")]
