"""One DAG per exporter config file.

A broken file must cost only its own exporter. Raising from the DAG file would file an import
error against the whole Python file, and Airflow then stops scheduling every DAG in it; so a
broken file gets a DAG of its own instead, ``strm_export_<file name>`` (the exporter's usual DAG
when the file is ``<name>.yaml``), whose one task fails every interval with the file, the field
and the reason. It shows as a failing exporter in the UI and in failure alerts, its offsets are
left untouched, and fixing the file turns it back into the exporter at the next parse.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, AirflowFailException, get_parsing_context, task

from strm_provider.config import (
    DAG_ID_PREFIX,
    BrokenExporter,
    ConfigError,
    ExporterConfig,
    LoadResult,
    exporters_dir,
    load_exporter,
    load_exporters,
    operator_arguments,
)
from strm_provider.naming import fixed_part
from strm_provider.operators import KafkaExportPlanOperator, KafkaToStorageOperator
from strm_provider.version_compat import exported_asset

START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
#: what every exporter's DAG shares, a broken file's included: it runs on its interval from the moment
#: it appears, one run at a time, without catching up
EXPORTER_DAG = {
    "start_date": START_DATE,
    "catchup": False,
    "max_active_runs": 1,
    "is_paused_upon_creation": False,
    "tags": ["strm"],
}


#: the exporter file's fields both operators of its DAG take
_SHARED_FIELDS = {
    "stream_pattern",
    "data_connector",
    "bucket",
    "path_prefix",
    "kafka_connection",
    "max_file_bytes",
    "max_file_events",
    "compression",
    "value_format",
    "file_format",
    "value_schema",
    "name_style",
    "format",
}


def asset_uri(cfg: ExporterConfig) -> str:
    """URI of the Asset an exporter's export task updates.

    ``asset_uri`` from the YAML (``strm create batch-exporter`` writes the connector's
    ``s3://bucket/prefix``, ``gs://...`` or ``wasbs://...`` there), else ``strm://<data_connector>/<prefix>``.
    Never a connection lookup at parse time: a secrets backend that fails for a moment would change
    the URI, and DAGs scheduled on it would stop firing.
    """
    return cfg.asset_uri or f"strm://{cfg.data_connector}/{fixed_part(cfg.path_prefix)}".rstrip("/")


def build_dag(cfg: ExporterConfig, source: Path | None = None) -> DAG:
    """The DAG of one exporter: ``export`` alone, which plans its run, for one partition set; else ``plan`` ->
    ``export`` mapped over the partition sets."""
    what = f"streams `{cfg.describe_streams()}`" if cfg.several_streams else f"stream `{cfg.stream}`"
    doc = (
        f"Exports Kafka {what} to data connector `{cfg.data_connector}`"
        + (f" under `{cfg.path_prefix}/`" if cfg.path_prefix else "")
        + f", every {cfg.interval}s."
        + (f"\n\nConfig: `{source}`" if source else "")
    )
    with DAG(
        dag_id=cfg.dag_id,
        schedule=timedelta(seconds=cfg.interval),
        doc_md=doc,
        **EXPORTER_DAG,
        default_args={"retries": cfg.retries, "retry_delay": timedelta(seconds=cfg.retry_delay)},
    ) as dag:
        shared = operator_arguments(cfg.model_dump(include=_SHARED_FIELDS))
        shared |= {"stream": cfg.source, "group_id": cfg.group_id, "exporter": cfg.name}
        export = {"on_invalid_event": cfg.on_invalid_event, "outlets": [exported_asset(asset_uri(cfg))]}
        if cfg.partition_sets == 1:
            # one task plans and exports: a task fewer per run, and the plan is recorded before anything is
            # uploaded either way, so a retry replays it as a separate export task would
            KafkaToStorageOperator(
                task_id="export", include_existing_events=cfg.include_existing_events, **export, **shared
            )
            return dag
        # the plan fixes how files are cut and named, and the export tasks take it from there
        plan = KafkaExportPlanOperator(
            task_id="plan",
            partition_sets=cfg.partition_sets,
            include_existing_events=cfg.include_existing_events,
            **shared,
        )
        KafkaToStorageOperator.partial(task_id="export", **export, **shared).expand(partition_set=plan.output)
    return dag


def build_broken_dag(broken: BrokenExporter, dag_id: str) -> DAG:
    """The DAG standing in for a broken exporter file: its ``check_config`` task fails with the reason."""
    with DAG(
        dag_id=dag_id,
        description=broken.error[:400],
        schedule=timedelta(seconds=broken.interval),
        **EXPORTER_DAG,
        doc_md=f"**This exporter file is invalid; nothing is exported until it is fixed.**\n\n```\n{broken.error}\n```",
    ) as dag:

        @task(task_id="check_config", retries=0)
        def check_config(error: str) -> None:
            raise AirflowFailException(f"invalid exporter file: {error}")

        check_config(broken.error)
    return dag


def broken_dag_id(path: Path, taken: set[str]) -> str:
    """``strm_export_<stem>``; with the suffix, then an ``invalid_`` mark, when a valid exporter has that id."""
    for key in (path.stem, path.name, f"invalid_{path.name}"):
        dag_id = DAG_ID_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", key)
        if dag_id not in taken:
            break
    return dag_id


def broken_dag_ids(result: LoadResult) -> dict[Path, str]:
    """The DAG id of each broken file's stand-in: valid exporters keep theirs, then each broken file in turn
    takes :func:`broken_dag_id` (``strm`` names the same DAGs as the DAG file)."""
    taken = {loaded.config.dag_id for loaded in result.configs.values()}
    ids: dict[Path, str] = {}
    for broken in result.broken:
        ids[broken.path] = broken_dag_id(broken.path, taken)
        taken.add(ids[broken.path])
    return ids


def build_dags(folder: Path | None = None, *, beside: Path | None = None) -> dict[str, DAG]:
    """DAGs of every exporter in ``folder`` (default: :func:`exporters_dir`), by DAG id, broken ones included.

    When Airflow parses the file to run one task, only that task's exporter is built
    (:func:`own_dag`): a task's start then costs the same with one exporter file or hundreds.
    """
    folder = folder or exporters_dir(beside)
    own = own_dag(folder, get_parsing_context().dag_id)
    if own is not None:
        return {own.dag_id: own}
    result = load_exporters(folder)
    dags = {cfg.dag_id: build_dag(cfg, path) for path, cfg in result.configs.values()}
    ids = broken_dag_ids(result)
    for broken in result.broken:
        dags[ids[broken.path]] = build_broken_dag(broken, ids[broken.path])
    return dags


def own_dag(folder: Path, dag_id: str | None) -> DAG | None:
    """The DAG ``dag_id`` from its own file alone, or ``None`` when every file must be read to tell.

    ``strm_export_<name>`` belongs to ``<name>.yaml`` (or ``.yml``) whenever that file is valid and names
    ``<name>``: such a file keeps its name against any other claiming it (:func:`load_exporters`). A broken
    file's stand-in, or an exporter whose file is named otherwise, needs the whole folder.
    """
    if not dag_id or not dag_id.startswith(DAG_ID_PREFIX):
        return None
    name = dag_id.removeprefix(DAG_ID_PREFIX)
    for path in (folder / f"{name}.yaml", folder / f"{name}.yml"):
        if not path.is_file():
            continue
        try:
            cfg = load_exporter(path)
        except ConfigError:
            return None
        return build_dag(cfg, path) if cfg.name == name else None
    return None
