"""The export scenario every storage kind must pass, end to end on real servers.

Each test uses its own topic and prefix; it asserts what a user sees: the objects in the bucket,
their names and lines, and the offsets committed in Kafka.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import pytest

from devstack import StorageTarget
from strm_provider.naming import is_test_object, parse_key
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter

KINDS = {"s3": "s3_target", "s3-compatible": "s3_compatible_target", "gcs": "gcs_target", "azure": "azure_target"}
_counter = itertools.count()


@pytest.fixture(params=list(KINDS))
def storage(request: pytest.FixtureRequest) -> StorageTarget:
    """Each storage kind in turn (the server is started once per session)."""
    return request.getfixturevalue(KINDS[request.param])


def unique(name: str) -> str:
    return f"{name}{next(_counter)}"


def events_of(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for body in files.values() for line in body.splitlines()]


def produce_seq(kafka: Any, topic: str, start: int, count: int) -> list[tuple[int, int]]:
    return kafka.produce(topic, [{"seq": i, "payload": "x" * (i % 50)} for i in range(start, start + count)])


@pytest.mark.usefixtures("each_reader")
def test_export_exactly_once_across_runs(kafka: Any, storage: StorageTarget) -> None:
    """N events in, N events out, each once, in partition offset order; then nothing; then exactly M more."""
    topic, prefix = kafka.create_topic(unique("clicks"), 5), unique("events")
    sent = produce_seq(kafka, topic, 0, 1000)
    with connections(strm_kafka_default=kafka.connection(), dc=storage.connection(prefix)):
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
        first = storage.objects(prefix)
        files = data_files(first)

        # every event once; names as promised; one file for the one partition set
        assert sorted(e["seq"] for e in events_of(files)) == list(range(1000))
        assert len(files) == 1
        for key in files:
            name = parse_key(key)
            assert name, key
            assert name.prefix == prefix and name.stream == topic and name.partitions == (0, 1, 2, 3, 4)
        # within the file, each partition's events keep their offset order
        offsets = dict(zip((s for s in range(1000)), sent, strict=True))
        order = [offsets[e["seq"]] for e in events_of(files)]
        for part in range(5):
            in_part = [o for p, o in order if p == part]
            assert in_part == sorted(in_part) and len(in_part) == 200
        # each line is one produced event, byte for byte (the helper produced json.dumps of each)
        body = next(iter(files.values()))
        assert all(json.dumps(json.loads(line)).encode() == line for line in body.splitlines())
        # the exporter (re)started: one empty validation file
        tests = [k for k in first if is_test_object(k)]
        assert len(tests) == 1 and first[tests[0]] == b""
        assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == kafka.end_offsets(topic)

        # no new events: no new file
        assert run_exporter(path).state == "success"
        assert storage.objects(prefix) == first

        # M new events: exactly those, in one new file
        produce_seq(kafka, topic, 1000, 137)
        assert run_exporter(path).state == "success"
        after = data_files(storage.objects(prefix))
        new = {k: v for k, v in after.items() if k not in files}
        assert len(new) == 1
        assert sorted(e["seq"] for e in events_of(new)) == list(range(1000, 1137))
        assert Counter(e["seq"] for e in events_of(after)) == Counter(range(1137))
        assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == kafka.end_offsets(topic)


def test_partition_sets_split_files(kafka: Any, storage: StorageTarget) -> None:
    """``partition_sets: 2`` writes two files per run with disjoint partitions covering the topic."""
    topic, prefix = kafka.create_topic(unique("sets"), 5), unique("sets")
    produce_seq(kafka, topic, 0, 500)
    with connections(strm_kafka_default=kafka.connection(), dc=storage.connection(prefix)):
        path = write_exporter(
            name=unique("sets"),
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            partition_sets=2,
        )
        assert run_exporter(path).state == "success"
    files = data_files(storage.objects(prefix))
    parts = sorted(parse_key(k).partitions for k in files)
    assert parts == [(0, 1, 2), (3, 4)]
    assert sorted(e["seq"] for e in events_of(files)) == list(range(500))


def test_new_exporter_starts_at_creation(kafka: Any, storage: StorageTarget) -> None:
    """Without include_existing_events, events from before the first run are not exported; later ones are."""
    topic, prefix = kafka.create_topic(unique("fresh"), 3), unique("fresh")
    produce_seq(kafka, topic, 0, 90)
    with connections(strm_kafka_default=kafka.connection(), dc=storage.connection(prefix)):
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix)
        assert run_exporter(path).state == "success"
        objects = storage.objects(prefix)
        assert data_files(objects) == {}
        assert sum(is_test_object(k) for k in objects) == 1
        assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == {0: 30, 1: 30, 2: 30}
        produce_seq(kafka, topic, 90, 30)
        assert run_exporter(path).state == "success"
    assert sorted(e["seq"] for e in events_of(data_files(storage.objects(prefix)))) == list(range(90, 120))


def test_wrong_secret_fails_clearly(kafka: Any, storage: StorageTarget) -> None:
    """A wrong secret fails the run before anything is read or committed, naming the connector."""
    topic, prefix = kafka.create_topic(unique("badkey"), 2), unique("badkey")
    produce_seq(kafka, topic, 0, 10)
    with connections(strm_kafka_default=kafka.connection(), dc=storage.connection(prefix, secret="SECRET-canary-42")):
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "failed"
    assert storage.objects(prefix) == {}
    # the exporter's start was pinned (its "creation"); nothing past it was committed
    assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == {0: 0, 1: 0}
