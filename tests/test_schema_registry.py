"""The development Schema Registry against confluent-kafka's own client, serializers and deserializers.

Records go through a real Kafka broker: produced by ``tests.registry_data``'s producers, read back raw with
a confluent-kafka ``Consumer`` and decoded by the matching deserializer.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf.descriptor_pb2 import FileDescriptorProto

from devstack.schema_registry import CONTENT_TYPE, SchemaRegistry
from tests import registry_data as data

AVRO_V2 = {**data.RICH_AVRO, "fields": [*data.RICH_AVRO["fields"], {"name": "extra", "type": "int", "default": 0}]}


def _topic(kafka: Any, kind: str, partitions: int = 3) -> str:
    return kafka.create_topic(f"sr-{kind}-{uuid.uuid4().hex[:8]}", partitions)


def _read(bootstrap: str, topic: str, placed: list[tuple[int, int]]) -> list[bytes]:
    """The raw values at ``placed`` (partition, offset), in that order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sr-test-{uuid.uuid4().hex}"})
    partitions = sorted({p for p, _ in placed})
    consumer.assign([TopicPartition(topic, p, min(o for q, o in placed if q == p)) for p in partitions])
    wanted = set(placed)
    found: dict[tuple[int, int], bytes] = {}
    try:
        for _ in range(200):
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None and (msg.partition(), msg.offset()) in wanted:
                    found[(msg.partition(), msg.offset())] = msg.value()
            if len(found) == len(wanted):
                break
    finally:
        consumer.close()
    assert len(found) == len(wanted), f"read {len(found)} of {len(wanted)} records of {topic}"
    return [found[key] for key in placed]


def _ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def test_avro_through_kafka(kafka: Any, schema_registry: SchemaRegistry) -> None:
    topic = _topic(kafka, "avro")
    records = data.rich_avro_records(30, seed=1)
    placed = data.produce_avro(kafka.bootstrap, schema_registry.client(), topic, records)
    assert len(placed) == len(records)
    values = _read(kafka.bootstrap, topic, placed)
    latest = schema_registry.client().get_latest_version(f"{topic}-value")
    assert {v[0] for v in values} == {0} and {int.from_bytes(v[1:5], "big") for v in values} == {latest.schema_id}
    deserialize = AvroDeserializer(schema_registry.client())  # a fresh client: the ids come from the server
    assert [deserialize(v, _ctx(topic)) for v in values] == records
    assert any(r["note"] is None for r in records) and any(r["note"] is not None for r in records)


def test_protobuf_through_kafka(kafka: Any, schema_registry: SchemaRegistry) -> None:
    topic = _topic(kafka, "protobuf", partitions=1)
    messages = data.rich_proto_messages(20, seed=2)
    placed = data.produce_protobuf(kafka.bootstrap, schema_registry.client(), topic, messages, partition=0)
    assert [o for _, o in placed] == list(range(20))
    values = _read(kafka.bootstrap, topic, placed)
    assert {v[5:7] for v in values} == {b"\x02\x02"}  # message indexes [1]: Order follows Customer

    client = schema_registry.client()
    latest = client.get_latest_version(f"{topic}-value")
    assert latest.schema.schema_type == "PROTOBUF"
    ref = "google/protobuf/timestamp.proto"
    assert [(r.name, r.subject, r.version) for r in latest.schema.references] == [(ref, ref, 1)]
    served = httpx.get(
        f"{schema_registry.url}/schemas/ids/{latest.schema_id}", params={"format": "serialized", "subject": topic}
    )
    assert served.headers["content-type"] == CONTENT_TYPE
    assert served.json()["schema"] == latest.schema.schema_str  # stored and served as the serializer sent it
    descriptor = FileDescriptorProto.FromString(base64.b64decode(served.json()["schema"]))
    assert [m.name for m in descriptor.message_type] == ["Customer", "Order"]

    deserialize = ProtobufDeserializer(data.order_class(), {"use.deprecated.format": False}, schema_registry.client())
    assert [deserialize(v, _ctx(topic)) for v in values] == messages


def test_json_schema_through_kafka(kafka: Any, schema_registry: SchemaRegistry) -> None:
    topic = _topic(kafka, "json")
    records = data.json_records(15, seed=3)
    placed = data.produce_json_schema(kafka.bootstrap, schema_registry.client(), topic, records)
    values = _read(kafka.bootstrap, topic, placed)
    assert schema_registry.client().get_latest_version(f"{topic}-value").schema.schema_type == "JSON"
    deserialize = JSONDeserializer(None, schema_registry_client=schema_registry.client())
    assert [deserialize(v, _ctx(topic)) for v in values] == records


def test_ids_versions_and_errors(schema_registry: SchemaRegistry) -> None:
    client = schema_registry.client()
    name = f"ids-{uuid.uuid4().hex[:8]}"
    v1 = Schema(data.RICH_AVRO_STR, "AVRO")
    first = client.register_schema(f"{name}-a", v1)
    # the same schema: the same id under the subject (no new version) and under another subject
    assert schema_registry.client().register_schema(f"{name}-a", v1) == first
    assert client.register_schema(f"{name}-b", Schema(json.dumps(data.RICH_AVRO, indent=2), "AVRO")) == first
    assert client.get_versions(f"{name}-a") == [1]
    found = client.lookup_schema(f"{name}-b", v1)
    assert (found.schema_id, found.version, found.subject) == (first, 1, f"{name}-b")

    second = client.register_schema(f"{name}-a", Schema(json.dumps(AVRO_V2), "AVRO"))
    assert second != first
    latest = client.get_latest_version(f"{name}-a")
    assert (latest.schema_id, latest.version) == (second, 2)
    assert client.get_version(f"{name}-a", 1).schema_id == first
    pairs = {(v.subject, v.version) for v in client.get_schema_versions(first)}
    assert pairs >= {(f"{name}-a", 1), (f"{name}-b", 1)}  # and wherever else the session registered it
    assert f"{name}-a" in client.get_subjects()
    assert client.get_schema(second).schema_str == json.dumps(AVRO_V2)
    assert sorted(client.get_schema_types()) == ["AVRO", "JSON", "PROTOBUF"]
    assert client.test_compatibility(f"{name}-a", Schema(json.dumps(AVRO_V2), "AVRO"))

    def error(call: Any, *args: Any) -> tuple[int, int]:
        with pytest.raises(SchemaRegistryError) as caught:
            call(*args)
        return caught.value.http_status_code, caught.value.error_code

    assert error(client.lookup_schema, f"{name}-b", Schema(json.dumps(AVRO_V2), "AVRO")) == (404, 40403)
    assert error(client.get_versions, f"{name}-none") == (404, 40401)
    assert error(client.get_version, f"{name}-a", 9) == (404, 40402)
    assert error(schema_registry.client().get_schema, 10**6) == (404, 40403)
    bad = Schema('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}', "AVRO")
    assert error(client.register_schema, f"{name}-a", bad) == (422, 42201)
    assert error(client.test_compatibility, f"{name}-a", bad) == (422, 42201)
    assert error(client.register_schema, f"{name}-p", Schema("not a descriptor", "PROTOBUF")) == (422, 42201)

    client.set_compatibility(f"{name}-a", "FULL")
    assert client.get_compatibility(f"{name}-a") == "FULL"
    assert client.get_config().compatibility_level is not None
    assert client.delete_subject(f"{name}-b") == [1]
    assert error(client.get_versions, f"{name}-b") == (404, 40401)
    assert client.get_schema(first).schema_str == data.RICH_AVRO_STR  # ids outlive a soft-deleted subject


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistry]:
    """A registry taking basic authentication or a bearer token."""
    registry = SchemaRegistry(tmp_path_factory.mktemp("sr-auth"), user="alice", password="s3cret", token="tok-123")
    with registry:
        yield registry


def test_basic_auth(secured: SchemaRegistry) -> None:
    assert secured.client().get_subjects() == []
    wrong = SchemaRegistry(secured.workdir, user="alice", password="wrong", port=secured.port)
    with pytest.raises(SchemaRegistryError) as caught:
        wrong.client().get_subjects()
    assert (caught.value.http_status_code, caught.value.error_code) == (401, 401)
    anonymous = httpx.get(f"{secured.url}/subjects")
    assert anonymous.status_code == 401 and anonymous.json() == {"error_code": 401, "message": "Unauthorized"}


def test_bearer_token(secured: SchemaRegistry) -> None:
    token = SchemaRegistry(secured.workdir, token="tok-123", port=secured.port)
    assert token.client().register_schema("bearer-value", Schema(data.RICH_AVRO_STR, "AVRO")) >= 1
    wrong = SchemaRegistry(secured.workdir, token="tok-999", port=secured.port)
    with pytest.raises(SchemaRegistryError) as caught:
        wrong.client().get_subjects()
    assert caught.value.http_status_code == 401


def test_mutual_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("strm-exporter@example.com")
    for name, blob in (("ca.pem", ca.cert_pem), ("client.pem", client_cert.private_key_and_cert_chain_pem)):
        blob.write_to_path(str(tmp_path / name))
    trustme.CA().issue_cert("intruder").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "foreign.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    tls = {"tls_cert": tmp_path / "server.pem", "tls_key": tmp_path / "server.key", "client_ca": tmp_path / "ca.pem"}
    with SchemaRegistry(tmp_path / "sr", **tls) as registry:
        assert registry.url.startswith("https://")
        ca_only = {"ssl.ca.location": str(tmp_path / "ca.pem"), "max.retries": 0}
        with_cert = {**ca_only, "ssl.certificate.location": str(tmp_path / "client.pem")}
        assert registry.client(with_cert).register_schema("tls-value", Schema(data.RICH_AVRO_STR, "AVRO")) == 1
        with pytest.raises(Exception) as caught:
            registry.client(ca_only).get_subjects()
        assert not isinstance(caught.value, SchemaRegistryError)  # refused during the handshake, not answered
        with pytest.raises(Exception) as caught:
            registry.client({**ca_only, "ssl.certificate.location": str(tmp_path / "foreign.pem")}).get_subjects()
        assert not isinstance(caught.value, SchemaRegistryError)  # a certificate from another CA: the same


def test_data_file_keeps_ids_across_restarts(tmp_path: Path) -> None:
    store = tmp_path / "registry.json"
    with SchemaRegistry(tmp_path / "sr", data=store) as registry:
        client = registry.client()
        ids = [
            client.register_schema("a-value", Schema(data.RICH_AVRO_STR, "AVRO")),
            client.register_schema("b-value", Schema(data.ORDER_JSON_SCHEMA_STR, "JSON")),
        ]
        client.set_compatibility("a-value", "NONE")
    with SchemaRegistry(tmp_path / "sr", data=store) as restarted:
        client = restarted.client()
        assert client.get_schema(ids[1]).schema_str == data.ORDER_JSON_SCHEMA_STR
        assert client.register_schema("a-value", Schema(data.RICH_AVRO_STR, "AVRO")) == ids[0]
        assert client.register_schema("a-value", Schema(json.dumps(AVRO_V2), "AVRO")) == max(ids) + 1
        assert client.get_versions("a-value") == [1, 2]
        assert client.get_compatibility("a-value") == "NONE"
