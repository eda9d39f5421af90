"""Events per second one export task moves to each storage kind (figures, not assertions).

``.venv/bin/python bench/storage_kinds.py [--events N]`` starts the broker and, one after another,
moto S3, SeaweedFS, fake-gcs-server and Azurite on 127.0.0.1, produces ``N``
clickstream events of about 600 bytes over 8 partitions once, and times one ``KafkaToStorageOperator.execute`` of the
whole backlog into each (read, upload, commit). Every kind reads the same backlog with its own
consumer group. The emulators are not the clouds: compare kinds on this machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

from bench.backlog import PARTITIONS, TOPIC, produce
from devstack import SERVERS, free_port, start_storage
from devstack.airflow import conn_env
from devstack.kafka import Broker, start_broker

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--kinds", default=",".join(SERVERS))
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="strm-kinds-airflow-"))
    from strm_provider.hooks.kafka import StrmKafkaHook
    from strm_provider.offsets import plan_stream
    from strm_provider.operators import KafkaToStorageOperator
    from strm_provider.planning import PlanRequest

    rows = []
    with tempfile.TemporaryDirectory(prefix="strm-kinds-") as tmp, contextlib.ExitStack() as stack:
        work, port = Path(tmp), free_port()
        (work / "kafka").mkdir()
        stack.enter_context(start_broker(work / "kafka", port))
        broker = Broker(port, work / "kafka")
        stack.callback(broker.reset_clients)  # close the admin client before the broker stops
        broker.create_topic(TOPIC, PARTITIONS)
        value_bytes = produce(broker.bootstrap, args.events)
        os.environ[conn_env("bench_kafka")] = json.dumps(broker.connection())
        for kind in args.kinds.split(","):
            with start_storage(kind, work / kind) as target:
                os.environ[conn_env("bench_dc")] = json.dumps(target.connection("kinds"))
                group = f"strm-exporter-kinds-{kind}"
                consumer = StrmKafkaHook("bench_kafka").consumer(group)
                try:  # the DAG's plan task, untimed
                    [work] = plan_stream(consumer, PlanRequest(TOPIC, include_existing_events=True)).sets
                finally:
                    consumer.close()
                operator = KafkaToStorageOperator(
                    task_id="export",
                    stream=TOPIC,
                    storage_conn_id="bench_dc",
                    path_prefix="kinds",
                    group_id=group,
                    kafka_conn_id="bench_kafka",
                    partition_set=work.to_xcom(),
                )
                began = time.perf_counter()
                summary = operator.execute(context={"run_id": "bench"})  # type: ignore[arg-type]
                seconds = time.perf_counter() - began
                rows.append((kind, summary["events"], seconds, value_bytes / seconds / 1e6))
                print(
                    f"{kind:>14}: {summary['events']:,} events in {seconds:.1f}s = "
                    f"{summary['events'] / seconds:,.0f} events/s, {rows[-1][3]:.1f} MB/s",
                    flush=True,
                )
    print("\n| storage kind | events | seconds | events/s | MB/s |\n|---|---:|---:|---:|---:|")
    for kind, count, seconds, mbps in rows:
        print(f"| {kind} | {count:,} | {seconds:.1f} | {count / seconds:,.0f} | {mbps:.1f} |")


if __name__ == "__main__":
    main()
