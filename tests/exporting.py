"""What the end-to-end tests do to an exporter: configure it, run its DAG, read the bucket."""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import yaml

from devstack import opened
from devstack.airflow import conn_env, environ
from strm_provider.config import ExporterConfig
from strm_provider.naming import is_data_file


def connections(**conns: dict[str, Any]) -> AbstractContextManager[None]:
    """Airflow connections given as environment variables (how tasks and hooks find them)."""
    return environ({conn_env(conn_id): json.dumps(conn) for conn_id, conn in conns.items()})


def exporter_group(name: str) -> str:
    """The Kafka consumer group of exporter ``name``, by the product's rule."""
    return ExporterConfig.model_construct(name=name).group_id


def exporter_dag(name: str) -> str:
    """The DAG id of exporter ``name``, by the product's rule."""
    return ExporterConfig.model_construct(name=name).dag_id


def exporters_folder() -> Path:
    return Path(os.environ["STRM_EXPORTERS_DIR"])


def write_exporter(folder: Path | None = None, **fields: Any) -> Path:
    """Write an exporter YAML file (by default where the DAG file reads them, as the CLI does)."""
    folder = folder or exporters_folder()
    fields.setdefault("retry_delay", "1s")  # tests need not wait for production back-off
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{fields.get('name') or fields['data_connector'] + '-' + fields['stream']}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def load_dag(dag_id: str) -> Any:
    """The DAG as Airflow loads it from the project's DAG file."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if dag_id not in bag.dags:
        raise AssertionError(f"{dag_id} not loaded; import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def run_exporter(path: Path) -> Any:
    """Run the exporter's DAG once with ``dag.test()`` (real tasks, real XCom); return the DAG run."""
    from strm_provider.config import load_exporter

    return load_dag(load_exporter(path).dag_id).test()


def data_files(objects: dict[str, bytes]) -> dict[str, bytes]:
    """Exported files only (no validation files, no dead letters)."""
    return {k: v for k, v in objects.items() if is_data_file(k)}


def lines_in(objects: dict[str, bytes]) -> dict[str, list[bytes]]:
    """Each data file's lines (decompressed)."""
    return {key: opened(key, body).splitlines() for key, body in data_files(objects).items()}


def events_in(objects: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for lines in lines_in(objects).values() for line in lines]


def xcom_values(dag_run: Any, task_id: str) -> list[Any]:
    """The XCom return values of ``task_id`` (every map index) in a finished DAG run, from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
        ).all()
        return [XComModel.deserialize_value(row) for row in rows]
