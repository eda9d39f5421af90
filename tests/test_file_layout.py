"""Files the way downstream readers want them, on each storage kind's real server: compressed files,
time-partitioned folders, the record envelope; and the default layout left exactly as it was.

Each test asserts what a user sees in the bucket: object names and folders, their content type,
what Python's gzip and zstandard read out of them, and the offsets committed in Kafka.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack import StorageTarget
from strm_provider.config import ConfigError, load_exporter
from strm_provider.naming import is_test_object, parse_key
from tests.exporting import connections, data_files, exporter_group, lines_in, opened, run_exporter, write_exporter
from tests.faults.scenario import plan_sets, run_task, seq_events, task_spec, unique

KINDS = {"s3": "s3_target", "s3-compatible": "s3_compatible_target", "gcs": "gcs_target", "azure": "azure_target"}
ENDINGS = {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}
TYPES = {"gzip": "application/gzip", "zstd": "application/zstd"}
#: 10:00 UTC on a fixed day: events spread over three hours from here
START = int(datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000


@pytest.fixture(params=list(KINDS))
def storage(request: pytest.FixtureRequest) -> StorageTarget:
    return request.getfixturevalue(KINDS[request.param])


def connection(storage: StorageTarget, prefix: str, compression: str) -> dict[str, Any]:
    """The kind's least-privilege connection; on the S3 servers the README's policy for compressed names."""
    if storage.kind in ("s3", "s3-compatible"):
        return storage.connection(prefix, endings=(".jsonl", ENDINGS[compression]))  # type: ignore[call-arg]
    return storage.connection(prefix)


def records(count: int) -> dict[str, list[Any]]:
    """Numbered events over three hours, with text, binary and missing keys and repeated, binary headers."""
    keys = [[f"user-{i % 7}".encode(), b"\xff\x00" + bytes([i % 256]), None][i % 3] for i in range(count)]
    headers = [[("trace", f"t{i}".encode()), ("sig", b"\xfe\xff"), ("trace", b"again")] for i in range(count)]
    return {
        "values": [{"seq": i, "pad": f"event {i} " * 3} for i in range(count)],
        "timestamps": [START + i * 3 * HOUR // count for i in range(count)],
        "keys": keys,
        "headers": headers,
    }


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_hourly_envelopes(kafka: Any, storage: StorageTarget, compression: str) -> None:
    """gzip/zstd files under dt=/hour= folders of each event's time, each line an envelope, every event once."""
    count = 1500
    topic, prefix = kafka.create_topic(unique("layout"), 3), unique("layout")
    sent = records(count)
    produced = kafka.produce(
        topic, [*sent["values"], b"not json"], **{k: [*v, v[0]] for k, v in sent.items() if k != "values"}
    )
    template = f"{prefix}/dt={{date}}/hour={{hour}}"
    with connections(strm_kafka_default=kafka.connection(), dc=connection(storage, prefix, compression)):
        path = write_exporter(
            name=unique("layout"),
            stream=topic,
            data_connector="dc",
            path_prefix=template,
            compression=compression,
            format="envelope",
            max_file_bytes=8192,
            include_existing_events=True,
        )
        started = datetime.now(UTC)
        assert run_exporter(path).state == "success"
    objects = storage.objects(prefix)
    files = lines_in(objects)

    # names: the codec's ending, in the folder of the file's first event, every line of it in that hour
    folders: Counter[str] = Counter()
    for key, lines in files.items():
        assert key.endswith(ENDINGS[compression]) and parse_key(key) is not None, key
        folder = key.rsplit("/", 1)[0]
        folders[folder] += 1
        for line in lines:
            when = datetime.fromtimestamp(json.loads(line)["timestamp"] / 1000, tz=UTC)
            assert folder == f"{prefix}/dt={when:%Y-%m-%d}/hour={when:%H}", (key, when)
    assert sorted(folders) == [f"{prefix}/dt=2026-12-04/hour={h}" for h in ("10", "11", "12")]
    assert all(n > 1 for n in folders.values()), f"files rotate within an hour at 8 KiB compressed: {folders}"
    stored = data_files(objects)
    assert all(len(stored[k]) <= 8192 + 1024 for k in stored), "a file closes once another chunk may not fit"
    assert sum(map(len, stored.values())) * 2 < sum(len(b"\n".join(lines)) for lines in files.values())

    # envelopes: the record's coordinates, key, headers and the event as produced
    where = dict(enumerate(produced))
    envelopes = [json.loads(line) for lines in files.values() for line in lines]
    assert Counter(e["value"]["seq"] for e in envelopes) == Counter(range(count))
    for e in envelopes:
        seq = e["value"]["seq"]
        assert (e["partition"], e["offset"]) == where[seq] and e["timestamp"] == sent["timestamps"][seq]
        assert e["value"] == sent["values"][seq]
        key = sent["keys"][seq]
        if key is None or key.startswith(b"user-"):
            assert e["key"] == (key.decode() if key else None) and "key_b64" not in e
        else:
            assert e["key_b64"] == base64.b64encode(key).decode() and "key" not in e
        assert e["headers"] == {"trace": [f"t{seq}", "again"]}
        assert e["headers_b64"] == {"sig": base64.b64encode(b"\xfe\xff").decode()}
        assert list(e) == [
            "partition",
            "offset",
            "timestamp",
            "key" if "key" in e else "key_b64",
            "headers",
            "headers_b64",
            "value",
        ]

    # the validation file as the files are written: in the folder of the hour it was written, compressed alike
    # (a stream of no events); the dead letter under the prefix's fixed part, compressed alike
    (test,) = [k for k in objects if is_test_object(k)]
    hours = {f"{prefix}/dt={when:%Y-%m-%d}/hour={when:%H}" for when in (started, datetime.now(UTC))}
    assert test.rsplit("/", 1)[0] in hours and test.endswith(ENDINGS[compression]), test
    assert opened(test, objects[test]) == b""
    dead = [k for k in objects if "/_dead_letter/" in k]
    assert len(dead) == 1 and dead[0].startswith(f"{prefix}/_dead_letter/") and dead[0].endswith(ENDINGS[compression])
    (letter,) = opened(dead[0], objects[dead[0]]).splitlines()
    assert base64.b64decode(json.loads(letter)["value_b64"]) == b"not json"

    # a plain download says what it holds
    types = storage.content_types(prefix)
    assert {types[k] for k in stored} | {types[dead[0]]} == {TYPES[compression]}
    assert kafka.committed(exporter_group(path.stem), topic) == kafka.end_offsets(topic)


def test_default_layout_is_unchanged(kafka: Any, s3_target: Any) -> None:
    """No options: plain .jsonl under the flat prefix, each line the event byte for byte, as before."""
    topic, prefix = kafka.create_topic(unique("plain"), 2), unique("plain")
    sent = records(50)
    kafka.produce(topic, sent["values"], timestamps=sent["timestamps"], keys=sent["keys"], headers=sent["headers"])
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert "compression" not in path.read_text() and "format" not in path.read_text()
        assert run_exporter(path).state == "success"
    objects = s3_target.objects(prefix)
    (key,) = data_files(objects)
    assert key.startswith(f"{prefix}/2026-12-04T10:00:00-{topic}-") and key.endswith("---0-1.jsonl")
    produced = {json.dumps(v).encode() for v in sent["values"]}
    assert set(objects[key].splitlines()) == produced
    assert s3_target.content_types(prefix)[key] == "application/x-ndjson"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path_prefix": "events/{day}"}, "field 'path_prefix': unknown placeholder {day}; allowed: {date}, {hour}"),
        (
            {"path_prefix": "events/dt={date"},
            "field 'path_prefix': unbalanced braces; placeholders are written {date}, {hour}",
        ),
        ({"path_prefix": "events/}{hour}"}, "field 'path_prefix': unbalanced braces"),
        ({"compression": "lz4"}, "field 'compression': Input should be 'none', 'gzip', 'zstd' or 'snappy'"),
        ({"compression": "snappy"}, "field 'compression': jsonl files take none, gzip, zstd, got 'snappy'"),
        (
            {"file_format": "parquet"},
            "field 'value_schema': a Parquet exporter of JSON events needs the schema of its columns",
        ),
        ({"format": "avro"}, "field 'format': Input should be 'value' or 'envelope'"),
    ],
)
def test_bad_layout_is_refused_at_load_naming_the_field(tmp_path: Any, fields: dict[str, str], message: str) -> None:
    path = write_exporter(tmp_path, name="bad", stream="clicks", data_connector="dc", **fields)
    with pytest.raises(ConfigError) as err:
        load_exporter(path)
    assert message in str(err.value)


def test_a_policy_without_the_compressed_ending_fails_the_export_in_one_line(kafka: Any, s3_target: Any) -> None:
    """gzip files under a policy that grants only *.jsonl: every upload is refused. The task fails (it does not
    hang on the file it had open when the one before it failed), says what to grant, and commits nothing."""
    name, prefix = unique("deny"), unique("deny")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 2)
    kafka.produce(topic, seq_events(0, 3000, 200, noise=True))
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        (work,) = plan_sets(group, topic)
        with pytest.raises(AssertionError) as failed:
            run_task(task_spec(topic, group, prefix, work, compression="gzip", max_file_bytes=16384), timeout=90)
    assert "AccessDenied" in str(failed.value) and "*.jsonl.gz" in str(failed.value)
    assert kafka.committed(group, topic) == {r["partition"]: r["committed"] for r in work["ranges"]}
    assert data_files(s3_target.objects(prefix)) == {}
