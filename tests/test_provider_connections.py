"""The official providers' connections as data connectors: ``aws``, ``google_cloud_platform``, ``wasb``.

The exporter names the bucket or container (``bucket:``); the provider's own hook reads the connection
(S3Hook, GCSHook, WasbHook), and the export streams, names, validates and commits as with ours. Each
kind on its real server: moto with the README's minimal policy enforced, fake-gcs-server with the key's
token endpoint, Azurite over HTTPS.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from devstack.azurite import ACCOUNT
from devstack.gcs import CLIENT_EMAIL
from devstack.moto import minimal_policy
from strm_provider.hooks import StorageError, storage_hook
from strm_provider.naming import parse_key
from strm_provider.operators import KafkaExportPlanOperator
from tests.exporting import connections, data_files, environ, events_in, exporter_group, run_exporter, write_exporter
from tests.faults.scenario import seq_events, unique
from tests.test_identities import STATIC_AWS, role


def export_and_check(kafka: Any, target: Any, conn: dict[str, Any], prefix: str, events: int = 400) -> None:
    """Run a new exporter on ``conn`` with ``bucket:`` set: every event lands once, in files named as with
    our connection types; a record that is not JSON becomes a dead letter; the plan task's validation file
    is there; the offsets are committed."""
    topic = kafka.create_topic(unique("provider"), 3)
    kafka.produce(topic, seq_events(0, events))
    kafka.produce(topic, [b"{not json"], 1)
    with connections(strm_kafka_default=kafka.connection(), dc=conn):
        path = write_exporter(
            stream=topic, data_connector="dc", bucket=target.bucket, path_prefix=prefix,
            include_existing_events=True, max_file_events=150,
        )  # fmt: skip
        assert run_exporter(path).state == "success"
    objects = target.objects(prefix)
    files = data_files(objects)
    assert sorted(e["seq"] for e in events_in(objects)) == list(range(events))
    assert len(files) == 3 and all(parse_key(key).stream == topic for key in files)  # 3 x 150 events at most
    (dead,) = [body for key, body in objects.items() if key.startswith(f"{prefix}/_dead_letter/")]
    assert base64.b64decode(json.loads(dead)["value_b64"]) == b"{not json"
    assert [k for k in objects if k.startswith(f"{prefix}/.strm_test_")], "the plan task's validation file"
    assert kafka.committed(exporter_group(path.stem), topic) == kafka.end_offsets(topic)


@pytest.mark.parametrize("credentials", ["key", "role_arn"])
def test_aws_connection(kafka: Any, s3_target: Any, credentials: str) -> None:
    """An ``aws`` connection: its key, or a key that may only assume the connection's ``role_arn`` (the
    provider's own role assumption), writes under the minimal policy; the bucket comes from the exporter."""
    prefix = unique("aws")
    conn = s3_target.aws_connection(prefix)
    expected = "arn:aws:iam::123456789012:user/strm-export-"
    if credentials == "role_arn":
        iam = s3_target.client("iam")
        writer = role(iam, unique("aws-writer"), minimal_policy(s3_target.bucket, prefix))
        name = unique("assumer")
        iam.create_user(UserName=name)
        only_assume = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": writer}]}  # fmt: skip
        iam.put_user_policy(UserName=name, PolicyName="assume", PolicyDocument=json.dumps(only_assume))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        conn |= {"login": key["AccessKeyId"], "password": key["SecretAccessKey"]}
        # the provider assumes roles at STS's own endpoint unless the connection's service_config says
        conn["extra"] |= {"role_arn": writer, "service_config": {"sts": {"endpoint_url": s3_target.endpoint}}}
        expected = writer.replace(":iam:", ":sts:").replace(":role/", ":assumed-role/")
    with environ({"AWS_EC2_METADATA_DISABLED": "true"}, unset=STATIC_AWS), connections(dc=conn):
        assert storage_hook("dc", s3_target.bucket).identity().startswith(expected)
        export_and_check(kafka, s3_target, conn, prefix)


def test_google_cloud_connection(kafka: Any, gcs_target: Any) -> None:
    """A ``google_cloud_platform`` connection holding a key: GCSHook signs with it at the key's token
    endpoint, and reaches the emulator through STORAGE_EMULATOR_HOST, as any google-cloud client does."""
    before = len(gcs_target.tokens.issued)
    conn = gcs_target.google_connection()
    with environ(gcs_target.emulator()), connections(dc=conn):
        assert storage_hook("dc", gcs_target.bucket).identity() == CLIENT_EMAIL
        export_and_check(kafka, gcs_target, conn, unique("gcp"))
    assert len(gcs_target.tokens.issued) > before, "the key's token endpoint issued the tokens"


@pytest.mark.parametrize("auth", ["connection-string", "sas-token"])
def test_wasb_connection(kafka: Any, azure_target: Any, auth: str) -> None:
    """A ``wasb`` connection: a connection string with the account key, or an account SAS allowed only to
    create and write; WasbHook builds the client, the container comes from the exporter."""
    conn = azure_target.wasb_connection(auth)
    with connections(dc=conn):
        identity = storage_hook("dc", azure_target.bucket).identity()
    assert identity == (f"the account key of {ACCOUNT}" if auth == "connection-string" else "a shared access signature")
    prefix = unique("wasb")
    export_and_check(kafka, azure_target, conn, prefix)
    assert set(azure_target.content_types(prefix).values()) == {"application/x-ndjson"}


def plan_fails(kafka: Any, conn: dict[str, Any], bucket: str | None, env: dict[str, str] | None = None) -> str:
    """The plan task of a new exporter on ``conn``: its one-line error. Nothing is read or committed."""
    topic = kafka.create_topic(unique("refused"), 1)
    kafka.produce(topic, seq_events(0, 10))
    group = exporter_group(topic)
    plan = KafkaExportPlanOperator(
        task_id="plan", stream=topic, storage_conn_id="dc", bucket=bucket, group_id=group, path_prefix=topic,
        include_existing_events=True,
    )  # fmt: skip
    with (
        environ(env or {}),
        connections(strm_kafka_default=kafka.connection(), dc=conn),
        pytest.raises(StorageError) as err,
    ):
        plan.execute({"run_id": "manual__refused"})
    assert not any(kafka.committed(group, topic).values()), "nothing committed"
    message = str(err.value)
    assert "\n" not in message and message.startswith("data connector 'dc' ("), message
    return message


def run_fails(kafka: Any, conn: dict[str, Any], bucket: str, env: dict[str, str], capfd: Any) -> str:
    """A new exporter's first run on ``conn`` fails in its plan task: the error line its log shows. Nothing is read."""
    topic = kafka.create_topic(unique("refused"), 1)
    kafka.produce(topic, seq_events(0, 10))
    with environ(env), connections(strm_kafka_default=kafka.connection(), dc=conn):
        path = write_exporter(
            name=topic, stream=topic, data_connector="dc", bucket=bucket, path_prefix=topic,
            include_existing_events=True, retries=0,
        )  # fmt: skip
        capfd.readouterr()
        assert run_exporter(path).state == "failed"
        path.unlink()
    log = capfd.readouterr()
    line = next(line for line in (log.out + log.err).splitlines() if "StorageError: data connector 'dc'" in line)
    return line[line.index("data connector 'dc'") :]


def test_refusals_name_the_connection_its_type_and_the_cause(
    kafka: Any, s3_target: Any, gcs_target: Any, capfd: Any
) -> None:
    bucket = s3_target.bucket
    assert plan_fails(kafka, {"conn_type": "postgres", "host": "db"}, bucket) == (
        "data connector 'dc' (postgres): connection type 'postgres' is not a data connector; expected one of "
        "['aws', 'google_cloud_platform', 'strm_azure_blob', 'strm_gcs', 'strm_s3', 'strm_s3_compatible', 'wasb']"
    )
    assert plan_fails(kafka, s3_target.aws_connection("x"), None) == (
        "data connector 'dc' (aws): the exporter must name the bucket or container, as field 'bucket' "
        "(strm create batch-exporter --bucket): a aws connection holds only credentials"
    )
    assert plan_fails(kafka, s3_target.connection("x"), bucket).startswith(
        f"data connector 'dc' (strm_s3): the connection names its bucket itself; remove field 'bucket' ('{bucket}')"
    )
    # identities that get no token, found when the first run writes its validation file: an aws connection
    # without a key where the default chain finds none, and a key its token endpoint does not know
    no_key = {"conn_type": "aws", "extra": {"endpoint_url": s3_target.endpoint}}
    nobody = {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
    }
    with environ({}, unset=STATIC_AWS):
        message = run_fails(kafka, no_key, bucket, nobody, capfd)
    assert message.startswith(
        f"data connector 'dc' (aws): GetBucketLocation of bucket '{bucket}' failed: no AWS credentials"
    )
    message = run_fails(
        kafka, gcs_target.google_connection(secret="unknown"), gcs_target.bucket, gcs_target.emulator(), capfd
    )
    assert message.startswith(f"data connector 'dc' (google_cloud_platform) could not write gs://{gcs_target.bucket}/")
    assert "the service-account key was rejected by the token endpoint" in message, message
