"""``make demo``: one real export on the embedded defaults, start to finish, then everything stops.

Starts a broker (by default the embedded Kafka-compatible broker of the ``noida-db`` wheel, which
needs nothing but Python; ``--broker apache`` for Apache Kafka, which needs Java 17+) and a storage
server on 127.0.0.1, creates the 5-partition topic ``demo``, produces 10,000 random clickstream
random clickstream events, runs one export through Airflow (``airflow dags test``),
lists the bucket like ``aws s3 ls`` and prints the first event of one file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from devstack import SERVERS, free_port, start_storage
from devstack.airflow import airflow_env, conn_env
from devstack.kafka import Broker, start_broker, start_embedded_broker
from strm_provider.cli.streams import random_event
from strm_provider.naming import is_data_file

REPO = Path(__file__).resolve().parent.parent

CONNECTOR = {"s3": "s3", "s3-compatible": "s3", "gcs": "gcs", "azure": "azure"}
EVENTS = 10_000
#: how a user would list the bucket and print a file, per kind
LISTING = {
    "s3": ("aws s3 ls {bucket}/events/", "aws s3 cp s3://{bucket}/{key} -"),
    "s3-compatible": (
        "aws s3 ls {bucket}/events/ --endpoint-url ...",
        "aws s3 cp s3://{bucket}/{key} - --endpoint-url ...",
    ),
    "gcs": ("gsutil ls -l gs://{bucket}/events/", "gsutil cat gs://{bucket}/{key}"),
    "azure": (
        "az storage blob list -c {bucket} --prefix events/",
        "az storage blob download -c {bucket} -n {key} -f /dev/stdout",
    ),
}


@contextlib.contextmanager
def step(text: str) -> Iterator[None]:
    print(f"==> {text}", flush=True)
    began = time.monotonic()
    yield
    print(f"    done in {time.monotonic() - began:.1f}s", flush=True)


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    binary = str(Path(sys.executable).parent / "airflow")
    done = subprocess.run([binary, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-4000:])
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"airflow {' '.join(args)} failed with exit code {done.returncode}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=sorted(SERVERS), default="s3")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--broker", choices=["embedded", "apache"], default="embedded")
    args = parser.parse_args()

    began = time.monotonic()
    work = REPO / ".demo"
    shutil.rmtree(work, ignore_errors=True)
    (work / "exporters").mkdir(parents=True)
    home = work / "airflow"
    env = {**os.environ, **airflow_env(home, work / "exporters")}
    os.environ.update({k: env[k] for k in ("AIRFLOW_HOME", "STRM_EXPORTERS_DIR")})

    with contextlib.ExitStack() as stack:
        what = "Apache Kafka" if args.broker == "apache" else "the embedded Kafka-compatible broker"
        with step(f"starting {what} and the storage server on 127.0.0.1"):
            data = work / "kafka"
            data.mkdir()
            port = free_port()
            stack.enter_context((start_broker if args.broker == "apache" else start_embedded_broker)(data, port))
            broker = Broker(port, data)
            stack.callback(broker.reset_clients)
            storage = stack.enter_context(start_storage(args.storage, work / "storage"))
            print(f"    broker {broker.bootstrap}, {args.storage} bucket '{storage.bucket}'")

        with step(f"creating stream 'demo' (5 partitions) and producing {args.events:,} random events"):
            broker.create_topic("demo", 5)
            rng = random.Random(42)
            broker.produce("demo", (random_event(rng) for _ in range(args.events)))

        connector = CONNECTOR[args.storage]
        env.update(os.environ)  # what the storage server set up (e.g. Azurite's CA bundle)
        env[conn_env("strm_kafka_default")] = json.dumps(broker.connection())
        env[conn_env(connector)] = json.dumps(storage.connection("events"))
        (work / "exporters" / f"{connector}-demo.yaml").write_text(
            f"stream: demo\ndata_connector: {connector}\npath_prefix: events\ninterval: 60s\n"
            "include_existing_events: true\n"
        )
        with step("preparing Airflow's metadata database (SQLite)"):
            airflow(env, "db", "migrate")
        with step(f"running one export through Airflow: airflow dags test strm_export_{connector}-demo"):
            airflow(env, "dags", "test", f"strm_export_{connector}-demo")

        objects = storage.objects("events")
        ls, cat = LISTING[args.storage]
        print(f"\n$ {ls.format(bucket=storage.bucket)}")
        now = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        for key in sorted(objects):
            print(f"{now} {len(objects[key]):>10} {key.removeprefix('events/')}")
        exported = [k for k in sorted(objects) if is_data_file(k)]
        if not exported:
            raise SystemExit("no file was exported")
        lines = objects[exported[0]].splitlines()
        total = sum(len(objects[k].splitlines()) for k in exported)
        print(f"\n$ {cat.format(bucket=storage.bucket, key=exported[0])} | head -1")
        print(lines[0].decode())
        print("\n(the same event pretty-printed; in the file it is the one line above)")
        print(json.dumps(json.loads(lines[0]), indent=2))
        print(f"\n{total:,} events exported in {len(exported)} file(s); {args.events:,} produced.")
        if total != args.events:
            raise SystemExit(f"expected {args.events} events in the bucket, found {total}")
    print(f"demo finished in {time.monotonic() - began:.1f}s; broker and storage server stopped.")


if __name__ == "__main__":
    main()
