"""What differs between the Airflow lines this provider supports and ``airflow.providers.common.compat`` does
not cover: the one place that asks which Airflow runs (as each official provider's ``version_compat``)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from packaging.version import Version

AIRFLOW_VERSION = Version(version("apache-airflow"))
AIRFLOW_V_3_0_PLUS = AIRFLOW_VERSION.release >= (3, 0)
AIRFLOW_V_3_1_PLUS = AIRFLOW_VERSION.release >= (3, 1)

#: the DagRun column that orders an exporter's runs by when they were due (Airflow 2 names it execution_date)
DAG_RUN_DUE = "run_after" if AIRFLOW_V_3_0_PLUS else "execution_date"


def xcom_table() -> Any:
    """The ORM class of the XCom table (Airflow 2's ``XCom`` may be a custom backend's class, so its base)."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.xcom import XComModel

        return XComModel
    from airflow.models.xcom import BaseXCom

    return BaseXCom


def xcom_value(row: Any) -> Any:
    """The value of a row of :func:`xcom_table` (Airflow 2 deserializes it as the row loads, as its UI shows it)."""
    if AIRFLOW_V_3_0_PLUS:
        return row.deserialize_value(row)
    return row.value


def read_task_log(ti: Any, try_number: int) -> list[Any] | str:
    """One try's log as Airflow's log reader gives it: structured messages on Airflow 3, the text of the log
    (its lines as the log format wrote them) on Airflow 2."""
    from airflow.utils.log.log_reader import TaskLogReader

    chunks, _ = TaskLogReader().read_log_chunks(ti, try_number, {"download_logs": True})
    if AIRFLOW_V_3_0_PLUS:
        return list(chunks)
    # Airflow 2: one list per try of (host, text) pairs
    return "\n".join(text for per_try in chunks for _host, text in per_try)


def xcom_returns(ti: Any, task_ids: list[str], run_id: str) -> list[Any]:
    """The return values (XCom) of ``task_ids``, every map index, in run ``run_id`` of ``ti``'s DAG: Airflow 3's
    ``xcom_pull`` takes the run, Airflow 2's pulls from the task's own run only, so there the table is read."""
    if AIRFLOW_V_3_0_PLUS:
        return list(ti.xcom_pull(task_ids=task_ids, run_id=run_id, default=None) or [])
    from airflow.models.xcom import XCom
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XCom.get_many(run_id=run_id, dag_ids=ti.dag_id, task_ids=task_ids, key="return_value", session=session)
        # the stored value, as Airflow 2's own xcom_pull reads it (a loaded row holds it deserialized for the UI)
        return [XCom.deserialize_value(row) for row in query.with_entities(XCom.value)]
