"""S3-specific promises: the README's minimal IAM policy is enough, region discovery, credential formats,
and exactly-once across a failure between upload and commit."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from strm_provider.hooks import StorageError, storage_hook
from strm_provider.naming import is_test_object
from strm_provider.operators import KafkaToStorageOperator
from tests.exporting import connections, data_files, run_exporter, write_exporter
from tests.faults.seams import before_commits
from tests.servers.moto import MotoS3
from tests.test_export_e2e import events_of, produce_seq, unique


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
    group = f"strm-exporter-dc-{topic}"
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
    """The empty validation file is written on the first run and on a run after a failed one, not otherwise."""
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


@pytest.mark.usefixtures("each_reader")
def test_failed_run_is_replayed_not_recut(kafka: Any, s3_target: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that uploaded rotated files and then failed for good is replayed as planned by the next run:
    the same files under the same names, so newer events never shift its rotation points into duplicates."""
    topic, prefix = kafka.create_topic(unique("replay"), 2), unique("replay")
    produce_seq(kafka, topic, 0, 200)

    def always_fail() -> None:
        raise RuntimeError("injected: storage outage outlasting the retries")

    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            max_file_events=30,
            retries=0,
        )
        with monkeypatch.context() as patch:
            before_commits(always_fail, patch)
            assert run_exporter(path).state == "failed"
        failed = data_files(s3_target.objects(prefix))
        assert len(failed) == 7  # 200 events in files of 30, uploaded before the failure

        produce_seq(kafka, topic, 200, 100)  # the next run sees a larger end...
        assert run_exporter(path).state == "success"
        replayed = data_files(s3_target.objects(prefix))
        assert replayed == failed  # ...but replays the unfinished plan: same names, same content
        assert Counter(e["seq"] for e in events_of(replayed)) == Counter(range(200))

        assert run_exporter(path).state == "success"
    files = data_files(s3_target.objects(prefix))
    assert Counter(e["seq"] for e in events_of(files)) == Counter(range(300))
    assert kafka.committed(f"strm-exporter-dc-{topic}", topic) == kafka.end_offsets(topic)


def test_the_operator_on_its_own_starts_at_creation_and_always_reports_one_summary_shape(
    kafka: Any, s3_target: MotoS3
) -> None:
    """Used in a DAG of one's own, with the YAML's default: what the stream held before is not exported."""
    topic, prefix = kafka.create_topic(unique("alone"), 2), unique("alone")
    kafka.produce(topic, [{"before": i} for i in range(6)])
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):

        def export(run_id: str) -> dict[str, Any]:
            operator = KafkaToStorageOperator(
                task_id="export", stream=topic, data_connector="dc", group_id=f"strm-{topic}", path_prefix=prefix
            )
            return operator.execute({"run_id": run_id})

        first = export("manual__first")
        kafka.produce(topic, [{"after": i} for i in range(4)])
        second = export("manual__second")
    assert first == {
        "events": 0,
        "bytes": 0,
        "files": [],
        "dead_letters": 0,
        "dead_letter_files": [],
        "partitions": [],
        "committed": False,
    }
    assert set(second) == set(first) and second["events"] == 4 and second["committed"]
    events = [json.loads(line) for body in data_files(s3_target.objects(prefix)).values() for line in body.splitlines()]
    assert sorted(e["after"] for e in events) == [0, 1, 2, 3]
