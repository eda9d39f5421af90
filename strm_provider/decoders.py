"""Framed record values into events: Confluent's wire format, decoded with the registry's schemas.

A framed value is magic byte ``0``, the schema id (4 bytes, big-endian), then the body: Avro's binary
encoding; for Protobuf an array of message indexes (zigzag varints; a single ``0`` for the file's first
message) and the message; for JSON Schema, JSON text. Each decoder turns a value into ``(schema id,
event)``, the event a dict of Python values (``datetime``, ``date``, ``time``, ``Decimal``, ``UUID``,
``bytes`` ...). :func:`event_line` writes it as one JSON line (the mapping is in the README, "Avro,
Protobuf and JSON Schema topics"), and :mod:`strm_provider.parquet` as a row.

A value that does not decode raises :class:`~strm_provider.lines.InvalidEvent` with the reason (it
becomes a dead letter); a registry that cannot answer raises
:class:`~strm_provider.schema_registry.RegistryUnavailable` (the export fails, nothing is committed).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Hashable
from datetime import UTC
from decimal import Decimal
from typing import Any, NamedTuple, Protocol
from uuid import UUID

import orjson

from strm_provider.lines import InvalidEvent
from strm_provider.schema_registry import RegistryClient, Schema, UnknownSchema

MAGIC = 0
HEADER = 5


class Decoded(NamedTuple):
    #: what the event's columns follow: its schema id, and for Protobuf also its message's indexes
    schema: Hashable
    event: dict[str, Any]


class Decoder(Protocol):
    """What :func:`decoder` returns for each ``value_format``."""

    kind: str  # the schema language: avro, protobuf or json_schema

    def decode(self, value: bytes | None) -> Decoded: ...

    def source_schema(self, schema: Any) -> Any:
        """The parsed schema a :attr:`Decoded.schema` names: an Avro schema, a Protobuf message
        descriptor, a JSON Schema."""
        ...


def decoder(value_format: str, registry: RegistryClient) -> Decoder:
    decoders: dict[str, type[Any]] = {
        "avro": AvroDecoder,
        "protobuf": ProtobufDecoder,
        "json_schema": JsonSchemaDecoder,
    }
    return decoders[value_format](registry)  # type: ignore[no-any-return]


def split_frame(value: bytes | None) -> tuple[int, memoryview]:
    """The schema id and body of a framed value."""
    if value is None:
        raise InvalidEvent("null value (tombstone)")
    if len(value) < HEADER:
        raise InvalidEvent(f"{len(value)} bytes: too short for a Schema Registry frame (magic byte 0, a 4-byte id)")
    if value[0] != MAGIC:
        extra = "; magic byte 1 (a schema GUID) is not supported" if value[0] == 1 else ""
        raise InvalidEvent(f"magic byte {value[0]}, expected 0 (Schema Registry wire format){extra}")
    return int.from_bytes(value[1:HEADER], "big"), memoryview(value)[HEADER:]


def _schema(registry: RegistryClient, schema_id: int, expected: str) -> Schema:
    try:
        schema = registry.schema(schema_id)
    except UnknownSchema as err:
        raise InvalidEvent(f"schema id {schema_id}: {err}") from None
    if schema.schema_type != expected:
        raise InvalidEvent(f"schema id {schema_id} is a {schema.schema_type} schema, expected {expected}")
    return schema


class AvroDecoder:
    """Avro bodies through ``fastavro``, with the writer's schema; references resolve to named types."""

    kind = "avro"

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        self._parsed: dict[int, Any] = {}
        self._has_uuids: dict[int, bool] = {}

    def source_schema(self, schema_id: int) -> Any:
        if schema_id not in self._parsed:
            import fastavro

            schema = _schema(self.registry, schema_id, "AVRO")
            self._has_uuids[schema_id] = '"uuid"' in schema.text  # a logical type uuid, or a name: cheap to check
            named: dict[str, Any] = {}
            self._add_references(schema, named, set())
            try:
                self._parsed[schema_id] = fastavro.parse_schema(json.loads(schema.text), named_schemas=named)
            except (ValueError, fastavro.schema.SchemaParseException) as err:
                raise InvalidEvent(f"schema id {schema_id}: not a valid Avro schema ({err})") from None
        return self._parsed[schema_id]

    def _add_references(self, schema: Schema, named: dict[str, Any], seen: set[tuple[str, int]]) -> None:
        import fastavro

        for ref in schema.references:
            if (ref.subject, ref.version) in seen:
                continue
            seen.add((ref.subject, ref.version))
            try:
                referenced = self.registry.version(ref.subject, ref.version)
            except UnknownSchema as err:
                raise InvalidEvent(f"reference {ref.name}: {err}") from None
            self._add_references(referenced, named, seen)
            fastavro.parse_schema(json.loads(referenced.text), named_schemas=named)

    def decode(self, value: bytes | None) -> Decoded:
        import fastavro

        schema_id, body = split_frame(value)
        schema = self.source_schema(schema_id)
        stream = io.BytesIO(body)
        try:
            event = fastavro.schemaless_reader(stream, schema, None)
        except Exception as err:  # fastavro raises what its reading hit: EOFError, ValueError, IndexError ...
            raise InvalidEvent(f"Avro body does not decode with schema id {schema_id} ({type(err).__name__})") from None
        if stream.tell() != len(body):
            raise InvalidEvent(f"Avro body does not decode with schema id {schema_id} (bytes left after the record)")
        if self._has_uuids[schema_id]:
            event = _uuids_as_text(event)
        return Decoded(schema_id, event if isinstance(event, dict) else {"value": event})


def _uuids_as_text(value: Any) -> Any:
    """``value`` with each ``UUID`` (fastavro's reading of logical type uuid) as its text, as a Parquet
    string column and JSON take it."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {key: _uuids_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_uuids_as_text(item) for item in value]
    return value


class ProtobufDecoder:
    """Protobuf bodies through the registry's descriptors, without generated classes."""

    kind = "protobuf"

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        self._files: dict[int, Any] = {}  # schema id -> FileDescriptor
        self._messages: dict[tuple[int, tuple[int, ...]], Any] = {}  # (id, indexes) -> message class

    def _file(self, schema_id: int) -> Any:
        if schema_id not in self._files:
            from google.protobuf import descriptor_pb2, descriptor_pool

            schema = _schema(self.registry, schema_id, "PROTOBUF")
            pool = descriptor_pool.DescriptorPool()
            added: set[str] = set()
            try:
                self._add_references(schema, pool, added)
                proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(schema.text))
                pool.Add(proto)
                self._files[schema_id] = pool.FindFileByName(proto.name)
            except InvalidEvent:
                raise
            except Exception as err:  # a text .proto (not serialized) or a broken descriptor
                raise InvalidEvent(
                    f"schema id {schema_id}: not a serialized Protobuf descriptor ({type(err).__name__})"
                ) from None
        return self._files[schema_id]

    def _add_references(self, schema: Schema, pool: Any, added: set[str]) -> None:
        from google.protobuf import descriptor_pb2, descriptor_pool

        for ref in schema.references:
            if ref.name in added:
                continue
            added.add(ref.name)
            try:  # the well-known types (google/protobuf/*.proto) come with the library
                known = descriptor_pool.Default().FindFileByName(ref.name)
            except KeyError:
                known = None
            if known is not None:
                pool.AddSerializedFile(known.serialized_pb)
                continue
            try:
                referenced = self.registry.version(ref.subject, ref.version)
            except UnknownSchema as err:
                raise InvalidEvent(f"reference {ref.name}: {err}") from None
            self._add_references(referenced, pool, added)
            pool.Add(descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(referenced.text)))

    def _message(self, schema_id: int, indexes: tuple[int, ...]) -> Any:
        key = (schema_id, indexes)
        if key not in self._messages:
            from google.protobuf import message_factory

            types = list(self._file(schema_id).message_types_by_name.values())
            found: Any = None  # indexes hold one index at least
            for depth, index in enumerate(indexes):
                if not 0 <= index < len(types):
                    raise InvalidEvent(f"schema id {schema_id}: no message at index {list(indexes[: depth + 1])}")
                found = types[index]
                types = list(found.nested_types)
            self._messages[key] = message_factory.GetMessageClass(found)
        return self._messages[key]

    def source_schema(self, schema: tuple[int, tuple[int, ...]]) -> Any:
        return self._message(*schema).DESCRIPTOR

    def decode(self, value: bytes | None) -> Decoded:
        schema_id, body = split_frame(value)
        indexes, start = _message_indexes(body, schema_id)
        message = self._message(schema_id, indexes)()
        try:
            message.ParseFromString(bytes(body[start:]))
        except Exception as err:  # google.protobuf.message.DecodeError, or a RuntimeWarning-free ValueError
            raise InvalidEvent(
                f"Protobuf body does not decode with schema id {schema_id} ({type(err).__name__})"
            ) from None
        return Decoded((schema_id, indexes), proto_event(message))


def _message_indexes(body: memoryview, schema_id: int) -> tuple[tuple[int, ...], int]:
    """The message indexes at the start of a Protobuf body, and where the message starts."""
    position = 0

    def varint() -> int:
        nonlocal position
        shift = result = 0
        while True:
            if position >= len(body) or shift > 63:
                raise InvalidEvent(f"Protobuf frame of schema id {schema_id}: its message indexes are cut off")
            byte = body[position]
            position += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return (result >> 1) ^ -(result & 1)  # zigzag
            shift += 7

    count = varint()
    if count == 0:
        return (0,), position
    if count < 0 or count > 64:
        raise InvalidEvent(f"Protobuf frame of schema id {schema_id}: {count} message indexes")
    return tuple(varint() for _ in range(count)), position


def proto_event(message: Any) -> dict[str, Any]:
    """A message as Python values: every field, unset scalars at their defaults, unset messages ``None``;
    enums by name, ``Timestamp`` as an aware ``datetime``, other well-known types in their JSON mapping."""
    from google.protobuf.descriptor import FieldDescriptor

    event: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            event[field.name] = {key: _proto_value(value_field, item) for key, item in value.items()}
        elif field.label == FieldDescriptor.LABEL_REPEATED:
            event[field.name] = [_proto_value(field, item) for item in value]
        elif field.message_type is not None and not message.HasField(field.name):
            event[field.name] = None
        else:
            event[field.name] = _proto_value(field, value)
    return event


def _proto_value(field: Any, value: Any) -> Any:
    from google.protobuf.descriptor import FieldDescriptor

    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return value
    full_name = field.message_type.full_name
    if full_name == "google.protobuf.Timestamp":
        return value.ToDatetime(tzinfo=UTC)
    if full_name.startswith("google.protobuf."):
        from google.protobuf import json_format

        return json_format.MessageToDict(value)
    return proto_event(value)


class JsonSchemaDecoder:
    """JSON bodies framed with a JSON Schema's id: the event is the JSON object as produced."""

    kind = "json_schema"

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        self._parsed: dict[int, dict[str, Any]] = {}

    def source_schema(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._parsed:
            schema = _schema(self.registry, schema_id, "JSON")
            try:
                parsed = json.loads(schema.text)
            except ValueError:
                raise InvalidEvent(f"schema id {schema_id}: not a valid JSON Schema") from None
            self._parsed[schema_id] = parsed if isinstance(parsed, dict) else {}
        return self._parsed[schema_id]

    def decode(self, value: bytes | None) -> Decoded:
        schema_id, body = split_frame(value)
        self.source_schema(schema_id)
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise InvalidEvent(f"not valid UTF-8 JSON after the frame of schema id {schema_id}: {err}") from None
        if type(event) is not dict:
            raise InvalidEvent(f"JSON value is a {type(event).__name__}, expected an object")
        return Decoded(schema_id, event)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def event_line(event: dict[str, Any]) -> bytes:
    """A decoded event as one JSON line (newline included): times in RFC 3339 (UTC as ``Z``), decimals as
    strings (exact), bytes in base64, UUIDs as text."""
    return orjson.dumps(
        event,
        default=_json_default,
        option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
    )
