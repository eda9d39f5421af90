"""Framed values one by one against the real Schema Registry: what decodes, how each refusal reads, and the
JSON mapping of decoded values (the README's table)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
import trustme
from confluent_kafka.schema_registry import Schema

from devstack.schema_registry import SchemaRegistry
from strm_provider.decoders import AvroDecoder, ProtobufDecoder, event_line
from strm_provider.lines import InvalidEvent
from strm_provider.parquet import UnsupportedSchema, arrow_schema
from strm_provider.schema_registry import RegistryClient, RegistryUnavailable
from tests.faults.scenario import unique

POINT = {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "long"}]}


def framed(schema_id: int, body: bytes, magic: int = 0) -> bytes:
    return bytes([magic]) + schema_id.to_bytes(4, "big") + body


def avro_body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def register(registry: Any, schema: dict[str, Any] | str, kind: str = "AVRO") -> int:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return int(registry.client().register_schema(unique("subject"), Schema(text, kind)))


def refusal(decoder: Any, value: bytes | None) -> str:
    with pytest.raises(InvalidEvent) as refused:
        decoder.decode(value)
    return str(refused.value)


def test_avro_refusals_name_what_is_wrong(schema_registry: Any) -> None:
    point = register(schema_registry, POINT)
    avro = AvroDecoder(RegistryClient(schema_registry.url))
    body = avro_body(POINT, {"x": 7})
    assert avro.decode(framed(point, body)) == (point, {"x": 7})
    assert refusal(avro, None) == "null value (tombstone)"
    assert refusal(avro, b"\x00\x00") == "2 bytes: too short for a Schema Registry frame (magic byte 0, a 4-byte id)"
    assert refusal(avro, framed(point, body, magic=1)) == (
        "magic byte 1, expected 0 (Schema Registry wire format); magic byte 1 (a schema GUID) is not supported"
    )
    assert refusal(avro, framed(point, b"")).startswith(f"Avro body does not decode with schema id {point} (")
    assert refusal(avro, framed(point, body + b"\x00")) == (
        f"Avro body does not decode with schema id {point} (bytes left after the record)"
    )
    assert refusal(avro, framed(2_000_000, body)) == ("schema id 2000000: the Schema Registry has no schema id 2000000")
    text = register(schema_registry, {"type": "object", "properties": {}}, "JSON")
    assert refusal(avro, framed(text, body)) == f"schema id {text} is a JSON schema, expected AVRO"


def test_avro_references_resolve_to_named_types(schema_registry: Any) -> None:
    client = schema_registry.client()
    subject = unique("point")
    client.register_schema(subject, Schema(json.dumps(POINT), "AVRO"))
    line = {
        "type": "record",
        "name": "Line",
        "fields": [{"name": "a", "type": "Point"}, {"name": "b", "type": "Point"}],
    }
    from confluent_kafka.schema_registry import SchemaReference

    line_id = int(
        client.register_schema(unique("line"), Schema(json.dumps(line), "AVRO", [SchemaReference("Point", subject, 1)]))
    )
    avro = AvroDecoder(RegistryClient(schema_registry.url))
    named = {}
    fastavro.parse_schema(POINT, named_schemas=named)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(line, named_schemas=named), {"a": {"x": 1}, "b": {"x": 2}})
    assert avro.decode(framed(line_id, body.getvalue())).event == {"a": {"x": 1}, "b": {"x": 2}}


def test_protobuf_refusals_name_what_is_wrong(schema_registry: Any) -> None:
    from tests.registry_data import order_file_descriptor

    serialized = base64.b64encode(order_file_descriptor().SerializeToString()).decode()
    from confluent_kafka.schema_registry import SchemaReference

    client = schema_registry.client()
    ts = unique("ts")
    from google.protobuf import timestamp_pb2

    client.register_schema(ts, Schema(base64.b64encode(timestamp_pb2.DESCRIPTOR.serialized_pb).decode(), "PROTOBUF"))
    order = int(
        client.register_schema(
            unique("order"),
            Schema(serialized, "PROTOBUF", [SchemaReference("google/protobuf/timestamp.proto", ts, 1)]),
        )
    )
    proto = ProtobufDecoder(RegistryClient(schema_registry.url))
    # message indexes [5]: there are two top-level messages
    assert refusal(proto, framed(order, b"\x02\x0a")) == f"schema id {order}: no message at index [5]"
    assert refusal(proto, framed(order, b"\x02")) == (
        f"Protobuf frame of schema id {order}: its message indexes are cut off"
    )
    # [1] is Order: field 1 (id, a string) said to be 10 bytes long, with 1 there
    assert refusal(proto, framed(order, b"\x02\x02" + b"\x0a\x0ax")).startswith(
        f"Protobuf body does not decode with schema id {order} ("
    )
    text = register(schema_registry, 'syntax = "proto3";\nmessage A { string a = 1; }\n', "PROTOBUF")
    assert refusal(proto, framed(text, b"\x00")).startswith(f"schema id {text}: not a serialized Protobuf descriptor")


def test_a_registry_that_refuses_the_credentials_fails_naming_its_url(tmp_path: Path) -> None:
    with SchemaRegistry(tmp_path, user="exporter", password="right") as registry:
        wrong = RegistryClient(registry.url, user="exporter", password="wrong")
        with pytest.raises(RegistryUnavailable) as failed:
            wrong.check()
        assert str(failed.value) == (
            f"Schema Registry {registry.url}: credentials refused (HTTP 401); check the Kafka connection's "
            "schema_registry_* extras"
        )
        assert "wrong" not in str(failed.value)
        RegistryClient(registry.url, user="exporter", password="right").check()


def test_a_registry_over_mutual_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("exporter")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "client_cert", "client_key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    client_cert.cert_chain_pems[0].write_to_path(paths["client_cert"])
    client_cert.private_key_pem.write_to_path(paths["client_key"])
    with SchemaRegistry(tmp_path, tls_cert=paths["cert"], tls_key=paths["key"], client_ca=paths["ca"]) as registry:
        with pytest.raises(RegistryUnavailable, match=r"^Schema Registry https://127\.0\.0\.1:\d+: unreachable"):
            RegistryClient(registry.url, ca_file=str(paths["ca"])).check()
        RegistryClient(
            registry.url,
            ca_file=str(paths["ca"]),
            cert_file=str(paths["client_cert"]),
            key_file=str(paths["client_key"]),
        ).check()


def test_decoded_values_as_json() -> None:
    event = {
        "when": dt.datetime(2026, 12, 5, 22, 59, 7, 123000, tzinfo=dt.UTC),
        "day": dt.date(2026, 12, 5),
        "at": dt.time(22, 59, 7),
        "amount": Decimal("-12.30"),
        "payload": b"\x00\xff",
        "id": uuid.UUID(int=1),
        "big": 2**63 - 1,
        "nested": {"list": [1.5, None, True]},
    }
    assert json.loads(event_line(event)) == {
        "when": "2026-12-05T22:59:07.123000Z",
        "day": "2026-12-05",
        "at": "22:59:07",
        "amount": "-12.30",
        "payload": "AP8=",
        "id": "00000000-0000-0000-0000-000000000001",
        "big": 9223372036854775807,
        "nested": {"list": [1.5, None, True]},
    }


def test_a_union_of_two_types_has_no_parquet_column() -> None:
    schema = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null", "string", "long"]}]}
    with pytest.raises(UnsupportedSchema, match=r"union of null and one type only"):
        arrow_schema("avro", fastavro.parse_schema(schema))
