"""One DAG per exporter config file.

Broken config files must not break the other exporters' DAGs. Airflow records import errors per
Python file, so every broken config is reported through one placeholder DAG whose validation
fails: Airflow files its message (naming each YAML file and field) as an import error of the DAG
file, and bags every valid exporter's DAG as usual.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset

from strm_provider.config import ExporterConfig, exporters_dir, load_exporters
from strm_provider.operators import KafkaExportPlanOperator, KafkaToStorageOperator

START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
log = logging.getLogger(__name__)


class ExporterConfigErrors(ValueError):
    """Raised (at DAG bagging) to report broken exporter files as an import error."""


class _BrokenExporters(DAG):
    """Placeholder carrying the config errors; its ``validate`` raises them."""

    def validate(self) -> None:
        raise ExporterConfigErrors(self.doc_md or "invalid exporter config")


def asset_uri(cfg: ExporterConfig) -> str:
    """URI of the Asset an exporter's export task updates: ``s3://bucket/prefix``, ``gs://...``, ``wasbs://...``.

    ``asset_uri`` in the YAML wins (no lookup at all). Otherwise the data connector is looked up at
    DAG-parse time; if that fails (connection not created yet, secrets backend down) the DAG must still
    load, so it falls back to ``strm://<data_connector>/<prefix>`` and says so in the parse log.
    """
    if cfg.asset_uri:
        return cfg.asset_uri
    try:
        from strm_provider.hooks import storage_hook

        return storage_hook(cfg.data_connector).asset_uri(cfg.path_prefix)
    except Exception as err:
        log.warning(
            "exporter %s: data connector %r not resolvable at parse time (%s); Asset falls back to strm://",
            cfg.name,
            cfg.data_connector,
            type(err).__name__,
        )
        return f"strm://{cfg.data_connector}/{cfg.path_prefix}".rstrip("/")


def build_dag(cfg: ExporterConfig, source: Path | None = None) -> DAG:
    """The DAG of one exporter: ``plan`` -> ``export`` mapped over partition sets."""
    doc = (
        f"Exports Kafka stream `{cfg.stream}` to data connector `{cfg.data_connector}`"
        + (f" under `{cfg.path_prefix}/`" if cfg.path_prefix else "")
        + f", every {cfg.interval}s."
        + (f"\n\nConfig: `{source}`" if source else "")
    )
    with DAG(
        dag_id=cfg.dag_id,
        schedule=timedelta(seconds=cfg.interval),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        tags=["strm"],
        doc_md=doc,
        default_args={"retries": cfg.retries, "retry_delay": timedelta(seconds=cfg.retry_delay)},
    ) as dag:
        common: dict[str, Any] = {
            "stream": cfg.stream,
            "data_connector": cfg.data_connector,
            "group_id": cfg.group_id,
            "path_prefix": cfg.path_prefix,
            "kafka_conn_id": cfg.kafka_connection,
        }
        plan = KafkaExportPlanOperator(
            task_id="plan",
            partition_sets=cfg.partition_sets,
            include_existing_events=cfg.include_existing_events,
            **common,
        )
        KafkaToStorageOperator.partial(
            task_id="export",
            on_invalid_event=cfg.on_invalid_event,
            max_file_bytes=cfg.max_file_bytes,
            max_file_events=cfg.max_file_events,
            outlets=[Asset(asset_uri(cfg))],
            **common,
        ).expand(partition_set=plan.output)
    return dag


def build_dags(folder: Path | None = None, *, beside: Path | None = None) -> dict[str, DAG]:
    """DAGs of every exporter in ``folder`` (default: :func:`exporters_dir`), by DAG id."""
    result = load_exporters(folder or exporters_dir(beside))
    dags = {cfg.dag_id: build_dag(cfg, path) for path, cfg in result.configs.values()}
    if result.errors:
        broken = _BrokenExporters(
            dag_id="strm_exporter_config_errors",
            schedule=None,
            start_date=START_DATE,
            doc_md="\n".join(result.errors),
            tags=["strm"],
        )
        dags[broken.dag_id] = broken
    return dags
