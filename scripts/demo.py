"""``make demo``: one real export on the embedded defaults, start to finish, then everything stops.

Starts a broker (by default the embedded Kafka-compatible broker of the ``noida-db`` wheel, which
needs nothing but Python; ``--broker apache`` for Apache Kafka, which needs Java 17+) and a storage
server on 127.0.0.1, creates the 5-partition topic ``demo``, produces 10,000 random clickstream
events, runs one export through Airflow (``airflow dags test``), lists the bucket like ``aws s3 ls``
and prints the first event of one file.

``--format`` other than ``json`` also starts a Schema Registry (:mod:`devstack.schema_registry`), produces
the same events as Avro or Protobuf records with confluent-kafka's serializers (the Confluent wire format
producers write), gives the Kafka connection ``schema_registry_url`` and the exporter ``value_format`` and
``file_format``; Parquet files are then downloaded and queried with DuckDB (count, rows, column types).
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
from typing import Any

from devstack import SERVERS, free_port, start_storage
from devstack.airflow import airflow_env, conn_env
from devstack.kafka import Broker, start_broker, start_embedded_broker
from devstack.schema_registry import SchemaRegistry
from strm_provider.cli.streams import random_event
from strm_provider.naming import is_data_file

REPO = Path(__file__).resolve().parent.parent

CONNECTOR = {"s3": "s3", "s3-compatible": "s3", "gcs": "gcs", "azure": "azure"}
EVENTS = 10_000
#: ``--format``: the records' encoding in Kafka (the exporter's ``value_format``) and the files' ``file_format``
FORMATS = {
    "json": ("json", "jsonl"),
    "avro-jsonl": ("avro", "jsonl"),
    "avro-parquet": ("avro", "parquet"),
    "protobuf-jsonl": ("protobuf", "jsonl"),
    "protobuf-parquet": ("protobuf", "parquet"),
}
#: the demo's clickstream events as an Avro record (what a producer registers under ``demo-value``)
CLICK_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "ClickEvent",
    "namespace": "demo",
    "fields": [
        {
            "name": "strmMeta",
            "type": {
                "type": "record",
                "name": "StrmMeta",
                "fields": [
                    {"name": "schemaId", "type": "string"},
                    {"name": "nonce", "type": "int"},
                    {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                    {"name": "keyLink", "type": {"type": "string", "logicalType": "uuid"}},
                    {"name": "billingId", "type": "string"},
                    {"name": "consentLevels", "type": {"type": "array", "items": "int"}},
                ],
            },
        },
        {"name": "producerSessionId", "type": "string"},
        {"name": "url", "type": "string"},
        {"name": "eventType", "type": "string"},
        {"name": "referrer", "type": "string"},
        {"name": "userAgent", "type": "string"},
        {"name": "conversion", "type": "int"},
        {
            "name": "customer",
            "type": {"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "string"}]},
        },
        {"name": "abTests", "type": {"type": "array", "items": "string"}},
    ],
}
#: the same events as Protobuf messages (proto3, package ``demo``): message -> [(field, type, repeated)]
CLICK_PROTO: dict[str, list[tuple[str, str, bool]]] = {
    "StrmMeta": [
        ("schemaId", "string", False),
        ("nonce", "int32", False),
        ("timestamp", "int64", False),
        ("keyLink", "string", False),
        ("billingId", "string", False),
        ("consentLevels", "int32", True),
    ],
    "Customer": [("id", "string", False)],
    "ClickEvent": [
        ("strmMeta", "StrmMeta", False),
        ("producerSessionId", "string", False),
        ("url", "string", False),
        ("eventType", "string", False),
        ("referrer", "string", False),
        ("userAgent", "string", False),
        ("conversion", "int32", False),
        ("customer", "Customer", False),
        ("abTests", "string", True),
    ],
}
#: what DuckDB shows of the Parquet files: a few rows of these columns
SAMPLE_QUERY = (
    "SELECT strmMeta.timestamp, eventType, url, conversion, abTests FROM read_parquet('{files}') "
    "ORDER BY strmMeta.nonce LIMIT 5"
)
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


def click_message_class() -> Any:
    """The ``demo.ClickEvent`` Protobuf class of :data:`CLICK_PROTO`, in a descriptor pool of its own."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="demo/click.proto", package="demo", syntax="proto3")
    for name, fields in CLICK_PROTO.items():
        message = fdp.message_type.add(name=name)
        for number, (fname, kind, repeated) in enumerate(fields, start=1):
            label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            entry = message.field.add(name=fname, number=number, label=label)
            if kind in CLICK_PROTO:
                entry.type, entry.type_name = field.TYPE_MESSAGE, f".demo.{kind}"
            else:
                entry.type = getattr(field, f"TYPE_{kind.upper()}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("demo.ClickEvent"))


def produce_framed(broker: Broker, registry: SchemaRegistry, value_format: str, events: list[dict[str, Any]]) -> None:
    """``events`` into topic ``demo`` as a producer writes them: confluent-kafka's Avro or Protobuf serializer
    registers the schema under ``demo-value`` and frames each record with its id (round-robin over partitions)."""
    from confluent_kafka import Producer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = registry.client()
    if value_format == "avro":
        from confluent_kafka.schema_registry.avro import AvroSerializer

        serializer = AvroSerializer(client, json.dumps(CLICK_AVRO))
        values: list[Any] = events
    else:
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
        from google.protobuf import json_format

        message_class = click_message_class()
        serializer = ProtobufSerializer(message_class, client, {"use.deprecated.format": False})
        values = [json_format.ParseDict(event, message_class()) for event in events]
    ctx = SerializationContext("demo", MessageField.VALUE)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors: list[Any] = []
    partitions = len(broker.partitions("demo"))
    for index, value in enumerate(values):
        producer.produce(
            "demo", value=serializer(value, ctx), partition=index % partitions,
            on_delivery=lambda err, _msg: err is not None and errors.append(err),
        )  # fmt: skip
        producer.poll(0)
    if producer.flush(60) or errors:
        raise SystemExit(f"producing failed: {errors[0] if errors else 'records left undelivered after 60 s'}")


def show_parquet(objects: dict[str, bytes], exported: list[str], folder: Path) -> int:
    """Download the Parquet files into ``folder`` and print what DuckDB reads of them; return its count."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    for key in exported:
        (folder / key.rpartition("/")[2]).write_bytes(objects[key])
    shown = folder.relative_to(REPO)
    print(f"\n(the {len(exported)} .parquet file(s) downloaded into {shown}/)")
    con = duckdb.connect()
    queries = [
        "SELECT count(*) AS events FROM read_parquet('{files}')",
        SAMPLE_QUERY,
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{files}'))",
    ]
    for query in queries:
        print(f'\n$ duckdb -c "{query.format(files=f"{shown}/*.parquet")}"', flush=True)
        con.sql(query.format(files=f"{folder}/*.parquet")).show(max_width=200, max_col_width=120)
    counted = con.execute(queries[0].format(files=f"{folder}/*.parquet")).fetchall()
    return int(counted[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=sorted(SERVERS), default="s3")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--broker", choices=["embedded", "apache"], default="embedded")
    parser.add_argument(
        "--format", choices=list(FORMATS), default="json",
        help="json: JSON events as JSON Lines; avro-*, protobuf-*: Schema Registry records as JSON Lines or Parquet",
    )  # fmt: skip
    args = parser.parse_args()
    value_format, file_format = FORMATS[args.format]

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
        registry = None
        if value_format != "json":
            with step("starting the Schema Registry on 127.0.0.1"):
                registry = stack.enter_context(SchemaRegistry(work / "schema-registry"))
                print(f"    Schema Registry {registry.url}")

        encoding = f"{'Avro' if value_format == 'avro' else 'Protobuf'} records (subject demo-value)"
        with step(
            f"creating stream 'demo' (5 partitions) and producing {args.events:,} random events"
            + (f" as {encoding}" if registry else "")
        ):
            broker.create_topic("demo", 5)
            rng = random.Random(42)
            if registry is None:
                broker.produce("demo", (random_event(rng) for _ in range(args.events)))
            else:
                produce_framed(broker, registry, value_format, [random_event(rng) for _ in range(args.events)])

        connector = CONNECTOR[args.storage]
        env.update(os.environ)  # what the storage server set up (e.g. Azurite's CA bundle)
        kafka = broker.connection()
        if registry is not None:
            kafka["extra"]["schema_registry_url"] = registry.url
        env[conn_env("strm_kafka_default")] = json.dumps(kafka)
        # the S3 servers' key holds the README's minimal policy, which names the endings it may write
        policy = {"endings": (".parquet",)} if file_format == "parquet" and connector == "s3" else {}
        env[conn_env(connector)] = json.dumps(storage.connection("events", **policy))
        exporter = (
            f"stream: demo\ndata_connector: {connector}\npath_prefix: events\ninterval: 60s\n"
            "include_existing_events: true\n"
        )
        if registry is not None:
            exporter += f"value_format: {value_format}\nfile_format: {file_format}\n"
            print(f"    exporter {connector}-demo.yaml:")
            print("".join(f"      {line}\n" for line in exporter.splitlines()), end="")
        (work / "exporters" / f"{connector}-demo.yaml").write_text(exporter)
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
        if file_format == "parquet":
            total = show_parquet(objects, exported, work / "download")
        else:
            lines = objects[exported[0]].splitlines()
            total = sum(len(objects[k].splitlines()) for k in exported)
            print(f"\n$ {cat.format(bucket=storage.bucket, key=exported[0])} | head -1")
            print(lines[0].decode())
            print("\n(the same event pretty-printed; in the file it is the one line above)")
            print(json.dumps(json.loads(lines[0]), indent=2))
        print(f"\n{total:,} events exported in {len(exported)} file(s); {args.events:,} produced.")
        if total != args.events:
            raise SystemExit(f"expected {args.events} events in the bucket, found {total}")
    servers = "broker, Schema Registry and storage server" if registry else "broker and storage server"
    print(f"demo finished in {time.monotonic() - began:.1f}s; {servers} stopped.")


if __name__ == "__main__":
    main()
