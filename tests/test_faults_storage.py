"""Faults 2, 3 and 5: the storage stops, hangs, cuts connections, or revokes the credentials.

The exporter reaches moto_server through the test's own TCP proxy (tests/faults/proxy.py), so the
storage can be taken away and given back mid-upload without losing the bucket. A failed task must
say what happened, commit nothing, leave no object under a final name, and the retry (same
partition set) or the next run must export everything exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

import strm_provider.hooks.s3_client as s3_client
from strm_provider.hooks.storage import StorageError
from strm_provider.operators import KafkaToStorageOperator
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter
from tests.faults.proxy import TcpProxy
from tests.faults.scenario import check_exactly_once, plan_sets, seq_events, task_spec, unique

MiB = 1024 * 1024


@pytest.fixture
def proxy(s3_target: Any) -> Iterator[TcpProxy]:
    """A proxy in front of moto_server, for one test."""
    p = TcpProxy(urlparse(s3_target.endpoint).port).start()
    yield p
    p.stop()


@pytest.fixture
def fast_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-attempt timeouts of seconds, not a minute: the same bounded-retry logic, quicker to observe."""
    monkeypatch.setattr(s3_client, "READ_TIMEOUT", 2)
    monkeypatch.setattr(s3_client, "CONNECT_TIMEOUT", 2)


def via(proxy: TcpProxy, conn: dict[str, Any]) -> dict[str, Any]:
    return {**conn, "extra": {**conn["extra"], "endpoint_url": proxy.endpoint}}


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    """The export task, in this process (so the test sees the exception a task log would show)."""
    return KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": "manual__fault"})


class Scenario:
    """One exporter over a fresh topic and prefix, its connections routed through ``proxy``."""

    def __init__(self, kafka: Any, s3_target: Any, proxy: TcpProxy, label: str, events: int, pad: int) -> None:
        self.kafka, self.s3, self.proxy = kafka, s3_target, proxy
        self.name, self.prefix = unique(label), unique(label)
        self.group = exporter_group(self.name)
        self.topic = kafka.create_topic(self.name, 3)
        self.produced = events
        kafka.produce(self.topic, seq_events(0, events, pad))
        self.conns = {"strm_kafka_default": kafka.connection(), "dc": via(proxy, s3_target.connection(self.prefix))}

    def spec(self) -> dict[str, Any]:
        (work,) = plan_sets(self.group, self.topic)
        self.planned_from = {r["partition"]: r["committed"] for r in work["ranges"]}
        return task_spec(self.topic, self.group, self.prefix, work)

    def assert_nothing_committed_nor_written(self) -> None:
        assert self.kafka.committed(self.group, self.topic) == self.planned_from
        assert data_files(self.s3.objects(self.prefix)) == {}, "no object may appear under a final name"

    def finish(self, row: str) -> None:
        """Produce more, run the exporter's DAG as the next scheduled run, and check the totals."""
        with connections(**self.conns):
            path = write_exporter(
                name=self.name,
                stream=self.topic,
                data_connector="dc",
                path_prefix=self.prefix,
                include_existing_events=True,
            )
            self.kafka.produce(self.topic, seq_events(self.produced, 300))
            self.produced += 300
            # a run after a failed one first replays the failed plan; the run after it catches up
            for _ in range(2):
                assert run_exporter(path).state == "success"
                if self.kafka.committed(self.group, self.topic) == self.kafka.end_offsets(self.topic):
                    break
        check_exactly_once(row, self.kafka, self.s3, self.prefix, self.topic, self.group, self.produced)


def test_storage_stopped_during_upload_then_back(kafka: Any, s3_target: Any, proxy: TcpProxy) -> None:
    """Fault 2: the endpoint goes away 1 MiB into the upload; the task fails clearly; the retry exports all."""
    sc = Scenario(kafka, s3_target, proxy, "stopped", 10_000, 250)  # ~3 MB: one PutObject
    with connections(**sc.conns):
        spec = sc.spec()
        proxy.on_upstream_bytes = (1 * MiB, proxy.stop)
        started = time.monotonic()
        with pytest.raises(StorageError) as err:
            execute(spec)
        took = time.monotonic() - started
        message = str(err.value)
        assert "data connector 'dc' (strm_s3) could not write s3://" in message
        assert "unreachable" in message and proxy.endpoint in message, message
        assert took < 60, f"bounded retries took {took:.0f}s"
        sc.assert_nothing_committed_nor_written()

        proxy.start()  # the storage is back: Airflow's retry runs the same partition set
        result = execute(spec)
        assert result["committed"] and result["events"] == 10_000
    sc.finish("storage stopped mid-upload, retry")


def test_storage_slow(kafka: Any, s3_target: Any, proxy: TcpProxy) -> None:
    """Fault 3a: every chunk delayed: slower, but complete and exact."""
    sc = Scenario(kafka, s3_target, proxy, "slow", 5_000, 250)
    proxy.delay = 0.01
    with connections(**sc.conns):
        result = execute(sc.spec())
        assert result["committed"] and result["events"] == 5_000
    proxy.delay = 0
    sc.finish("storage slow (10 ms per chunk)")


def test_storage_cuts_once_then_recovers(kafka: Any, s3_target: Any, proxy: TcpProxy) -> None:
    """Fault 3b: one connection cut mid-upload: the SDK's retry resends it; the task succeeds, exact."""
    sc = Scenario(kafka, s3_target, proxy, "cutonce", 10_000, 250)

    def cut_once() -> None:
        proxy.cut_after = 0  # the connection carrying the current request is reset...
        proxy.on_upstream_bytes = (proxy.upstream_bytes + 1, lambda: setattr(proxy, "cut_after", None))

    proxy.on_upstream_bytes = (1 * MiB, cut_once)
    with connections(**sc.conns):
        result = execute(sc.spec())
        assert result["committed"] and result["events"] == 10_000
    assert proxy.cuts >= 1
    sc.finish("storage cuts a connection once")


@pytest.mark.usefixtures("fast_timeouts")
@pytest.mark.parametrize("fault", ["cuts every connection", "hangs"])
def test_storage_keeps_failing(kafka: Any, s3_target: Any, proxy: TcpProxy, fault: str) -> None:
    """Fault 3c: bounded retries with backoff, then a clear failure; no partial object; the retry exports all."""
    sc = Scenario(kafka, s3_target, proxy, "flaky", 10_000, 250)
    with connections(**sc.conns):
        spec = sc.spec()
        if fault == "hangs":
            proxy.on_upstream_bytes = (proxy.upstream_bytes + 512 * 1024, lambda: setattr(proxy, "hang", True))
        else:
            proxy.on_upstream_bytes = (
                proxy.upstream_bytes + 512 * 1024,
                lambda: setattr(proxy, "cut_after", 64 * 1024),
            )
        started = time.monotonic()
        with pytest.raises(StorageError) as err:
            execute(spec)
        took = time.monotonic() - started
        assert "data connector 'dc' (strm_s3) could not write s3://" in str(err.value)
        assert took < 90, f"bounded retries took {took:.0f}s"
        sc.assert_nothing_committed_nor_written()

        proxy.hang, proxy.cut_after = False, None
        assert execute(spec)["committed"]
    sc.finish(f"storage {fault}, retry")


def test_credentials_revoked_between_runs(kafka: Any, s3_target: Any, proxy: TcpProxy) -> None:
    """Fault 5: the policy is removed between runs: the run fails with AccessDenied; restored, it catches up."""
    sc = Scenario(kafka, s3_target, proxy, "revoked", 2_000, 40)
    user = s3_target.user_for(sc.prefix)
    iam = s3_target.client("iam")
    policy = iam.get_user_policy(UserName=user["UserName"], PolicyName="strm-bucket-write-access")["PolicyDocument"]
    with connections(**sc.conns):
        path = write_exporter(
            name=sc.name, stream=sc.topic, data_connector="dc", path_prefix=sc.prefix, include_existing_events=True
        )
        assert run_exporter(path).state == "success"
        iam.delete_user_policy(UserName=user["UserName"], PolicyName="strm-bucket-write-access")
        try:
            kafka.produce(sc.topic, seq_events(2_000, 1_000, 40))
            sc.produced += 1_000
            with pytest.raises(StorageError, match="AccessDenied") as err:
                execute(sc.spec())
            assert "data connector 'dc' (strm_s3)" in str(err.value)
            before = kafka.committed(sc.group, sc.topic)
            assert run_exporter(path).state == "failed"
            assert kafka.committed(sc.group, sc.topic) == before
        finally:
            iam.put_user_policy(
                UserName=user["UserName"],
                PolicyName="strm-bucket-write-access",
                PolicyDocument=policy if isinstance(policy, str) else __import__("json").dumps(policy),
            )
    sc.finish("credentials revoked between runs, restored")
