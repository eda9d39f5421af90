"""What differs between the Airflow lines this provider supports and ``airflow.providers.common.compat`` does
not cover: the one place that asks which Airflow runs (as each official provider's ``version_compat``)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from packaging.version import Version

AIRFLOW_VERSION = Version(version("apache-airflow"))
AIRFLOW_V_3_0_PLUS = AIRFLOW_VERSION.release >= (3, 0)
AIRFLOW_V_3_1_PLUS = AIRFLOW_VERSION.release >= (3, 1)


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
