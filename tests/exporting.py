"""What the end-to-end tests do to an exporter: configure it, run its DAG, read the bucket."""

from __future__ import annotations

import importlib
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
from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS, AIRFLOW_VERSION


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


#: where Airflow's ``DagBag`` is: ``airflow.dag_processing.dagbag`` from 3.2 on (``airflow.models.dagbag`` keeps a
#: deprecated alias), ``airflow.models.dagbag`` before
DAGBAG_MODULE = "airflow.dag_processing.dagbag" if AIRFLOW_VERSION.release >= (3, 2) else "airflow.models.dagbag"


def dag_bag(folder: str | Path) -> Any:
    """Airflow's ``DagBag`` of ``folder``."""
    return importlib.import_module(DAGBAG_MODULE).DagBag(dag_folder=str(folder))


def load_dag(dag_id: str, *, to_db: bool = False) -> Any:
    """The DAG as Airflow loads it from the project's DAG folder; with ``to_db``, the folder's DAGs written to
    the metadata database as the DAG processor does, where ``dag.test()`` does not do it itself (before 3.1)."""
    # read as the DAG processor reads the folder, with no parsing context: on Airflow 3.1 and 3.2 a dag.test()
    # earlier in this process leaves its DAG's id in the environment, and the DAG file would build that one alone
    for name in ("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "_AIRFLOW_PARSING_CONTEXT_TASK_ID"):
        os.environ.pop(name, None)
    bag = dag_bag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if dag_id not in bag.dags:
        raise AssertionError(f"{dag_id} not loaded; import errors: {bag.import_errors}")
    if to_db and not AIRFLOW_V_3_1_PLUS:
        # an outlet's Asset (Dataset) event needs the Asset in the database (Airflow 3.0 fails the task
        # otherwise, Airflow 2 records no event), and only DAGs the database knows are queued on it
        if AIRFLOW_V_3_0_PLUS:
            from airflow.dag_processing.bundles.manager import DagBundlesManager

            DagBundlesManager().sync_bundles_to_db()
            bag.sync_to_db("dags-folder", None)
        else:
            bag.sync_to_db()
    return bag.dags[dag_id]


def run_exporter(path: Path) -> Any:
    """Run the exporter's DAG once with ``dag.test()`` (real tasks, real XCom); return the DAG run."""
    from strm_provider.config import load_exporter

    return load_dag(load_exporter(path).dag_id, to_db=True).test()


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
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.xcom import XComModel
    else:  # Airflow 2's table model is the configured XCom backend's class
        from airflow.models.xcom import XCom as XComModel

    with create_session() as session:
        rows = session.execute(  # the stored value (Airflow 2 loads a whole row's value for the UI)
            select(XComModel.value)
            .where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
            .order_by(XComModel.map_index)
        ).all()
        return [XComModel.deserialize_value(row) for row in rows]


def _asset_tables() -> tuple[Any, Any, Any, Any]:
    """The Asset table, its events, the queue of DAG runs they trigger, and the events' Asset column (Airflow 2
    calls Assets Datasets)."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel

        return AssetModel, AssetEvent, AssetDagRunQueue, "asset_id"
    from airflow.models.dataset import DatasetDagRunQueue, DatasetEvent, DatasetModel

    return DatasetModel, DatasetEvent, DatasetDagRunQueue, "dataset_id"


def asset_events(dag_run: Any) -> list[tuple[str, str, int]]:
    """The Asset events (Dataset events on Airflow 2) a DAG run's tasks recorded: (URI, task id, map index)."""
    from airflow.utils.session import create_session
    from sqlalchemy import select

    model, event, _, column = _asset_tables()
    with create_session() as session:
        rows = session.execute(
            select(model.uri, event.source_task_id, event.source_map_index)
            .join(model, model.id == getattr(event, column))
            .where(event.source_dag_id == dag_run.dag_id, event.source_run_id == dag_run.run_id)
            .order_by(event.source_map_index)
        ).all()
        return [tuple(row) for row in rows]


def dags_queued_on(uri: str) -> set[str]:
    """The DAGs the scheduler will run for the new events of Asset ``uri`` (its run queue)."""
    from airflow.utils.session import create_session
    from sqlalchemy import select

    model, _, queue, column = _asset_tables()
    with create_session() as session:
        return set(
            session.scalars(
                select(queue.target_dag_id).join(model, model.id == getattr(queue, column)).where(model.uri == uri)
            )
        )
