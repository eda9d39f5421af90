"""What differs between the Airflow lines this provider supports and ``airflow.providers.common.compat`` does
not cover: the one place that asks which Airflow runs (as each official provider's ``version_compat``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from typing import Any
from urllib.parse import SplitResult

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


#: schemes of the stores an exporter writes to, and what their providers' Asset URI handlers do: ``s3`` (Amazon)
#: and ``gs`` (Google) check that the URI names a bucket; the Azure schemes and the provider's own ``strm`` have
#: no handler
_BUCKET_CHECKED = frozenset({"s3", "gs"})
_NOT_HANDLED = frozenset({"wasb", "wasbs", "abfs", "abfss", "strm"})


def _store_uri_normalizer(lookup: Callable[[str], Any]) -> Callable[[str], Any]:
    """Airflow's lookup of a scheme's URI normalizer, answering the exporters' schemes itself."""

    def normalizer(scheme: str) -> Any:
        if scheme in _BUCKET_CHECKED:
            return partial(_bucket_named, scheme)
        if scheme in _NOT_HANDLED:
            return None
        return lookup(scheme)

    return normalizer


def _bucket_named(scheme: str, uri: SplitResult) -> SplitResult:
    if not uri.netloc:
        raise ValueError(f"URI format {scheme}:// must contain a bucket name")
    return uri


def exported_asset(uri: str) -> Any:
    """``Asset(uri)`` (``Dataset`` on Airflow 2) for the URI an export task updates, equal to what Airflow makes.

    Airflow normalizes an Asset's URI with its scheme's handler, and finds that handler by importing the Asset
    module of every installed provider that declares one (Amazon's imports boto3 and the S3 hook, Google's the
    GCS client): about 0.5 CPU s in every task process, which parses its DAG file, more than the export of a
    few hundred events. For the schemes of the stores an exporter writes to, what those handlers do is known
    (:data:`_BUCKET_CHECKED`, :data:`_NOT_HANDLED`; the tests compare the result with ``Asset(uri)`` on every
    Airflow line), so the lookup answers them without the import; any other scheme goes to Airflow's lookup.
    """
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.definitions import asset as module

        cls = module.Asset
    else:
        from airflow import datasets as module

        cls = module.Dataset
    lookup = getattr(module, "_get_uri_normalizer", None)
    if lookup is None:  # an Airflow that finds normalizers otherwise: its own way
        return cls(uri)
    module._get_uri_normalizer = _store_uri_normalizer(lookup)
    try:
        return cls(uri)
    finally:
        module._get_uri_normalizer = lookup
