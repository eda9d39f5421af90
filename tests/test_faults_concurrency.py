"""Fault 8: two runs of the same exporter at once, or a stale plan re-run after a newer run.

Airflow queues a manual trigger while a scheduled run is active (``max_active_runs=1``); a cleared
old task instance, however, re-runs with its old plan from XCom while newer runs have moved on, and
two deployments may run the same exporter. The export refuses to write before reading and before
each file completes unless the group still holds the offset its plan started from, and commits only
forward from it: no range is exported twice and no newer file is overwritten with an older subset.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import strm_provider.operators as operators
from strm_provider.export import ExportError
from tests.exporting import (
    connections,
    data_files,
    exporter_dag,
    exporter_group,
    load_dag,
    run_exporter,
    write_exporter,
)
from tests.faults.scenario import check_exactly_once, plan_sets, seq_events, task_spec, unique
from tests.faults.seams import on_batches


def execute(spec: dict[str, Any], run_id: str) -> dict[str, Any]:
    return operators.KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": run_id})


class Exporter:
    """A topic with ``first`` events, and two plans from the same committed offsets: small, then big."""

    def __init__(self, kafka: Any, s3_target: Any, label: str) -> None:
        self.kafka, self.s3 = kafka, s3_target
        self.name, self.prefix = unique(label), unique(label)
        self.group = exporter_group(self.name)
        self.topic = kafka.create_topic(self.name, 3)
        self.produced = 600
        kafka.produce(self.topic, seq_events(0, 300))
        self.conns = {"strm_kafka_default": kafka.connection(), "dc": s3_target.connection(self.prefix)}

    def plans(self) -> tuple[dict, dict]:
        """A plan, then 300 more events, then a second plan from the same committed offsets.

        A plan task that starts now replays the first, unfinished plan (recorded in the commit
        metadata), so two runs planned one after the other export the same range under the same
        names. Two plan tasks reading the offsets at the same instant can still differ: ``big`` is
        that plan, the first's ranges extended to the new end offsets.
        """
        (small,) = plan_sets(self.group, self.topic)
        self.kafka.produce(self.topic, seq_events(300, 300))
        (replayed,) = plan_sets(self.group, self.topic)
        assert replayed == small
        ends = self.kafka.end_offsets(self.topic)
        big = {**small, "ranges": [{**r, "end": ends[r["partition"]]} for r in small["ranges"]]}
        return task_spec(self.topic, self.group, self.prefix, small), task_spec(
            self.topic, self.group, self.prefix, big
        )

    def finish(self, row: str) -> None:
        path = write_exporter(
            name=self.name,
            stream=self.topic,
            data_connector="dc",
            path_prefix=self.prefix,
            include_existing_events=True,
        )
        self.kafka.produce(self.topic, seq_events(self.produced, 90))
        self.produced += 90
        assert run_exporter(path).state == "success"
        assert load_dag(exporter_dag(self.name)).max_active_runs == 1, "Airflow queues a second run"
        check_exactly_once(row, self.kafka, self.s3, self.prefix, self.topic, self.group, self.produced)


def test_stale_plan_after_newer_run_is_a_no_op(kafka: Any, s3_target: Any) -> None:
    """An old plan (a cleared old task) re-run after a newer run committed past it: nothing is rewritten."""
    ex = Exporter(kafka, s3_target, "stale")
    with connections(**ex.conns):
        small, big = ex.plans()
        assert execute(big, "newer")["events"] == 600
        before = ex.s3.objects(ex.prefix)
        result = execute(small, "older")
        assert result["events"] == 0 and result["files"] == [] and result["committed"]
        assert ex.s3.objects(ex.prefix) == before, "the newer file must not be overwritten with an older subset"
        ex.finish("stale plan re-run after a newer run")


def test_plan_overtaken_midway_writes_nothing(kafka: Any, s3_target: Any) -> None:
    """A bigger plan whose start another run already moved past (into its range): refused before writing."""
    ex = Exporter(kafka, s3_target, "midway")
    with connections(**ex.conns):
        small, big = ex.plans()
        assert execute(small, "first")["events"] == 300
        before = ex.s3.objects(ex.prefix)
        committed = kafka.committed(ex.group, ex.topic)
        with pytest.raises(ExportError, match="another run of the same exporter moved it"):
            execute(big, "second")
        assert ex.s3.objects(ex.prefix) == before and kafka.committed(ex.group, ex.topic) == committed
        ex.finish("overlapping plan refused before writing")


@pytest.mark.parametrize("winner", ["small", "big"])
def test_two_runs_at_once(kafka: Any, s3_target: Any, monkeypatch: pytest.MonkeyPatch, winner: str) -> None:
    """Two runs read at the same time; one commits while the other is mid-file: the other writes nothing."""
    ex = Exporter(kafka, s3_target, f"twice-{winner}")
    paused, release = threading.Event(), threading.Event()
    real = operators.StrmKafkaHook.reader

    def pause(batches: int) -> None:
        if batches == 1:
            paused.set()
            release.wait(60)

    with connections(**ex.conns):
        small, big = ex.plans()
        first, second = (small, big) if winner == "small" else (big, small)
        outcome: dict[str, Any] = {}

        def loser() -> None:
            try:
                outcome["result"] = execute(second, "loser")
            except Exception as err:
                outcome["error"] = err

        on_batches(pause, monkeypatch)
        thread = threading.Thread(target=loser)
        thread.start()
        assert paused.wait(60), "the losing run started reading"
        monkeypatch.setattr(operators.StrmKafkaHook, "reader", real)
        won = execute(first, "winner")  # runs to its commit while the loser holds an open file
        assert won["committed"]
        before = ex.s3.objects(ex.prefix)
        release.set()
        thread.join(120)
        assert isinstance(outcome.get("error"), ExportError), outcome
        assert "another run of the same exporter" in str(outcome["error"])
        assert ex.s3.objects(ex.prefix) == before, "the losing run completed no file"
        assert data_files(before)
        ex.finish(f"two runs at once ({winner} plan commits first)")
