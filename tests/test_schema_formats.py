"""Avro, Protobuf and JSON Schema topics, produced through a real Schema Registry by confluent-kafka's own
serializers, exported as JSON Lines and as Parquet to each storage kind; Parquet read back by pyarrow and
DuckDB as downstream readers would.

Each test asserts what a user sees: every event exactly once, field by field against what was produced,
the objects' names, and the offsets committed in Kafka.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devstack import StorageTarget
from strm_provider.naming import is_test_object, parse_key
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter, xcom_values
from tests.faults.scenario import unique
from tests.registry_data import (
    RICH_AVRO,
    json_records,
    produce_avro,
    produce_json_schema,
    produce_protobuf,
    rich_avro_records,
    rich_proto_messages,
)

KINDS = {"s3": "s3_target", "s3-compatible": "s3_compatible_target", "gcs": "gcs_target", "azure": "azure_target"}


@pytest.fixture(params=list(KINDS))
def storage(request: pytest.FixtureRequest) -> StorageTarget:
    return request.getfixturevalue(KINDS[request.param])


def kafka_with_registry(kafka: Any, registry: Any) -> dict[str, Any]:
    conn = kafka.connection()
    return {**conn, "extra": {**conn["extra"], "schema_registry_url": registry.url}}


def storage_connection(storage: StorageTarget, prefix: str) -> dict[str, Any]:
    """The data connector under the minimal policy: on S3 (and SeaweedFS's S3) it may write ``.jsonl`` and
    ``.parquet`` only."""
    if storage.kind in ("s3", "s3-compatible"):
        return storage.connection(prefix, endings=(".jsonl", ".parquet"))  # type: ignore[call-arg]
    return storage.connection(prefix)


def parquet_tables(files: dict[str, bytes]) -> list[pa.Table]:
    return [pq.read_table(io.BytesIO(body)) for body in files.values()]


def duckdb_rows(files: dict[str, bytes], folder: Path, query: str) -> list[tuple[Any, ...]]:
    """``query`` over the files downloaded into ``folder`` (as ``t``): what DuckDB reads of them."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, body in files.items():
        (folder / key.rpartition("/")[2]).write_bytes(body)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{folder}/*.parquet')")
    return con.execute(query).fetchall()


def avro_from_json(line: dict[str, Any]) -> dict[str, Any]:
    """A JSON line of an Avro event, read back by the README's mapping into the values fastavro gives."""
    return {
        **line,
        "payload": base64.b64decode(line["payload"]),
        "created_at": dt.datetime.fromisoformat(line["created_at"]),
        "updated_at": dt.datetime.fromisoformat(line["updated_at"]),
        "day": dt.date.fromisoformat(line["day"]),
        "amount": Decimal(line["amount"]),
        "order_uuid": uuid.UUID(line["order_uuid"]),
    }


def avro_from_parquet(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row of an Avro event (pyarrow's values) as fastavro's: maps as dicts, the UUID parsed."""
    return {
        **row,
        "counts": dict(row["counts"]),
        "order_uuid": uuid.UUID(row["order_uuid"]),
    }


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_an_avro_topic_exports_exactly_once(
    kafka: Any, schema_registry: Any, storage: StorageTarget, file_format: str, tmp_path: Path
) -> None:
    topic, prefix = kafka.create_topic(unique("orders"), 3), unique("avro")
    records = rich_avro_records(300, seed=1)
    produce_avro(kafka.bootstrap, schema_registry.client(), topic, records[:200])
    with connections(
        strm_kafka_default=kafka_with_registry(kafka, schema_registry), dc=storage_connection(storage, prefix)
    ):
        path = write_exporter(
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            value_format="avro",
            file_format=file_format,
        )
        assert run_exporter(path).state == "success"
        produce_avro(kafka.bootstrap, schema_registry.client(), topic, records[200:])
        assert run_exporter(path).state == "success"
        assert run_exporter(path).state == "success"  # nothing new: nothing written
        objects = storage.objects(prefix)
    files = data_files(objects)
    assert len(files) == 2 and all(key.endswith(f".{file_format}") for key in files)
    assert {parse_key(key).stream for key in files} == {topic}  # type: ignore[union-attr]
    (validation,) = [key for key in objects if is_test_object(key)]
    by_id = {r["id"]: r for r in records}
    if file_format == "jsonl":
        assert validation.endswith(".jsonl")
        lines = [json.loads(line) for body in files.values() for line in body.splitlines()]
        assert sorted(line["id"] for line in lines) == sorted(by_id)
        for line in lines:
            assert avro_from_json(line) == by_id[line["id"]]
    else:
        assert validation.endswith(".parquet") and pq.read_table(io.BytesIO(objects[validation])).num_rows == 0
        tables = parquet_tables(files)
        schema = tables[0].schema
        assert schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
        assert schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
        assert schema.field("amount").type == pa.decimal128(10, 2)
        assert schema.field("day").type == pa.date32()
        assert schema.field("counts").type == pa.map_(pa.string(), pa.int64())
        assert [f.name for f in schema] == [f["name"] for f in RICH_AVRO["fields"]]
        rows = [row for table in tables for row in table.to_pylist()]
        assert sorted(row["id"] for row in rows) == sorted(by_id)
        for row in rows:
            assert avro_from_parquet(row) == by_id[row["id"]]
        counted = duckdb_rows(
            files,
            tmp_path / "files",
            "SELECT count(*), count(DISTINCT id), sum(amount), typeof(any_value(created_at)), "
            "typeof(any_value(amount)) FROM t",
        )
        assert counted == [(300, 300, sum(r["amount"] for r in records), "TIMESTAMP WITH TIME ZONE", "DECIMAL(10,2)")]
    assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == kafka.end_offsets(topic)


def proto_expected(message: Any) -> dict[str, Any]:
    """What a Protobuf message's event holds (the README's mapping), from the message itself."""
    return {
        "id": message.id,
        "quantity": message.quantity,
        "total_cents": message.total_cents,
        "price": message.price,
        "paid": message.paid,
        "payload": message.payload,
        "status": ["STATUS_NEW", "STATUS_PAID", "STATUS_SHIPPED"][message.status],
        "address": {"street": message.address.street, "zip": message.address.zip}
        if message.HasField("address")
        else None,
        "tags": list(message.tags),
        "counts": dict(message.counts),
        "created_at": message.created_at.ToDatetime(tzinfo=dt.UTC),
        "customer": {"id": message.customer.id, "name": message.customer.name},
    }


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_a_protobuf_topic_exports_exactly_once(
    kafka: Any, schema_registry: Any, storage: StorageTarget, file_format: str, tmp_path: Path
) -> None:
    topic, prefix = kafka.create_topic(unique("orders"), 2), unique("proto")
    messages = rich_proto_messages(120, seed=2)
    produce_protobuf(kafka.bootstrap, schema_registry.client(), topic, messages)
    with connections(
        strm_kafka_default=kafka_with_registry(kafka, schema_registry), dc=storage_connection(storage, prefix)
    ):
        path = write_exporter(
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            value_format="protobuf",
            file_format=file_format,
        )
        assert run_exporter(path).state == "success"
        files = data_files(storage.objects(prefix))
    expected = {m.id: proto_expected(m) for m in messages}
    if file_format == "jsonl":
        events = [json.loads(line) for body in files.values() for line in body.splitlines()]
        for event in events:
            event["payload"] = base64.b64decode(event["payload"])
            event["created_at"] = dt.datetime.fromisoformat(event["created_at"])
    else:
        table = pa.concat_tables(parquet_tables(files))
        assert table.schema.field("total_cents").type == pa.int64()
        assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
        events = table.to_pylist()
        for event in events:
            event["counts"] = dict(event["counts"])
        counted = duckdb_rows(
            files,
            tmp_path / "files",
            "SELECT count(*), count(DISTINCT id), sum(total_cents::HUGEINT), count(address), "
            "typeof(any_value(created_at)), typeof(any_value(customer)) FROM t",
        )
        assert counted == [
            (
                len(messages),
                len(messages),
                sum(m.total_cents for m in messages),
                sum(m.HasField("address") for m in messages),
                "TIMESTAMP WITH TIME ZONE",
                'STRUCT(id VARCHAR, "name" VARCHAR)',
            )
        ]
    assert sorted(e["id"] for e in events) == sorted(expected)
    for event in events:
        assert event == expected[event["id"]]
    assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == kafka.end_offsets(topic)


def test_records_that_do_not_decode_are_dead_letters_with_their_reason(
    kafka: Any, schema_registry: Any, s3_target: StorageTarget
) -> None:
    """Plain JSON, an unknown schema id and a cut body among Avro records: each a dead letter, in order."""
    topic, prefix = kafka.create_topic(unique("orders"), 1), unique("mixed")
    records = rich_avro_records(10, seed=3)
    produce_avro(kafka.bootstrap, schema_registry.client(), topic, records[:5], partition=0)
    bad = [b'{"plain": "json"}', b"\x00\x00\x01\x86\x9f" + b"\x02", None]
    kafka.produce(topic, bad, partitions=1, keys=[b"k"] * len(bad))
    produce_avro(kafka.bootstrap, schema_registry.client(), topic, records[5:], partition=0)
    with connections(
        strm_kafka_default=kafka_with_registry(kafka, schema_registry), dc=storage_connection(s3_target, prefix)
    ):
        path = write_exporter(
            stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True, value_format="avro"
        )
        run = run_exporter(path)
        assert run.state == "success"
        objects = s3_target.objects(prefix)
    events = [json.loads(line) for body in data_files(objects).values() for line in body.splitlines()]
    assert [e["id"] for e in events] == [r["id"] for r in records]
    # the export's summary (what strm monitor shows) counts each reason
    (summary,) = xcom_values(run, "export")
    assert summary["dead_letters"] == 3 and summary["dead_letter_reasons"] == {
        "magic byte 123, expected 0 (Schema Registry wire format)": 1,
        "schema id 99999: the Schema Registry has no schema id 99999": 1,
        "null value (tombstone)": 1,
    }
    letters = [
        json.loads(line)
        for key, body in objects.items()
        if (name := parse_key(key)) and name.dead_letter
        for line in body.splitlines()
    ]
    assert [(d["offset"], d["error"]) for d in letters] == [
        (5, "magic byte 123, expected 0 (Schema Registry wire format)"),
        (6, "schema id 99999: the Schema Registry has no schema id 99999"),
        (7, "null value (tombstone)"),
    ]
    assert base64.b64decode(letters[0]["value_b64"]) == bad[0]
    assert kafka.committed(exporter_group(f"dc-{topic}"), topic) == kafka.end_offsets(topic)


@pytest.mark.parametrize("named", ["inline", "registry subject"])
def test_json_events_become_parquet_columns_of_the_exporters_schema(
    kafka: Any, schema_registry: Any, s3_target: StorageTarget, tmp_path: Path, named: str
) -> None:
    """JSON events with a JSON Schema in the exporter file, or a subject's version in the registry; one
    that does not fit is a dead letter."""
    from confluent_kafka.schema_registry import Schema

    from tests.registry_data import ORDER_JSON_SCHEMA

    value_schema: dict[str, Any] = ORDER_JSON_SCHEMA
    if named == "registry subject":
        subject = unique("orders-json")
        schema_registry.client().register_schema(subject, Schema(json.dumps(ORDER_JSON_SCHEMA), "JSON"))
        value_schema = {"subject": subject, "version": 1}
    topic, prefix = kafka.create_topic(unique("orders"), 2), unique("jsonpq")
    records = json_records(50, seed=4)
    misfit = {**records[0], "id": "misfit", "quantity": "many"}
    kafka.produce(topic, [*records[:25], misfit, *records[25:]], partitions=2)
    with connections(
        strm_kafka_default=kafka_with_registry(kafka, schema_registry), dc=storage_connection(s3_target, prefix)
    ):
        path = write_exporter(
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            file_format="parquet",
            value_schema=value_schema,
        )
        assert run_exporter(path).state == "success"
        objects = s3_target.objects(prefix)
    files = data_files(objects)
    rows = [row for table in parquet_tables(files) for row in table.to_pylist()]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)
    by_id = {r["id"]: r for r in records}
    for row in rows:
        assert {**row, "counts": dict(row["counts"])} == by_id[row["id"]]
    (letters,) = [body for key, body in objects.items() if (name := parse_key(key)) and name.dead_letter]
    (letter,) = pq.read_table(io.BytesIO(letters)).to_pylist()
    assert json.loads(base64.b64decode(letter["value_b64"])) == misfit
    assert "does not fit the Parquet columns" in letter["error"]
    assert duckdb_rows(files, tmp_path / "files", "SELECT count(*) FROM t WHERE paid") == [
        (sum(r["paid"] for r in records),)
    ]


def test_json_schema_framed_records_export_as_json_lines(
    kafka: Any, schema_registry: Any, s3_target: StorageTarget
) -> None:
    topic, prefix = kafka.create_topic(unique("orders"), 1), unique("jsonsr")
    records = json_records(30, seed=5)
    produce_json_schema(kafka.bootstrap, schema_registry.client(), topic, records)
    with connections(
        strm_kafka_default=kafka_with_registry(kafka, schema_registry), dc=storage_connection(s3_target, prefix)
    ):
        path = write_exporter(
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            value_format="json_schema",
        )
        assert run_exporter(path).state == "success"
        files = data_files(s3_target.objects(prefix))
    events = [json.loads(line) for body in files.values() for line in body.splitlines()]
    assert events == records


def test_a_registry_that_is_down_fails_the_run_in_one_line_before_anything_is_committed(
    kafka: Any, schema_registry: Any, s3_target: StorageTarget, capfd: pytest.CaptureFixture[str]
) -> None:
    from devstack import free_port

    topic, prefix = kafka.create_topic(unique("orders"), 1), unique("down")
    produce_avro(kafka.bootstrap, schema_registry.client(), topic, rich_avro_records(5, seed=6))
    down = f"http://127.0.0.1:{free_port()}"
    conn = kafka.connection()
    with connections(
        strm_kafka_default={**conn, "extra": {**conn["extra"], "schema_registry_url": down}},
        dc=storage_connection(s3_target, prefix),
    ):
        path = write_exporter(
            stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True, value_format="avro"
        )
        assert run_exporter(path).state == "failed"
        objects = s3_target.objects(prefix)
    assert data_files(objects) == {}
    assert set(kafka.committed(exporter_group(f"dc-{topic}"), topic).values()) <= {None, 0}
    # the plan task's error, in one line naming the URL
    out = capfd.readouterr()
    assert f"RegistryUnavailable: Schema Registry {down}: unreachable (ConnectError)" in out.out + out.err


def test_a_schema_change_closes_the_parquet_file(kafka: Any, schema_registry: Any, s3_target: StorageTarget) -> None:
    """Version 2 of the schema (a field added) between records of version 1: no file mixes two schemas."""
    topic, prefix = kafka.create_topic(unique("orders"), 1), unique("evolve")
    v2 = {**RICH_AVRO, "fields": [*RICH_AVRO["fields"], {"name": "channel", "type": "string", "default": "web"}]}
    records = rich_avro_records(15, seed=7)
    client = schema_registry.client()
    produce_avro(kafka.bootstrap, client, topic, records[:5], partition=0)
    produce_avro(kafka.bootstrap, client, topic, [{**r, "channel": "app"} for r in records[5:10]], 0, json.dumps(v2))
    produce_avro(kafka.bootstrap, client, topic, records[10:], partition=0)
    with connections(
        strm_kafka_default=kafka_with_registry(kafka, schema_registry), dc=storage_connection(s3_target, prefix)
    ):
        path = write_exporter(
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            value_format="avro",
            file_format="parquet",
        )
        assert run_exporter(path).state == "success"
        files = data_files(s3_target.objects(prefix))
    tables = sorted(parquet_tables(files), key=lambda t: t.column("id")[0].as_py())
    assert [t.column("id").to_pylist() for t in tables] == [
        [r["id"] for r in records[:5]],
        [r["id"] for r in records[10:]],
        [r["id"] for r in records[5:10]],
    ]
    assert ["channel" in t.schema.names for t in tables] == [False, False, True]
    assert tables[2].column("channel").to_pylist() == ["app"] * 5


def test_compact_names_have_no_colon_and_read_back(kafka: Any, s3_target: StorageTarget) -> None:
    """``name_style: compact``: names Hadoop's ``Path`` (Spark, Hive, EMR) can list."""
    import re

    topic, prefix = kafka.create_topic(unique("clicks"), 2), unique("compact")
    kafka.produce(topic, [{"seq": i} for i in range(20)])
    with connections(strm_kafka_default=kafka.connection(), dc=storage_connection(s3_target, prefix)):
        path = write_exporter(
            stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True, name_style="compact"
        )
        assert run_exporter(path).state == "success"
        files = data_files(s3_target.objects(prefix))
    (key,) = files
    assert ":" not in key
    assert re.fullmatch(rf"{prefix}/\d{{8}}T\d{{6}}Z-{topic}-[0-9a-f]{{8}}---0-1\.jsonl", key), key
    assert parse_key(key).time == key.split("/")[1][:16]  # type: ignore[union-attr]
    assert sorted(json.loads(line)["seq"] for line in files[key].splitlines()) == list(range(20))


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_the_envelope_of_decoded_events(
    kafka: Any, schema_registry: Any, s3_target: StorageTarget, file_format: str
) -> None:
    """``format: envelope``: partition, offset, timestamp, key and headers beside the decoded value."""
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    topic, prefix = kafka.create_topic(unique("orders"), 1), unique("envelope")
    records = rich_avro_records(4, seed=8)
    serialize = AvroSerializer(schema_registry.client(), json.dumps(RICH_AVRO))
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    # times of today: the broker's retention deletes a segment of 1970's records as soon as it checks
    now = int(time.time() * 1000) // 1000 * 1000
    for i, record in enumerate(records):
        value = serialize(record, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, value, key=f"k{i}".encode(), headers=[("trace", b"t%d" % i)], timestamp=now + i)
    assert producer.flush(30) == 0
    with connections(
        strm_kafka_default=kafka_with_registry(kafka, schema_registry), dc=storage_connection(s3_target, prefix)
    ):
        path = write_exporter(
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            value_format="avro",
            file_format=file_format,
            format="envelope",
        )
        assert run_exporter(path).state == "success"
        files = data_files(s3_target.objects(prefix))
    if file_format == "jsonl":
        rows = [json.loads(line) for body in files.values() for line in body.splitlines()]
        assert [(r["offset"], r["timestamp"], r["key"], r["headers"]) for r in rows] == [
            (i, now + i, f"k{i}", {"trace": f"t{i}"}) for i in range(4)
        ]
        assert [avro_from_json(r["value"]) for r in rows] == records
    else:
        (table,) = parquet_tables(files)
        assert table.schema.names == ["partition", "offset", "timestamp", "key", "headers", "value"]
        assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
        rows = table.to_pylist()
        assert [(r["partition"], r["offset"], r["key"], r["headers"]) for r in rows] == [
            (0, i, f"k{i}".encode(), [{"name": "trace", "value": b"t%d" % i}]) for i in range(4)
        ]
        assert [r["timestamp"] for r in rows] == [
            dt.datetime.fromtimestamp(now / 1000, dt.UTC) + dt.timedelta(milliseconds=i) for i in range(4)
        ]
        assert [avro_from_parquet(r["value"]) for r in rows] == records
