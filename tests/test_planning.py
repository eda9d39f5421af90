"""What a run decides from Kafka's offsets and Airflow's record, case by case (no servers: pure planning).

The end-to-end proofs are in test_faults_replay.py and test_offsets_expiry.py; these pin the decision
table the README documents, including the refusals' wording.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from strm_provider import progress
from strm_provider.planning import PlanRefused, PlanRequest, Progress, StreamOffsets, plan_run

SETTINGS = {"max_file_events": 200, "compression": "none", "codec": "none"}
GZIP = {"max_file_events": None, "compression": "gzip", "codec": "gzip (zlib 1.2.13)"}


def kafka(committed: dict[int, int | None], end: dict[int, int], topic_id: str | None = "t1") -> StreamOffsets:
    return StreamOffsets(
        {p: (None if o is None else (o, "strm:x")) for p, o in committed.items()},
        {p: 0 for p in end},
        end,
        topic_id,
    )


def decide(offsets: StreamOffsets, record: Progress | None, **kw: Any) -> Any:
    args = {"stream": "s", "run_id": "run2", "include_existing_events": False, "settings": SETTINGS} | kw
    return plan_run(offsets, record, PlanRequest(exporter="ex", **args))


def first_plan(settings: dict[str, Any] = SETTINGS) -> Progress:
    """The record after run1 planned 0..10 on partition 0 and nothing on partition 1, and failed."""
    decision = plan_run(
        kafka({0: 0, 1: 5}, {0: 10, 1: 5}), None,
        PlanRequest("s", include_existing_events=False, run_id="run1", partition_sets=1, settings=settings),
    )  # fmt: skip
    return decision.record


def test_a_new_exporter_pins_its_start_and_records_it() -> None:
    decision = decide(kafka({0: None, 1: None}, {0: 7, 1: 3}), None)
    assert decision.plan.pin == {0: 7, 1: 3} and decision.sets == []
    assert decision.commits == {0: (7, "strm:created"), 1: (3, "strm:created")}
    assert decision.record.committed == {0: 7, 1: 3} and decision.record.plan is None


def test_an_unfinished_plan_is_replayed_whole_and_new_events_wait() -> None:
    record = first_plan()
    assert record.plan is not None and [r.partition for r in record.plan.sets[0].ranges] == [0, 1]
    # partition 1 received events since, and the YAML now says 2 sets: the replay ignores both
    decision = decide(kafka({0: 0, 1: 5}, {0: 40, 1: 60}), record, partition_sets=2)
    assert decision.replaying == "run1"
    (work,) = decision.sets
    assert [(r.partition, r.start, r.end) for r in work.ranges] == [(0, 0, 10), (1, 5, 5)]
    assert work.settings == SETTINGS
    assert decision.commits == {0: (0, "strm:plan:10"), 1: (5, "strm:plan:5")}


def test_a_committed_plan_moves_the_record_on() -> None:
    decision = decide(kafka({0: 10, 1: 5}, {0: 12, 1: 5}), first_plan())
    assert decision.replaying is None
    assert [(r.partition, r.start, r.end) for r in decision.plan.ranges] == [(0, 10, 12), (1, 5, 5)]
    assert decision.record.committed == {0: 10, 1: 5} and decision.record.plan.run_id == "run2"


def test_offsets_kafka_forgot_come_from_airflow_and_every_partition_is_committed_again() -> None:
    done = decide(kafka({0: 10, 1: 5}, {0: 10, 1: 5}), first_plan()).record  # an empty run: nothing in flight
    assert done.plan is None
    decision = decide(kafka({0: None, 1: None}, {0: 30, 1: 5}), done, include_existing_events=True)
    assert decision.recovered == {0: 10, 1: 5} and decision.plan.pin == {}
    assert [(r.start, r.end) for r in decision.plan.ranges] == [(10, 30), (5, 5)]
    assert decision.commits == {0: (10, "strm:plan:30"), 1: (5, "strm:plan:5")}
    assert decision.record.recovered["partitions"] == {"0": 10, "1": 5}


def test_a_forgotten_plan_in_flight_is_replayed() -> None:
    decision = decide(kafka({0: None, 1: None}, {0: 30, 1: 9}), first_plan())
    assert decision.replaying == "run1" and decision.recovered == {0: 0, 1: 5}
    assert [(r.start, r.end) for r in decision.sets[0].ranges] == [(0, 10), (5, 5)]


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        (
            kafka({0: 3, 1: 5}, {0: 10, 1: 5}),
            "partition 0: the group's committed offset is 3, but run 'run1' planned 0..10 and has not finished",
        ),
        (kafka({0: 0, 1: 5}, {0: 10, 1: 5}, topic_id="t2"), "stream 's' was deleted and recreated (topic id t1"),
    ],
)
def test_what_cannot_be_told_without_guessing_is_refused(offsets: StreamOffsets, message: str) -> None:
    with pytest.raises(PlanRefused) as err:
        decide(offsets, first_plan())
    assert str(err.value).startswith(message) and "`strm reset batch-exporter ex" in str(err.value)
    assert "\n" not in str(err.value)


def test_offsets_moved_outside_the_exporter_or_past_the_end_are_refused() -> None:
    done = decide(kafka({0: 10, 1: 5}, {0: 10, 1: 5}), first_plan()).record
    with pytest.raises(PlanRefused, match=r"^partition 0: Kafka holds the committed offset 4, but Airflow recorded 10"):
        decide(kafka({0: 4, 1: 5}, {0: 10, 1: 5}), done)
    with pytest.raises(PlanRefused, match=r"^partition 0: the committed offset 10 is past the stream's end 2"):
        decide(kafka({0: None, 1: None}, {0: 2, 1: 0}, topic_id=None), done)


def test_a_compressed_plan_is_replayed_only_by_the_build_that_cut_it() -> None:
    record = first_plan(GZIP)
    same = decide(kafka({0: 0, 1: 5}, {0: 10, 1: 5}), record, codecs={"gzip": "gzip (zlib 1.2.13)"})
    assert same.replaying == "run1"
    with pytest.raises(PlanRefused, match=r"\(gzip \(zlib 1.2.13\)\), but this worker has gzip \(zlib 1.3.1\)"):
        decide(kafka({0: 0, 1: 5}, {0: 10, 1: 5}), record, codecs={"gzip": "gzip (zlib 1.3.1)"})


def test_a_plan_its_tasks_reported_committed_is_not_replayed_when_kafka_forgot() -> None:
    record = first_plan()
    summary = {
        "committed": True,
        "partitions": [{"partition": 0, "start": 0, "end": 10}, {"partition": 1, "start": 5, "end": 5}],
    }
    assert record.plan is not None and record.plan.finished([summary, None, {"committed": False}]) == {0}
    decision = decide(kafka({0: None, 1: None}, {0: 30, 1: 9}), record, finished={0})
    assert decision.replaying is None and decision.recovered == {0: 10, 1: 5}
    assert [(r.start, r.end) for r in decision.plan.ranges] == [(10, 30), (5, 9)]
    assert record.plan.finished([{**summary, "committed": False}]) == set()


def test_an_unfinished_plan_whose_start_retention_deleted_is_refused() -> None:
    offsets = kafka({0: None, 1: None}, {0: 30, 1: 9})
    offsets = StreamOffsets(offsets.committed, {0: 4, 1: 0}, offsets.end, offsets.topic_id)
    with pytest.raises(
        PlanRefused, match=r"^partition 0: run 'run1' did not finish, and retention has since deleted offsets 0..3 "
    ):
        decide(offsets, first_plan())
    assert decide(offsets, first_plan(), finished={0}).replaying is None, "a reported set is not replayed"


#: a progress record as the plan task keeps it in its Variable, for a plan of envelope files that did not finish
SETTINGS_STORED = (
    '{"path_prefix":"p","max_file_bytes":1048576,"max_file_events":null,"compression":"none",'
    '"record_format":"envelope","codec":"none"}'
)
STORED = (
    '{"stream":"s","topic_id":"t1","committed":{"0":0},"plan":{"run_id":"run1","runs":["run1"],"settings":'
    f'{SETTINGS_STORED},"sets":[{{"index":0,"partitions":[0],"ranges":[{{"partition":0,"start":0,"end":10,'
    f'"committed":0,"lost_to_retention":0}}],"settings":{SETTINGS_STORED}}}]}},"recovered":null}}'
)


def test_a_stored_record_is_replayed_with_the_settings_it_recorded() -> None:
    from strm_provider.operators import KafkaExportPlanOperator, KafkaToStorageOperator

    record = progress.parse(STORED, "strm.progress.g")
    decision = decide(kafka({0: 0}, {0: 20}), record, settings={}, run_id="run1")  # its own retry
    (work,) = decision.sets
    assert decision.replaying == "run1" and [(r.start, r.end) for r in work.ranges] == [(0, 10)]
    assert progress.dumps(decision.record) == STORED, "the retry keeps the record as it was stored"
    # an exporter set up the same way records exactly these settings, ``format`` under ``record_format``
    args = {"stream": "s", "storage_conn_id": "dc", "group_id": "g", "path_prefix": "p", "max_file_bytes": 1048576}
    planner = KafkaExportPlanOperator(task_id="plan", format="envelope", **args)
    # (and the settings added since, at their defaults: a plan stored without them replays with those)
    added = {"value_format": "json", "file_format": "jsonl", "value_schema": None, "name_style": "standard"}
    assert planner.cut_settings() == json.loads(STORED)["plan"]["settings"] | added
    # the export task takes the format the plan recorded over its own argument
    settings = {**work.settings, "record_format": "avro"}
    exporter = KafkaToStorageOperator(task_id="export", partition_set={**work.to_xcom(), "settings": settings}, **args)
    with pytest.raises(ValueError, match=r"^format: Input should be 'value' or 'envelope'$"):
        exporter.execute({})
