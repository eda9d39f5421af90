"""Example: a DAG that runs whenever an exporter has written new files.

Each exporter's ``export`` task declares the Asset of its target (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``wasbs://...``), so a downstream DAG schedules on that Asset instead of on
a clock: it runs after an export, never before the files exist. This one is scheduled on the demo
exporter of ``make up`` (bucket ``strmprivacy-export-demo``, prefix ``events``); set
``STRM_DOWNSTREAM_ASSET`` (or edit the URI) to follow your own exporter, whose Asset URI is shown
on its DAG's page in the UI.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

EXPORTED = Asset(os.environ.get("STRM_DOWNSTREAM_ASSET", "s3://strmprivacy-export-demo/events"))

with DAG(
    dag_id="example_strm_downstream",
    schedule=[EXPORTED],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["strm", "example"],
    doc_md=__doc__,
):

    @task
    def report_exports(**context: Any) -> dict[str, Any]:
        """Log which exports triggered this run; a real DAG would load the new files somewhere."""
        # Airflow 2 calls Assets Datasets
        triggering = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        events = [event for batch in triggering.values() for event in batch]
        for event in events:
            print(f"export {event.source_dag_id}/{event.source_run_id} updated {EXPORTED.uri} at {event.timestamp}")
        return {"asset": EXPORTED.uri, "exports": len(events)}

    report_exports()
