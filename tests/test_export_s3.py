"""S3-specific promises: the README's minimal IAM policy is enough, region discovery, credential formats,
and exactly-once across a failure between upload and commit."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack.moto import MotoS3
from strm_provider.hooks import StorageError, storage_hook, storage_hook_class
from strm_provider.naming import is_test_object
from tests.exporting import (
    connections,
    data_files,
    events_in,
    exporter_group,
    run_exporter,
    write_exporter,
    xcom_values,
)
from tests.faults.seams import before_commits
from tests.fixtures import COMPAT_READER
from tests.test_export_e2e import events_of, produce_seq, unique


@pytest.mark.compat
def test_minimal_policy_allows_test_connection_and_refuses_elsewhere(s3_target: MotoS3) -> None:
    """test_connection works with only GetBucketLocation + PutObject on <prefix>/*.jsonl; nothing else."""
    with connections(dc=s3_target.connection("allowed")):
        hook = storage_hook("dc")
        ok, message = hook.test_connection()
        assert ok, message
        assert hook.client.meta.region_name == "eu-west-1"  # found with GetBucketLocation
        for key in ("elsewhere/x.jsonl", "allowed/x.json", "x.jsonl"):
            with pytest.raises(StorageError, match="AccessDenied"):
                hook.write_empty(key)
        with pytest.raises(Exception, match="AccessDenied"):  # not even a read of what it wrote
            hook.client.list_objects_v2(Bucket=s3_target.bucket, Prefix="allowed/")
    keys = list(s3_target.objects("allowed"))
    assert len(keys) == 1 and is_test_object(keys[0]) and keys[0].startswith("allowed/")
    assert s3_target.objects("elsewhere") == {}


def test_a_wrong_bucket_names_the_call_and_the_bucket(s3_target: MotoS3) -> None:
    """Under the minimal policy a misspelled bucket is refused like a missing grant: the message says so."""
    conn = s3_target.connection("allowed")
    conn["extra"]["bucket"] = "strmprivacy-expotr-demo"
    with connections(dc=conn):
        ok, message = storage_hook("dc").test_connection()
    assert not ok
    assert "GetBucketLocation of bucket 'strmprivacy-expotr-demo' failed: AccessDenied" in message
    assert "misspelled or missing bucket" in message and "s3:PutObject" not in message


def test_credentials_json_as_aws_prints_it(s3_target: MotoS3) -> None:
    """The JSON of ``aws iam create-access-key`` is accepted as-is in extra ``credentials_json``."""
    user = s3_target.user_for("creds")
    printed = {
        "AccessKey": {
            "UserName": user["UserName"],
            "AccessKeyId": user["AccessKeyId"],
            "Status": "Active",
            "SecretAccessKey": user["SecretAccessKey"],
            "CreateDate": "2021-03-26T09:56:30Z",
        }
    }
    conn = {
        "conn_type": "strm_s3",
        "extra": {
            "bucket": s3_target.bucket,
            "endpoint_url": s3_target.endpoint,
            "credentials_json": json.dumps(printed),
            "test_prefix": "creds",
        },
    }
    with connections(dc=conn):
        ok, message = storage_hook("dc").test_connection()
    assert ok, message
    assert user["SecretAccessKey"] not in message


def test_wrong_key_message_names_connection_not_secret(s3_target: MotoS3) -> None:
    with connections(dc=s3_target.connection("wrong", secret="SECRET-canary-77")):
        ok, message = storage_hook("dc").test_connection()
    assert not ok
    assert "'dc'" in message and "SignatureDoesNotMatch" in message
    assert "SECRET-canary-77" not in message


def test_missing_bucket_is_explained(s3_target: MotoS3) -> None:
    with connections(
        dc={
            **s3_target.missing_bucket_connection("nobucket"),
            "extra": {
                "bucket": "no-such-bucket-strm",
                "endpoint_url": s3_target.endpoint,
                "region": "eu-west-1",
                "test_prefix": "nobucket",
            },
        }
    ):
        ok, message = storage_hook("dc").test_connection()
    assert not ok
    assert "no-such-bucket-strm" in message


@pytest.mark.usefixtures("each_reader")
@pytest.mark.parametrize("each_reader", COMPAT_READER, indirect=True)
def test_failure_between_upload_and_commit(kafka: Any, s3_target: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upload done, commit not: Airflow's retry re-exports the same range to the same name; no duplicate."""
    topic, prefix = kafka.create_topic(unique("crash"), 4), unique("crash")
    produce_seq(kafka, topic, 0, 400)
    calls: list[int] = []

    def crash_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected: worker lost after upload, before commit")

    before_commits(crash_once, monkeypatch)
    group = exporter_group(f"dc-{topic}")
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"  # the task's retry finished the run
        assert len(calls) == 2
        once = data_files(s3_target.objects(prefix))
        assert len(once) == 1
        assert Counter(e["seq"] for e in events_of(once)) == Counter(range(400))
        assert kafka.committed(group, topic) == kafka.end_offsets(topic)

        produce_seq(kafka, topic, 400, 40)
        assert run_exporter(path).state == "success"
    files = data_files(s3_target.objects(prefix))
    assert len(files) == 2
    assert Counter(e["seq"] for e in events_of(files)) == Counter(range(440))


def test_validation_file_after_failed_run(kafka: Any, s3_target: MotoS3) -> None:
    """The validation file is written on the first run and once after a failed run, not otherwise."""
    topic, prefix = kafka.create_topic(unique("restart"), 2), unique("restart")
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
        assert run_exporter(path).state == "success"
        tests = [k for k in s3_target.objects(prefix) if is_test_object(k)]
        assert len(tests) == 1
        with connections(dc=s3_target.connection(prefix, secret="wrong")):
            produce_seq(kafka, topic, 0, 10)
            assert run_exporter(path).state == "failed"
        assert run_exporter(path).state == "success"
    objects = s3_target.objects(prefix)
    assert sum(is_test_object(k) for k in objects) == 2
    assert sorted(e["seq"] for e in events_of(data_files(objects))) == list(range(10))


def test_a_compressed_exporter_validates_as_it_writes_and_once_per_failure(
    kafka: Any, s3_target: MotoS3, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The validation file has the ending of the exporter's files and goes to this hour's folder, so a policy
    granting only ``*.jsonl`` fails a gzip exporter at its plan, before anything is read or committed. Failing
    runs validate once until a run succeeds again: a write-only identity cannot delete what they leave."""
    topic, prefix = kafka.create_topic(unique("gzcheck"), 1), unique("gzcheck")
    settings = {"compression": "gzip", "path_prefix": f"{prefix}/dt={{date}}/hour={{hour}}", "retries": 0}
    produce_seq(kafka, topic, 0, 5)
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(stream=topic, data_connector="dc", include_existing_events=True, **settings)
        capfd.readouterr()
        assert run_exporter(path).state == "failed"
        refused = f"could not write s3://{s3_target.bucket}/{prefix}/dt="
        assert refused in capfd.readouterr().out + capfd.readouterr().err
        assert s3_target.objects(prefix) == {}
        assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == {0: 0}  # the start is pinned, no more

    def failing_commit() -> None:
        raise RuntimeError("injected: the commit fails after the upload")

    def validations() -> list[str]:
        return sorted(k for k in s3_target.objects(prefix) if is_test_object(k))

    granted = s3_target.connection(prefix, endings=(".jsonl", ".jsonl.gz"))
    with connections(strm_kafka_default=kafka.connection(), dc=granted):
        assert run_exporter(path).state == "success"  # after a failed run: validated (1)
        hour = datetime.now(UTC).strftime("dt=%Y-%m-%d/hour=%H")
        [first] = validations()
        assert first.startswith(f"{prefix}/{hour}/.strm_test_") and first.endswith(".jsonl.gz"), first
        assert gzip.decompress(s3_target.objects(prefix)[first]) == b""  # a gzip stream of no events
        counts = []
        for i, fails in enumerate((True, True, True, False, False, True, True, False)):
            produce_seq(kafka, topic, 5 + 3 * i, 3)
            with monkeypatch.context() as patch:
                if fails:
                    before_commits(failing_commit, patch)
                assert run_exporter(path).state == ("failed" if fails else "success")
            counts.append(len(validations()))
        assert run_exporter(path).state == "success"  # the last run replayed a failed plan: this one catches up
    # a success, then three failed runs: the run after the first failure validates, the next ones do not;
    # after two successes, the run after the next failure validates again
    assert counts == [1, 2, 2, 2, 2, 2, 3, 3]
    assert Counter(e["seq"] for e in events_in(data_files(s3_target.objects(prefix)))) == Counter(range(5 + 3 * 8))


#: how the replay test lays files out: as the hosted product did, or gzip under hourly folders, cut on
#: compressed bytes (the cut points must not depend on how the replay's batches fall)
LAYOUTS = {
    "plain": {"max_file_events": 30},
    "gzip-hourly": {"compression": "gzip", "max_file_bytes": 1024, "path_prefix": "{prefix}/dt={{date}}/hour={{hour}}"},
}


@pytest.mark.usefixtures("each_reader")
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_failed_run_is_replayed_not_recut(
    kafka: Any, s3_target: MotoS3, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """A run that uploaded rotated files and then failed for good is replayed as planned by the next run:
    the same files under the same names, so newer events never shift its rotation points into duplicates."""
    topic, prefix = kafka.create_topic(unique("replay"), 2), unique("replay")
    settings = dict(LAYOUTS[layout])
    settings["path_prefix"] = settings.get("path_prefix", "{prefix}").format(prefix=prefix)
    hours = [1796378400000 + (i % 3) * 3_600_000 + i for i in range(300)]  # three hours, interleaved
    kafka.produce(
        topic, [{"seq": i, "payload": f"{i * 7919 % 10007:x}" * (i % 9)} for i in range(200)], timestamps=hours
    )

    def always_fail() -> None:
        raise RuntimeError("injected: storage outage outlasting the retries")

    endings = (".jsonl", ".jsonl.gz")
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix, endings=endings)):
        path = write_exporter(stream=topic, data_connector="dc", include_existing_events=True, retries=0, **settings)
        with monkeypatch.context() as patch:
            before_commits(always_fail, patch)
            assert run_exporter(path).state == "failed"
        failed = data_files(s3_target.objects(prefix))
        assert len(failed) == 7 if layout == "plain" else len(failed) > 6  # uploaded before the failure

        more = [{"seq": i, "payload": "y" * (i % 50)} for i in range(200, 300)]
        kafka.produce(topic, more, timestamps=hours[200:])  # the next run sees a larger end...
        assert run_exporter(path).state == "success"
        replayed = data_files(s3_target.objects(prefix))
        assert replayed == failed  # ...but replays the unfinished plan: same names, same content
        assert Counter(e["seq"] for e in events_in(replayed)) == Counter(range(200))

        assert run_exporter(path).state == "success"
    objects = s3_target.objects(prefix)
    assert Counter(e["seq"] for e in events_in(objects)) == Counter(range(300))
    assert all(k.endswith(".jsonl" if layout == "plain" else ".jsonl.gz") for k in data_files(objects))
    assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == kafka.end_offsets(topic)


def test_the_operator_on_its_own_starts_at_creation_and_always_reports_one_summary_shape(
    kafka: Any, s3_target: MotoS3, tmp_path: Path
) -> None:
    """Used in a DAG of one's own, with the YAML's default: what the stream held before is not exported. Its
    first run has nothing to export: it is skipped (no summary, no Asset event), as an exporter's DAG's is."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    topic, prefix = kafka.create_topic(unique("alone"), 2), unique("alone")
    kafka.produce(topic, [{"before": i} for i in range(6)])
    source = tmp_path / "own_dag.py"
    source.write_text(
        "from airflow.sdk import DAG\n"
        "from strm_provider.operators import KafkaToStorageOperator\n"
        f"with DAG(dag_id='own_{topic}', schedule=None):\n"
        f"    KafkaToStorageOperator(task_id='export', stream='{topic}', storage_conn_id='dc',"
        f" group_id='strm-{topic}', path_prefix='{prefix}')\n"
    )
    bag = DagBag(dag_folder=str(source))
    DagBundlesManager().sync_bundles_to_db()  # as the DAG processor does for a DAG in the user's folder
    sync_bag_to_db(bag, "dags-folder", None)
    dag = bag.dags[f"own_{topic}"]
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        run = dag.test()
        assert run.state == "success" and xcom_values(run, "export") == []
        kafka.produce(topic, [{"after": i} for i in range(4)])
        (second,) = xcom_values(dag.test(), "export")
    assert set(second) == {
        "events",
        "bytes",
        "stored_bytes",
        "files",
        "dead_letters",
        "dead_letter_files",
        "dead_letter_reasons",
        "partitions",
        "committed",
        "lost_to_retention",
    }
    assert second["events"] == 4 and second["committed"]
    events = [json.loads(line) for body in data_files(s3_target.objects(prefix)).values() for line in body.splitlines()]
    assert sorted(e["after"] for e in events) == [0, 1, 2, 3]


@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
def test_server_side_encryption_on_every_object(kafka: Any, s3_target: MotoS3, sse: str) -> None:
    """``sse`` on the connection: the Test button reports it as S3 confirmed it, and every object the exporter
    writes (data, dead letter, validation file) is stored with it, under the minimal policy (+ the KMS key)."""
    topic, prefix = kafka.create_topic(unique("sse"), 2), unique("sse")
    key = s3_target.client("kms").create_key()["KeyMetadata"] if sse == "aws:kms" else None
    conn = s3_target.connection(prefix, kms_key_arn=key["Arn"] if key else None)
    conn["extra"] = {**conn["extra"], "sse": sse, **({"kms_key_id": key["Arn"]} if key else {})}
    produce_seq(kafka, topic, 0, 100)
    kafka.produce(topic, [b"not json"])
    with connections(strm_kafka_default=kafka.connection(), dc=conn):
        ok, message = storage_hook("dc").test_connection()
        assert ok and f", encrypted with {sse}" + (f" (key {key['Arn']}), as " if key else ", as ") in message, message
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
    objects = s3_target.objects(prefix)
    assert len(data_files(objects)) == 1 and sum("/_dead_letter/" in k for k in objects) == 1
    assert sum(is_test_object(k) for k in objects) == 2  # the Test button's and the first run's
    s3 = s3_target.client()
    for name in objects:
        head = s3.head_object(Bucket=s3_target.bucket, Key=name)
        assert head["ServerSideEncryption"] == sse, name
        assert head.get("SSEKMSKeyId") == (key["Arn"] if key else None), name


def test_a_wrong_encryption_setting_is_named() -> None:
    from airflow.models.connection import Connection

    for extra, cause in (
        ({"sse": "AES-256"}, "extra 'sse' must be AES256 or aws:kms, got 'AES-256'"),
        ({"kms_key_id": "k1"}, "extra 'kms_key_id' needs extra 'sse' set to aws:kms"),
    ):
        conn = Connection(
            conn_id="dc", conn_type="strm_s3", login="a", password="b", extra={"bucket": "my-bucket", **extra}
        )
        ok, message = storage_hook_class("strm_s3").from_connection(conn).test_connection()
        assert not ok and message == f"data connector 'dc': {cause}"


def test_the_task_log_says_read_until_the_file_is_stored_and_names_the_data_connector(
    kafka: Any, s3_target: MotoS3, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A file's events are logged as read while its upload may still fail; "stored" comes once it is. The
    credentials line names the data connector, not an ``aws`` connection the user never made."""
    topic, prefix = kafka.create_topic(unique("logs"), 1), unique("logs")
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, retries=0)
        assert run_exporter(path).state == "success"
        produce_seq(kafka, topic, 0, 10)
        caplog.clear()
        capfd.readouterr()
        with connections(dc=s3_target.connection(prefix, secret="wrong")):
            assert run_exporter(path).state == "failed"
        failed = caplog.text + "".join(capfd.readouterr())  # our loggers, and Airflow's and providers' output
        assert "partition 0: offsets 0..10 read, 10 events" in failed, failed[-3000:]
        assert "stored " not in failed and "events written" not in failed
        assert "data connector 'dc' credentials retrieved" in failed and "AWS Connection" not in failed
        caplog.clear()
        assert run_exporter(path).state == "success"
        [key] = data_files(s3_target.objects(prefix))
        assert f"stored {key}" in caplog.text
