"""Schemas, records and producers for topics in the Confluent wire format (a Schema Registry's ids).

Records are written by confluent-kafka's own serializers (``AvroSerializer``, ``ProtobufSerializer``,
``JSONSerializer``) through a confluent-kafka ``Producer``, as an application would. The Protobuf message is
built at run time from a ``FileDescriptorProto`` (no generated code): package ``strm.test``, a ``Customer``
message first and ``Order`` second, so Order's message index is ``[1]``; it imports
``google/protobuf/timestamp.proto``, which the serializer registers as a reference (``skip.known.types``
off, as Confluent's Java serializer does by default).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import uuid
from decimal import Decimal
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import Message

UTC = dt.UTC

RICH_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "strm.test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "total_cents", "type": "long"},
        {"name": "price", "type": "double"},
        {"name": "paid", "type": "boolean"},
        {"name": "payload", "type": "bytes"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [{"name": "street", "type": "string"}, {"name": "zip", "type": "int"}],
            },
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "order_uuid", "type": {"type": "string", "logicalType": "uuid"}},
    ],
}
RICH_AVRO_STR = json.dumps(RICH_AVRO)

STATUSES = ["NEW", "PAID", "SHIPPED"]
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=UTC)


def rich_avro_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` records valid for :data:`RICH_AVRO`, as fastavro reads them back (UTC datetimes, ``Decimal``,
    ``uuid.UUID``); every third has no note, every fifth no tags or counts."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        when = _EPOCH + dt.timedelta(seconds=rng.randrange(10**8), microseconds=rng.randrange(10**6))
        records.append(
            {
                "id": f"order-{seed}-{i}",
                "quantity": rng.randrange(-(2**31), 2**31),
                "total_cents": rng.randrange(-(2**63), 2**63),
                "price": rng.uniform(-1e6, 1e6),
                "paid": rng.random() < 0.5,
                "payload": rng.randbytes(rng.randrange(0, 16)),
                "note": None if i % 3 == 0 else f"note {i} é ✓",
                "status": STATUSES[i % 3],
                "address": {"street": f"{rng.randrange(1, 999)} Main St", "zip": rng.randrange(10000, 99999)},
                "tags": [] if i % 5 == 0 else [f"t{j}" for j in range(rng.randrange(1, 4))],
                "counts": {} if i % 5 == 0 else {f"k{j}": rng.randrange(-(2**40), 2**40) for j in range(2)},
                "created_at": when.replace(microsecond=when.microsecond // 1000 * 1000),
                "updated_at": when,
                "day": when.date(),
                "amount": Decimal(rng.randrange(-(10**10) + 1, 10**10)).scaleb(-2),
                "order_uuid": uuid.UUID(int=rng.getrandbits(128), version=4),
            }
        )
    return records


PROTO_FILE = "strm/test/order.proto"


def _field(
    name: str, number: int, kind: int, *, label: int = 1, type_name: str | None = None
) -> descriptor_pb2.FieldDescriptorProto:
    field = descriptor_pb2.FieldDescriptorProto(name=name, number=number, type=kind, label=label)
    if type_name is not None:
        field.type_name = type_name
    return field


def order_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """``strm/test/order.proto`` (proto3) as a ``FileDescriptorProto``: ``Customer``, then ``Order``."""
    F = descriptor_pb2.FieldDescriptorProto
    repeated = F.LABEL_REPEATED
    fdp = descriptor_pb2.FileDescriptorProto(
        name=PROTO_FILE, package="strm.test", syntax="proto3", dependency=["google/protobuf/timestamp.proto"]
    )
    fdp.enum_type.add(name="Status").value.extend(
        [descriptor_pb2.EnumValueDescriptorProto(name=f"STATUS_{s}", number=n) for n, s in enumerate(STATUSES)]
    )
    customer = fdp.message_type.add(name="Customer")
    customer.field.extend([_field("id", 1, F.TYPE_STRING), _field("name", 2, F.TYPE_STRING)])
    order = fdp.message_type.add(name="Order")
    address = order.nested_type.add(name="Address")
    address.field.extend([_field("street", 1, F.TYPE_STRING), _field("zip", 2, F.TYPE_INT32)])
    entry = order.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    entry.field.extend([_field("key", 1, F.TYPE_STRING), _field("value", 2, F.TYPE_INT64)])
    order.field.extend(
        [
            _field("id", 1, F.TYPE_STRING),
            _field("quantity", 2, F.TYPE_INT32),
            _field("total_cents", 3, F.TYPE_INT64),
            _field("price", 4, F.TYPE_DOUBLE),
            _field("paid", 5, F.TYPE_BOOL),
            _field("payload", 6, F.TYPE_BYTES),
            _field("status", 7, F.TYPE_ENUM, type_name=".strm.test.Status"),
            _field("address", 8, F.TYPE_MESSAGE, type_name=".strm.test.Order.Address"),
            _field("tags", 9, F.TYPE_STRING, label=repeated),
            _field("counts", 10, F.TYPE_MESSAGE, label=repeated, type_name=".strm.test.Order.CountsEntry"),
            _field("created_at", 11, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"),
            _field("customer", 12, F.TYPE_MESSAGE, type_name=".strm.test.Customer"),
        ]
    )
    return fdp


@functools.cache
def order_class() -> type[Message]:
    """The ``strm.test.Order`` message class, from a pool of its own (the default pool stays untouched)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(order_file_descriptor())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("strm.test.Order"))


def rich_proto_messages(n: int, seed: int = 0) -> list[Message]:
    """``n`` ``strm.test.Order`` messages; every third has no address, every fifth no tags or counts."""
    rng = random.Random(seed)
    order = order_class()
    messages = []
    for i in range(n):
        when = _EPOCH + dt.timedelta(seconds=rng.randrange(10**8), microseconds=rng.randrange(10**6))
        msg = order(
            id=f"order-{seed}-{i}",
            quantity=rng.randrange(-(2**31), 2**31),
            total_cents=rng.randrange(-(2**63), 2**63),
            price=rng.uniform(-1e6, 1e6),
            paid=rng.random() < 0.5,
            payload=rng.randbytes(rng.randrange(0, 16)),
            status=i % 3,
            tags=[] if i % 5 == 0 else [f"t{j}" for j in range(rng.randrange(1, 4))],
            counts={} if i % 5 == 0 else {f"k{j}": rng.randrange(-(2**40), 2**40) for j in range(2)},
        )
        if i % 3:
            msg.address.street = f"{rng.randrange(1, 999)} Main St"
            msg.address.zip = rng.randrange(10000, 99999)
        msg.created_at.FromDatetime(when)
        msg.customer.id = f"c{i % 7}"
        msg.customer.name = f"Customer {i % 7}"
        messages.append(msg)
    return messages


ORDER_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "quantity": {"type": "integer"},
        "price": {"type": "number"},
        "paid": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "status": {"enum": STATUSES},
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "integer"}},
            "required": ["street", "zip"],
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "required": ["id", "quantity", "price", "paid", "status"],
}
ORDER_JSON_SCHEMA_STR = json.dumps(ORDER_JSON_SCHEMA)


def json_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` objects valid for :data:`ORDER_JSON_SCHEMA`."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        when = _EPOCH + dt.timedelta(seconds=rng.randrange(10**8))
        records.append(
            {
                "id": f"order-{seed}-{i}",
                "quantity": rng.randrange(-(2**31), 2**31),
                "price": round(rng.uniform(-1e6, 1e6), 2),
                "paid": rng.random() < 0.5,
                "note": None if i % 3 == 0 else f"note {i}",
                "status": STATUSES[i % 3],
                "address": {"street": f"{rng.randrange(1, 999)} Main St", "zip": rng.randrange(10000, 99999)},
                "tags": [f"t{j}" for j in range(i % 3)],
                "counts": {f"k{j}": rng.randrange(2**40) for j in range(i % 2)},
                "created_at": when.isoformat().replace("+00:00", "Z"),
            }
        )
    return records


def _produce(
    kafka_bootstrap: str, topic: str, serialize: Any, records: list[Any], partition: int | None
) -> list[tuple[int, int]]:
    """Serialize each record for ``topic``'s value and produce it; (partition, offset) of each, in order."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.serialization import MessageField, SerializationContext

    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    placed: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[Any] = []

    def delivered(index: int) -> Any:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                placed[index] = (msg.partition(), msg.offset())

        return callback

    for index, record in enumerate(records):
        value = serialize(record, ctx)
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, on_delivery=delivered(index), **extra)
        producer.poll(0)
    if producer.flush(30) or errors:
        raise KafkaException(errors[0] if errors else "records left undelivered after 30 s")
    return [p for p in placed if p is not None]


def produce_avro(
    kafka_bootstrap: str,
    registry_client: Any,
    topic: str,
    records: list[dict[str, Any]],
    partition: int | None = None,
    schema_str: str = RICH_AVRO_STR,
) -> list[tuple[int, int]]:
    """``records`` through ``AvroSerializer`` (subject ``<topic>-value``); (partition, offset) of each."""
    from confluent_kafka.schema_registry.avro import AvroSerializer

    serializer = AvroSerializer(registry_client, schema_str)
    return _produce(kafka_bootstrap, topic, serializer, records, partition)


def produce_protobuf(
    kafka_bootstrap: str,
    registry_client: Any,
    topic: str,
    records: list[Message],
    partition: int | None = None,
    skip_known_types: bool = False,
) -> list[tuple[int, int]]:
    """``records`` (messages of one class) through ``ProtobufSerializer``; (partition, offset) of each."""
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

    msg_type = type(records[0]) if records else order_class()
    serializer = ProtobufSerializer(
        msg_type, registry_client, {"use.deprecated.format": False, "skip.known.types": skip_known_types}
    )
    return _produce(kafka_bootstrap, topic, serializer, records, partition)


def produce_json_schema(
    kafka_bootstrap: str,
    registry_client: Any,
    topic: str,
    records: list[dict[str, Any]],
    partition: int | None = None,
    schema_str: str = ORDER_JSON_SCHEMA_STR,
) -> list[tuple[int, int]]:
    """``records`` through ``JSONSerializer`` (validated against ``schema_str``); (partition, offset) of each."""
    from confluent_kafka.schema_registry.json_schema import JSONSerializer

    serializer = JSONSerializer(schema_str, registry_client)
    return _produce(kafka_bootstrap, topic, serializer, records, partition)
