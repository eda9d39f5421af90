"""Kafka forgets the group's offsets: exactly once across quiet spells, pauses and failed runs.

Kafka deletes a consumer group's committed offsets ``offsets.retention.minutes`` after their last
commit while the group has no members, and the exporter never joins its group. This module's broker
keeps them one minute (checked every second), so what takes a week in production takes ~60 s here:

1. an exporter that keeps running through a quiet spell (empty runs every <= 25 s for >= 90 s) keeps
   its offsets in Kafka, as every run commits them again;
2. an exporter paused for longer than the retention finds them forgotten, takes them from its
   record in Airflow (the Variable ``strm.progress.<group id>``) and neither re-exports nor skips
   (after a run that exported events, whose tasks reported the commit, as after an empty run);
3. a run that failed mid-run and then a pause longer than the retention: the next run replays the
   failed plan whole from Airflow's record (same object names, overwritten), the one after exports
   the rest.

All exporters share one waiting period, so the module costs about three minutes, not six pauses.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack import free_port
from devstack.apache_kafka import Listeners, controller_port, start_kafka
from devstack.kafka import Broker
from devstack.moto import MotoS3
from strm_provider.progress import variable_key
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter, xcom_values
from tests.faults.scenario import check_exactly_once, seq_events, unique
from tests.faults.seams import on_batches

#: the broker forgets an empty group's offsets this long after their last commit
RETENTION_S = 60
#: how often the quiet exporters run (an interval of 20 s, well inside the retention)
QUIET_EVERY_S = 20
#: how long the quiet exporters see no new event while they keep running
QUIET_SPELL_S = 90
#: how long the paused exporters do not run, at least (the retention plus a margin)
PAUSE_S = RETENTION_S + 6
#: the whole waiting period may take no longer than this
WAIT_LIMIT_S = 240


@pytest.fixture(scope="module")
def forgetful_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker of this module's own that forgets a memberless group's offsets a minute after their last commit."""
    data_dir = tmp_path_factory.mktemp("kafka-offsets-retention")
    port = free_port()
    extra = {"offsets.retention.minutes": str(RETENTION_S // 60), "offsets.retention.check.interval.ms": "1000"}
    with start_kafka(data_dir, Listeners(port, controller_port(data_dir), extra=extra)):
        broker = Broker(port, data_dir)
        yield broker
        broker.reset_clients()


def progress_record(group: str) -> dict[str, Any] | None:
    """The exporter's record as Airflow keeps it (the Variable's JSON, decrypted), read from its database."""
    from airflow.models import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(Variable).where(Variable.key == variable_key(group)))
        return None if row is None else json.loads(row.val)


class Exporter:
    """One exporter of the module: its own topic, prefix, data connector and YAML, and what it was sent."""

    def __init__(self, kafka: Broker, s3: MotoS3, label: str, *, partitions: int = 3, **settings: Any) -> None:
        self.kafka, self.s3, self.label = kafka, s3, label
        self.name, self.prefix = unique(label), unique(label)
        self.group = exporter_group(self.name)
        self.connector = f"dc_{self.name}"
        self.topic = kafka.create_topic(self.name, partitions)
        self.settings = settings
        self.path: Path | None = None
        self.produced = 0
        #: monotonic times of the last run's start and end (its plan task committed in between), and of
        #: the end of the last run that exported events
        self.started = self.ended = self.exported_at = 0.0

    def conns(self) -> dict[str, dict[str, Any]]:
        return {self.connector: self.s3.connection(self.prefix)}

    def write(self) -> None:
        self.path = write_exporter(
            name=self.name, stream=self.topic, data_connector=self.connector, path_prefix=self.prefix, **self.settings
        )

    def produce(self, count: int) -> None:
        """Events ``seq`` = produced .. produced+count-1, round-robin over the partitions."""
        self.kafka.produce(self.topic, seq_events(self.produced, count))
        self.produced += count

    def run(self, state: str = "success") -> Any:
        """One real DAG run; assert it ended in ``state``."""
        assert self.path is not None
        self.started = time.monotonic()
        run = run_exporter(self.path)
        self.ended = time.monotonic()
        assert run.state == state, (self.label, run.run_id, run.state)
        return run

    def committed(self) -> dict[int, int | None]:
        return self.kafka.committed(self.group, self.topic)

    def forgotten(self) -> bool:
        return all(offset is None for offset in self.committed().values())

    def record(self) -> dict[str, Any]:
        record = progress_record(self.group)
        assert record is not None, f"{self.label}: no progress Variable"
        return record

    def files(self) -> dict[str, bytes]:
        return data_files(self.s3.objects(self.prefix))

    def modified(self, keys: list[str]) -> dict[str, Any]:
        s3 = self.s3.client()
        return {key: s3.head_object(Bucket=self.s3.bucket, Key=key)["LastModified"] for key in keys}

    def finish(self, scenario: str) -> None:
        check_exactly_once(scenario, self.kafka, self.s3, self.prefix, self.topic, self.group, self.produced)


@dataclass
class Waited:
    """The module's exporters after the one waiting period they share, and what happened before it."""

    quiet: dict[bool, Exporter]
    paused: dict[bool, Exporter]
    settled: Exporter
    failing: Exporter
    failed_run: Any
    failed_objects: dict[str, bytes]
    #: per quiet exporter, the monotonic starts of its last exporting run and of the empty runs after it
    empty_runs: dict[str, list[float]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def waited(forgetful_kafka: Broker, s3_target: MotoS3) -> Iterator[Waited]:
    """Every exporter set up, then one waiting period: the quiet ones run every 20 s (empty runs) for
    at least 90 s, while the paused ones, and the one whose run failed, do not run until Kafka forgot
    their offsets. The connections stay defined for the tests."""
    kafka = forgetful_kafka

    def exporter(label: str, **settings: Any) -> Exporter:
        return Exporter(kafka, s3_target, label, **settings)

    paused = {flag: exporter(f"paused{int(flag)}", include_existing_events=flag) for flag in (True, False)}
    settled = exporter("settled", include_existing_events=False)
    failing = exporter("failed", include_existing_events=True, retries=0, max_file_events=200)
    quiet = {flag: exporter(f"quiet{int(flag)}", include_existing_events=flag) for flag in (True, False)}
    everyone = [*paused.values(), settled, failing, *quiet.values()]
    conns = {"strm_kafka_default": kafka.connection()}
    for each in everyone:
        conns |= each.conns()
    with connections(**conns):
        for each in everyone:
            each.write()
        # the exporters that pause first, so that their pause starts earliest
        for each in paused.values():
            start(each)
        start(settled)
        settled.run()  # an empty run: it sees the last plan committed in Kafka
        assert settled.record()["plan"] is None, "the record holds no plan in flight after a settled run"
        failed_run, failed_objects = fail_mid_run(failing)
        for each in (*paused.values(), settled, failing):
            each.produce(150)  # during the pause
        for each in quiet.values():
            start(each)
        state = Waited(quiet, paused, settled, failing, failed_run, failed_objects)
        state.empty_runs = wait_through_retention(list(quiet.values()), [*paused.values(), settled, failing])
        yield state


def start(exporter: Exporter) -> None:
    """Produce and export a first lot; without ``include_existing_events`` a first run pins the start before."""
    if not exporter.settings["include_existing_events"]:
        exporter.run()
        assert not exporter.files(), "a new exporter without existing events exports nothing"
    exporter.produce(300)
    exporter.run()
    exporter.exported_at = exporter.ended
    assert exporter.committed() == exporter.kafka.end_offsets(exporter.topic)


def fail_mid_run(exporter: Exporter) -> tuple[Any, dict[str, bytes]]:
    """The first run fails at the second batch read, after a data file was uploaded (``retries: 0``)."""
    exporter.produce(900)

    def fail(batches: int) -> None:
        if batches >= 2:
            raise RuntimeError("the export failed mid-run (injected at the second batch)")

    with pytest.MonkeyPatch.context() as patch:
        on_batches(fail, patch)
        run = exporter.run("failed")
    objects = exporter.files()
    assert objects, "the failed run uploaded at least one data file"
    assert sum(len(body.splitlines()) for body in objects.values()) < 900, "and not all of its plan"
    assert exporter.record()["plan"]["run_id"] == run.run_id, "the failed run's plan is recorded, in flight"
    return run, objects


def wait_through_retention(running: list[Exporter], waiting: list[Exporter]) -> dict[str, list[float]]:
    """Run the ``running`` exporters every 20 s (empty runs) until they have seen no event for the
    quiet spell, while the ``waiting`` ones do not run until Kafka has forgotten their offsets."""
    quiet_since = max(e.exported_at for e in running)
    pause_since = max(e.ended for e in waiting)
    starts: dict[str, list[float]] = {e.label: [e.started] for e in running}
    forgot: set[str] = set()
    deadline = time.monotonic() + WAIT_LIMIT_S
    while True:
        now = time.monotonic()
        assert now < deadline, f"waited {WAIT_LIMIT_S}s; Kafka forgot the offsets of {sorted(forgot)} only"
        for exporter in running:
            if now - exporter.started >= QUIET_EVERY_S:
                before = exporter.files()
                run = exporter.run()
                starts[exporter.label].append(exporter.started)
                # nothing to export: the task is skipped, no summary, no Asset event
                assert xcom_values(run, "export") == [], f"{exporter.label}: an empty run exports nothing"
                assert exporter.files() == before, f"{exporter.label}: an empty run writes nothing"
        for exporter in waiting:
            if exporter.label not in forgot and exporter.forgotten():
                assert time.monotonic() - exporter.ended >= RETENTION_S - 5, f"{exporter.label}: forgotten early"
                forgot.add(exporter.label)
        now = time.monotonic()
        if now - quiet_since >= QUIET_SPELL_S and now - pause_since >= PAUSE_S and len(forgot) == len(waiting):
            return starts
        time.sleep(0.5)


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new-only"])
def test_quiet_spell_keeps_the_offsets(waited: Waited, existing: bool) -> None:
    """An exporter that keeps running (empty runs every 20 s) through 90 s without a new event, 30 s
    longer than Kafka's retention: Kafka still holds the group's offsets, as every run committed them
    again; the events that come next are exported exactly once."""
    exporter = waited.quiet[existing]
    starts = waited.empty_runs[exporter.label]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps and max(gaps) <= 25, gaps
    assert time.monotonic() - exporter.exported_at >= QUIET_SPELL_S, "no new event for the whole quiet spell"
    assert exporter.committed() == exporter.kafka.end_offsets(exporter.topic), (
        "Kafka forgot the offsets of an exporter that kept running"
    )
    exporter.produce(120)
    exporter.run()
    exporter.finish(f"quiet spell >= {QUIET_SPELL_S}s, empty runs every {QUIET_EVERY_S}s, existing={existing}")


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new-only"])
def test_paused_longer_than_the_retention(waited: Waited, existing: bool) -> None:
    """An exporter that did not run for longer than Kafka's retention, while events arrived: Kafka has
    forgotten the group's offsets; the next run takes them from Airflow's record, says so in the
    Variable, and exports the events of the pause, none again and none skipped."""
    exporter = waited.paused[existing]
    exported = exporter.files()
    modified = exporter.modified(list(exported))
    resume(exporter)
    exporter.finish(f"paused > retention ({PAUSE_S}s) after an exporting run, existing={existing}")
    assert exporter.modified(list(exported)) == modified, "the objects of the run before the pause are not rewritten"


def test_paused_after_a_settled_run(waited: Waited) -> None:
    """As above, but the last run before the pause was an empty one (the plan before it already seen
    committed): the run after the pause exports the events of the pause, exactly once."""
    resume(waited.settled)
    waited.settled.finish(f"paused > retention ({PAUSE_S}s) after an empty run, existing=False")


def resume(exporter: Exporter) -> None:
    """After the pause: Kafka has forgotten, and the run takes the offsets from Airflow's record, saying so."""
    assert exporter.forgotten(), f"{exporter.label}: Kafka still holds the group's offsets"
    run = exporter.run()
    recovered = exporter.record()["recovered"]
    assert recovered is not None and recovered["run_id"] == run.run_id, recovered
    assert sorted(recovered["partitions"]) == ["0", "1", "2"], recovered


def test_failed_run_then_paused(waited: Waited) -> None:
    """A run failed mid-run (a data file uploaded, retries 0), then no run for longer than the retention:
    the next run replays the failed plan whole from Airflow's record (its objects written again under the
    same names), and the run after it exports what arrived since; exactly once, the failed run's objects
    counted."""
    exporter, failed, objects = waited.failing, waited.failed_run, waited.failed_objects
    assert exporter.forgotten(), "Kafka still holds the group's offsets"
    before = exporter.modified(list(objects))
    planned = {(r["partition"], r["start"], r["end"]) for s in exporter.record()["plan"]["sets"] for r in s["ranges"]}
    replay = exporter.run()
    (result,) = xcom_values(replay, "export")
    replayed = {(e["partition"], e["start"], e["end"]) for e in result["partitions"]}
    assert {r for r in replayed if r[2] > r[1]} == {r for r in planned if r[2] > r[1]}, "the failed run's plan"
    assert set(objects) <= set(result["files"]), "the failed run's objects are written again, same names"
    now = exporter.files()
    assert {key: now[key] for key in objects} == objects, "rewritten byte for byte"
    after = exporter.modified(list(objects))
    assert all(after[key] > before[key] for key in objects), (before, after)
    record = exporter.record()
    assert record["recovered"] is not None and record["recovered"]["run_id"] == replay.run_id, record["recovered"]
    assert record["plan"]["run_id"] == failed.run_id, "in flight until a run sees it committed"
    assert sum(len(body.splitlines()) for body in now.values()) == 900, "what arrived since waits for the next run"
    exporter.run()
    assert exporter.record()["plan"] is None or exporter.record()["plan"]["run_id"] != failed.run_id
    exporter.finish(f"run failed mid-run, then paused > retention ({PAUSE_S}s)")
