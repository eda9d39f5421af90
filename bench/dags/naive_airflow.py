"""What an Airflow user would write instead of the exporter (baseline (e) of bench/run.py).

``ConsumeFromTopicOperator`` (apache-airflow-providers-apache-kafka) collects the messages into a
local spool file, then ``S3Hook.load_string`` uploads the whole JSONL in one call. It is given every
advantage the operator offers: a batch callback instead of one call per message, and
``max_messages`` set to the backlog so it never waits for ``poll_timeout`` at the end.
Settings come from the environment bench/run.py sets (``BENCH_*``, ``AIRFLOW_CONN_*``).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.providers.apache.kafka.operators.consume import ConsumeFromTopicOperator
from airflow.sdk import DAG, task

SPOOL = os.environ.get("BENCH_SPOOL", "/tmp/bench-naive-spool.jsonl")


def collect(messages: list, path: str) -> None:
    """Append one batch of message values to the spool, one JSON document per line."""
    with open(path, "ab") as out:
        out.write(b"".join(m.value() + b"\n" for m in messages))


with DAG("bench_naive_airflow", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["bench"]):
    consume = ConsumeFromTopicOperator(
        task_id="consume",
        kafka_config_id="bench_kafka_naive",
        topics=[os.environ.get("BENCH_TOPIC", "bench")],
        apply_function_batch="naive_airflow.collect",
        apply_function_kwargs={"path": SPOOL},
        max_messages=int(os.environ.get("BENCH_EVENTS", "1000000")),
        max_batch_size=1000,
        commit_cadence="end_of_operator",
    )

    @task
    def upload() -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        text = Path(SPOOL).read_text()
        S3Hook(aws_conn_id="bench_aws").load_string(
            text, key="naive/events.jsonl", bucket_name=os.environ.get("BENCH_BUCKET"), replace=True
        )

    consume >> upload()
