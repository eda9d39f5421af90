"""Faults 4, 6 and 7: the broker restarts or is unreachable, partitions are added, retention deletes data.

The restart test runs its own broker and kills its JVM with SIGKILL mid-read, then starts it again
on the same port and log dirs; the others use the session broker with their own topics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from devstack import free_port
from devstack.kafka import Broker, start_broker
from strm_provider.hooks.kafka import KafkaUnavailable
from strm_provider.operators import KafkaExportPlanOperator, KafkaToStorageOperator
from tests.exporting import connections, exporter_group, run_exporter, write_exporter, xcom_values
from tests.faults.scenario import check_exactly_once, plan_sets, seq_events, task_spec, unique
from tests.faults.seams import on_batches


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[Broker, contextlib.ExitStack, list[subprocess.Popen]]]:
    """A broker for this test only, so killing it disturbs no other test."""
    port = free_port()
    stack = contextlib.ExitStack()
    procs = [stack.enter_context(start_broker(tmp_path, port))]
    broker = Broker(port, tmp_path)
    yield broker, stack, procs
    broker.reset_clients()
    stack.close()


@pytest.mark.usefixtures("each_reader")
def test_broker_restarted_mid_run(
    own_broker: tuple[Broker, contextlib.ExitStack, list[subprocess.Popen]], s3_target: Any, monkeypatch
) -> None:
    """Fault 4a: the broker's JVM is killed and comes back while the task reads: the task finishes, exactly once."""
    kafka, stack, procs = own_broker
    name, prefix = unique("restart"), unique("restart")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 3)
    kafka.produce(topic, seq_events(0, 3000))
    restarts = []

    def restart(batches: int) -> None:
        """SIGKILL of the broker's JVM right after the first batch was read, then a start on the same log dirs."""
        if not restarts:
            restarts.append(time.monotonic())
            os.killpg(procs[-1].pid, signal.SIGKILL)
            procs[-1].wait(30)
            stack.close()
            kafka.reset_clients()
            procs.append(stack.enter_context(start_broker(kafka.data_dir, kafka.port)))

    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        (work,) = plan_sets(group, topic)
        on_batches(restart, monkeypatch)
        spec = task_spec(topic, group, prefix, work)
        result = KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": "manual__restart"})
        monkeypatch.undo()
        assert restarts and result["committed"] and result["events"] == 3000

        path = write_exporter(
            name=name, stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True
        )
        kafka.produce(topic, seq_events(3000, 300))
        assert run_exporter(path).state == "success"
    check_exactly_once("broker restarted mid-run", kafka, s3_target, prefix, topic, group, 3300)


def test_broker_unreachable_at_start(s3_target: Any) -> None:
    """Fault 4b: nothing listens at the bootstrap servers: one clear line naming them, no chained traceback."""
    bootstrap = f"127.0.0.1:{free_port()}"
    name = unique("nobroker")
    conn = {"conn_type": "strm_kafka", "host": bootstrap, "extra": {"security_protocol": "PLAINTEXT"}}
    with connections(strm_kafka_default=conn, dc=s3_target.connection("nobroker")):
        started = time.monotonic()
        with pytest.raises(KafkaUnavailable) as err:
            KafkaExportPlanOperator(
                task_id="plan", stream=name, storage_conn_id="dc", group_id=exporter_group(name)
            ).execute({"run_id": "manual__nobroker"})
        assert time.monotonic() - started < 60
        message = str(err.value)
        assert message.startswith(f"Kafka connection 'strm_kafka_default': no broker reachable at {bootstrap} ("), (
            message
        )
        assert "\n" not in message
        assert err.value.__cause__ is None and err.value.__suppress_context__, "no chained traceback"


def test_partitions_added_between_runs(kafka: Any, s3_target: Any) -> None:
    """Fault 6: partitions added between runs are exported from their first offset."""
    name, prefix = unique("grow"), unique("grow")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 2)
    kafka.produce(topic, seq_events(0, 200))
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=name, stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True
        )
        assert run_exporter(path).state == "success"
        kafka.add_partitions(topic, 4)
        deadline = time.monotonic() + 10
        while len(kafka.partitions(topic)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        kafka.reset_clients()  # a fresh producer sees the new partitions
        sent = kafka.produce(topic, seq_events(200, 400), partitions=4)
        assert {p for p, _ in sent} == {0, 1, 2, 3}
        run = run_exporter(path)
        assert run.state == "success"
        (result,) = xcom_values(run, "export")
        assert {e["partition"]: e["start"] for e in result["partitions"]} == {0: 100, 1: 100, 2: 0, 3: 0}
    check_exactly_once("partitions added between runs", kafka, s3_target, prefix, topic, group, 600)


@pytest.mark.usefixtures("each_reader")
def test_committed_offset_lost_to_retention(kafka: Any, s3_target: Any) -> None:
    """Fault 7: data deleted past the committed offset: the run reports the loss, goes on, and succeeds."""
    name, prefix = unique("retention"), unique("retention")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 3)
    kafka.produce(topic, seq_events(0, 300))
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=name, stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True
        )
        assert run_exporter(path).state == "success"  # committed: 100 per partition
        sent = kafka.produce(topic, seq_events(300, 300))  # offsets 100..199 per partition
        kafka.admin.delete_records({TopicPartition(topic, 0): 150})  # retention took 50 unexported offsets
        deleted = {300 + i for i, (p, o) in enumerate(sent) if p == 0 and o < 150}
        assert len(deleted) == 50

        run = run_exporter(path)
        assert run.state == "success"
        (result,) = xcom_values(run, "export")
        lost = {e["partition"]: e["lost_to_retention"] for e in result["partitions"]}
        assert lost == {0: 50, 1: 0, 2: 0} and result["lost_to_retention"] == 50

        kafka.produce(topic, seq_events(600, 30))
        assert run_exporter(path).state == "success"  # and it does not keep failing or re-reporting
    check_exactly_once(
        "retention deleted 50 unexported offsets (reported, not expected)",
        kafka,
        s3_target,
        prefix,
        topic,
        group,
        630,
        expected=set(range(630)) - deleted,
    )
