"""One exporter over many streams: ``streams: [..]`` or ``stream_pattern``, one consumer group, files per
stream and partition set, exactly once per topic-partition, under the kill and replay faults too."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from strm_provider.naming import parse_key
from strm_provider.planning import PlanRequest, bundle_sets
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter, xcom_values
from tests.faults.scenario import check_exactly_once, run_task, seq_events, seqs_in, task_spec, unique
from tests.test_faults_replay import a_failed_run, progress_record, send


def plan_bundles(group: str, streams: list[str], *, sets: int = 1) -> list[dict[str, Any]]:
    """What the DAG's ``plan`` task puts in XCom for an exporter of ``streams`` now (one dict per export task)."""
    from strm_provider.hooks.kafka import StrmKafkaHook
    from strm_provider.offsets import plan_streams

    consumer = StrmKafkaHook().consumer(group)
    try:
        requests = [PlanRequest(s, include_existing_events=True, partition_sets=sets) for s in streams]
        decisions, _ = plan_streams(consumer, requests, None, lambda record: None, now_ms=int(time.time() * 1000))
    finally:
        consumer.close()
    from dataclasses import replace

    planned = [replace(s, stream=name) for name, d in decisions.items() for s in d.sets]
    return [{"index": i, "sets": [s.to_xcom() for s in share]} for i, share in enumerate(bundle_sets(planned, sets))]


def test_a_pattern_exporter_exports_every_matching_stream_exactly_once(kafka: Any, s3_target: Any) -> None:
    """Three matching streams of 3, 1 and 2 partitions and one that does not match; a fourth stream created
    after the first run is picked up by the next. Files go to ``<prefix>/<stream>/``, named with their stream;
    the run's sets are shared among ``partition_sets`` export tasks; every summary names each partition's stream."""
    base, prefix = unique("multi"), unique("multi")
    name = base
    a, b, c = kafka.create_topic(f"{base}.a", 3), kafka.create_topic(f"{base}.b", 1), kafka.create_topic(f"{base}.c", 2)
    other = kafka.create_topic(f"{base}-other", 1)
    produced = {a: 300, b: 200, c: 120}
    for topic, count in produced.items():
        kafka.produce(topic, seq_events(0, count))
    kafka.produce(other, seq_events(0, 50))
    group = exporter_group(name)
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=name,
            stream_pattern=f"{base}\\.[a-z]+",
            data_connector="dc",
            include_existing_events=True,
            path_prefix=f"{prefix}/{{stream}}",
            partition_sets=2,
        )
        first = run_exporter(path)
        assert first.state == "success"
        (bundles,) = xcom_values(first, "plan")
        assert len(bundles) == 2, "the run's sets are shared among partition_sets export tasks"
        planned = sorted((s["stream"], tuple(s["partitions"])) for bundle in bundles for s in bundle["sets"])
        assert planned == [(a, (0, 1)), (a, (2,)), (b, (0,)), (c, (0,)), (c, (1,))]
        summaries = xcom_values(first, "export")
        assert sum(s["events"] for s in summaries) == 620
        assert {(e["stream"], e["partition"]) for s in summaries for e in s["partitions"]} == {
            (a, 0),
            (a, 1),
            (a, 2),
            (b, 0),
            (c, 0),
            (c, 1),
        }
        objects = data_files(s3_target.objects(prefix))
        for key in objects:
            folder, parsed = key.rsplit("/", 2)[1], parse_key(key)
            assert parsed is not None and parsed.stream == folder and folder in produced, key
        assert not any(other in key for key in s3_target.objects(prefix)), "a stream the pattern does not match"

        d = kafka.create_topic(f"{base}.d", 2)  # created after the exporter: picked up at its next plan
        kafka.produce(d, seq_events(0, 80))
        kafka.produce(a, seq_events(300, 100))
        produced |= {d: 80, a: 400}
        assert run_exporter(path).state == "success"
        assert run_exporter(path).state == "success"  # nothing new: no file, nothing doubled
    for topic, count in produced.items():
        check_exactly_once(
            f"stream_pattern, stream {topic[-1]}", kafka, s3_target, f"{prefix}/{topic}", topic, group, count
        )
    assert kafka.committed(group, other) == {0: None} or not any(kafka.committed(group, other).values())


def test_a_stream_created_later_starts_from_the_exporters_creation(kafka: Any, s3_target: Any) -> None:
    """Without ``include_existing_events``: what a matching stream held before the exporter's first run is not
    exported; a stream created afterwards is exported from its first event, though the exporter first sees it a
    run later; a listed stream's own history before creation is left alone too."""
    base, prefix = unique("later"), unique("later")
    old = kafka.create_topic(f"{base}.old", 2)
    kafka.produce(old, seq_events(0, 50))  # before the exporter: not exported
    group = exporter_group(base)
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=base, stream_pattern=f"{base}\\..*", data_connector="dc", path_prefix=f"{prefix}/{{stream}}"
        )
        assert run_exporter(path).state == "success"  # created: starts pinned at the ends
        kafka.produce(old, seq_events(50, 70))
        new = kafka.create_topic(f"{base}.new", 3)
        kafka.produce(new, seq_events(0, 90))
        assert run_exporter(path).state == "success"
        record = progress_record(group)
        assert record is not None and sorted(record["streams"]) == [new, old]
        kafka.produce(new, seq_events(90, 10))
        assert run_exporter(path).state == "success"
    check_exactly_once("stream created later", kafka, s3_target, f"{prefix}/{new}", new, group, 100)
    check_exactly_once(
        "stream older than the exporter", kafka, s3_target, f"{prefix}/{old}", old, group, 120, set(range(50, 120))
    )


@pytest.mark.parametrize("phase", ["reading", "before-commit", "after-commit"])
def test_sigkill_then_retry_then_next_run_over_several_streams(kafka: Any, s3_target: Any, phase: str) -> None:
    """The export task of a listed-streams exporter SIGKILLed at each phase (its first stream's commit is the
    one the commit phases stop at), Airflow's retry of the same sets, then the next run: each stream exactly once."""
    base, prefix = unique(f"mkill-{phase}"), unique("mkill")
    topics = [kafka.create_topic(f"{base}-{i}", parts) for i, parts in enumerate((3, 1, 2))]
    for i, topic in enumerate(topics):
        kafka.produce(topic, seq_events(0, 2000 + 500 * i))
    group = exporter_group(base)
    settings = {"max_file_events": 700, "path_prefix": f"{prefix}/{{stream}}"}
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(name=base, streams=topics, data_connector="dc", include_existing_events=True, **settings)
        (work,) = plan_bundles(group, topics)
        spec = task_spec(topics[0], group, work=work, **settings)
        spec["operator"]["stream"] = topics

        assert run_task(spec, phase=phase) is None
        if phase != "after-commit":
            assert kafka.committed(group, topics[0]) == {0: 0, 1: 0, 2: 0}
        else:
            assert kafka.committed(group, topics[0]) == kafka.end_offsets(topics[0])
            assert kafka.committed(group, topics[1]) == {0: 0}
        result = run_task(spec)
        assert result is not None and result["committed"]
        for topic in topics:
            assert kafka.committed(group, topic) == kafka.end_offsets(topic)
        for i, topic in enumerate(topics):
            kafka.produce(topic, seq_events(2000 + 500 * i, 100))
        assert run_exporter(path).state == "success"
    for i, topic in enumerate(topics):
        check_exactly_once(
            f"SIGKILL {phase} over 3 streams, stream {i}",
            kafka,
            s3_target,
            f"{prefix}/{topic}",
            topic,
            group,
            2100 + 500 * i,
        )


def test_a_failed_run_over_several_streams_is_replayed_whole(
    kafka: Any, s3_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that uploaded files and failed: the next run writes every stream's files of its plan again under
    the same names and bytes, and events that arrived since, in any stream, wait for the run after."""
    base, prefix = unique("mreplay"), unique("mreplay")
    topics = [kafka.create_topic(f"{base}-{i}", 2) for i in range(3)]
    for topic in topics:
        send(kafka, topic, seq_events(0, 600, noise=True), [0, 1])
    group = exporter_group(base)
    common = {"name": base, "streams": topics, "data_connector": "dc", "path_prefix": f"{prefix}/{{stream}}"}
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(**common, include_existing_events=True, max_file_events=200, retries=0)
        failed, left = a_failed_run(monkeypatch, s3_target, prefix, path)
        record = progress_record(group)
        assert record is not None
        assert all(record["streams"][t]["plan"]["run_id"] == failed.run_id for t in topics)
        for topic in topics:
            send(kafka, topic, seq_events(600, 40), [0])
        path = write_exporter(**common, include_existing_events=True, max_file_events=150, partition_sets=2)

        replay = run_exporter(path)
        assert replay.state == "success"
        objects = data_files(s3_target.objects(prefix))
        assert {key: objects[key] for key in left} == left, "the failed run's objects, rewritten byte for byte"
        for topic in topics:
            assert sum(seqs_in(s3_target, f"{prefix}/{topic}").values()) == 600, "what arrived since waits"
        assert run_exporter(path).state == "success"
    for i, topic in enumerate(topics):
        check_exactly_once(
            f"failed run over 3 streams replayed, stream {i}", kafka, s3_target, f"{prefix}/{topic}", topic, group, 640
        )


def test_an_exporter_file_names_one_of_stream_streams_and_stream_pattern(tmp_path: Any) -> None:
    from strm_provider.config import ConfigError, load_exporter

    cases = {
        "both.yaml": ("stream: a\nstreams: [b]\nname: x\ndata_connector: s3\n", "field 'streams': give one of"),
        "none.yaml": ("name: x\ndata_connector: s3\n", "field 'stream': required field is missing"),
        "unnamed.yaml": ("stream_pattern: 'a.*'\ndata_connector: s3\n", "field 'name': an exporter of stream_pattern"),
        "regex.yaml": (
            "stream_pattern: 'a(('\nname: x\ndata_connector: s3\n",
            "field 'stream_pattern': expected a regular",
        ),
        "topic.yaml": ("streams: [a, 'b c']\nname: x\ndata_connector: s3\n", "field 'streams': expected Kafka topic"),
        "prefix.yaml": (
            "stream: a\ndata_connector: s3\npath_prefix: 'x/{topic}'\n",
            "allowed: {date}, {hour}, {stream}",
        ),
    }
    for file, (text, expected) in cases.items():
        (tmp_path / file).write_text(text)
        with pytest.raises(ConfigError) as err:
            load_exporter(tmp_path / file)
        assert expected in str(err.value), (file, str(err.value))
    (tmp_path / "ok.yaml").write_text(json.dumps({"streams": ["a", "b"], "name": "ab", "data_connector": "s3"}))
    assert load_exporter(tmp_path / "ok.yaml").source == ["a", "b"]
