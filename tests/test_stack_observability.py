"""Observability of an exporter's DAG, in-process: the export task's XCom summary and the Asset it updates.

The Celery test checks the same in a real deployment (scheduler, workers, Asset-triggered downstream
DAG); these run in a second and pin the details: summary fields, no secrets, the Asset URI the CLI
pins from the data connector, and that parsing never looks the connector up.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from devstack.airflow import environ
from devstack.moto import REGION
from strm_provider.config import ExporterConfig
from strm_provider.dag_factory import asset_uri, build_dag
from tests.exporting import (
    asset_events,
    connections,
    dags_queued_on,
    load_dag,
    run_exporter,
    write_exporter,
    xcom_values,
)


def outlet_uris(dag: Any) -> list[str]:
    return [outlet.uri for outlet in dag.get_task("export").outlets]


@pytest.mark.compat
def test_export_summary_is_in_xcom_without_secrets_and_the_dag_updates_the_bucket_asset(
    kafka: Any, s3_target: Any
) -> None:
    """Each mapped export task leaves its summary in XCom and an event of the bucket's Asset (a Dataset on
    Airflow 2), which queues a run of the example downstream DAG scheduled on that Asset."""
    topic = kafka.create_topic(f"obs-{uuid.uuid4().hex[:8]}", partitions=3)
    kafka.produce(topic, [{"seq": i} for i in range(30)])
    prefix = f"obs/{topic}"
    uri = f"s3://{s3_target.bucket}/{prefix}"
    conn = s3_target.connection(prefix)
    with connections(strm_kafka_default=kafka.connection(), obs_s3=conn), environ({"STRM_DOWNSTREAM_ASSET": uri}):
        path = write_exporter(
            stream=topic,
            data_connector="obs_s3",
            path_prefix=prefix,
            include_existing_events=True,
            partition_sets=2,
            asset_uri=uri,
        )
        cfg = ExporterConfig.model_validate({"stream": topic, "data_connector": "obs_s3", "path_prefix": prefix})
        assert outlet_uris(load_dag(cfg.dag_id)) == [uri]
        run = run_exporter(path)
    assert str(run.state).endswith("success")
    summaries = xcom_values(run, "export")
    assert len(summaries) == 2
    assert sum(s["events"] for s in summaries) == 30
    files = set(s3_target.objects(prefix))
    for summary in summaries:
        assert summary["bytes"] > 0 and summary["committed"] is True
        assert set(summary["files"]) <= files
        for part in summary["partitions"]:
            assert {"partition", "start", "end", "lag_left"} <= set(part)
            assert part["lag_left"] == 0
        text = json.dumps(summary)
        assert conn["password"] not in text and conn["login"] not in text
    assert asset_events(run) == [(uri, "export", 0), (uri, "export", 1)]
    assert "example_strm_downstream" in dags_queued_on(uri)


def test_the_asset_uri_is_the_pinned_one_or_strm_and_never_a_parse_time_lookup(s3_target: Any) -> None:
    """A connector that resolves now and fails later (a secrets backend's hiccup) must not move the URI."""
    pinned = ExporterConfig(stream="s", data_connector="nowhere", path_prefix="p", asset_uri="s3://pinned/p")
    assert asset_uri(pinned) == "s3://pinned/p"
    loose = ExporterConfig(stream="s", data_connector="dc", path_prefix="a/b")
    with connections(dc=s3_target.connection("a/b")):
        assert outlet_uris(build_dag(loose)) == ["strm://dc/a/b"]
    assert outlet_uris(build_dag(loose)) == ["strm://dc/a/b"]


def test_the_example_downstream_dag_is_scheduled_on_the_demo_exporters_asset() -> None:
    dag = load_dag("example_strm_downstream")
    assert [asset.uri for asset in dag.timetable.asset_condition.objects] == ["s3://strmprivacy-export-demo/events"]


@pytest.mark.compat
def test_openlineage_reads_the_topic_and_writes_the_bucket_prefix() -> None:
    """The export task's OpenLineage datasets, as the OpenLineage provider asks for them after a success."""
    from strm_provider.operators import KafkaToStorageOperator

    kafka = {"conn_type": "strm_kafka", "host": "broker1:9092,broker2:9092"}
    s3 = {"conn_type": "strm_s3", "login": "a", "password": "b", "extra": {"bucket": "my-bucket", "region": REGION}}
    with connections(strm_kafka_default=kafka, dc=s3):
        op = KafkaToStorageOperator(
            task_id="export", stream="clicks", storage_conn_id="dc", group_id="g", path_prefix="p/{date}"
        )
        lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("kafka://broker1:9092", "clicks")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://my-bucket", "p")]
