"""Parquet files: each event a row, its columns from the event's schema, written through ``pyarrow``.

Columns come from the schema a framed record names in the registry (Avro, Protobuf, JSON Schema) or, for
JSON events, from the exporter's ``value_schema``; :func:`arrow_schema` maps each (the README's "Parquet
files" has the table). With ``format: envelope`` the record's ``partition``, ``offset``, ``timestamp``,
``key`` and ``headers`` are columns too, beside a ``value`` struct.

:class:`ParquetFile` is the writer's :class:`~strm_provider.writer.RollingFile` for Parquet: files are cut
where JSON Lines files would be (``max_file_bytes`` counts the records' value bytes as read from Kafka),
and also where the next event has another schema, so no file mixes two. Rows reach the file in row
groups of at most :data:`ROW_GROUP_ROWS` rows or :data:`ROW_GROUP_BYTES` of record values, cut at
points that depend on the rows only: a replay writes the same row groups.
"""

from __future__ import annotations

import importlib.abc
import io
import sys
from bisect import bisect_left
from collections.abc import Callable, Hashable
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from strm_provider.hooks.storage import StorageHook
from strm_provider.lines import Lines
from strm_provider.readers import Batch, RecordMeta
from strm_provider.writer import RollingFile

#: a row group's bound: at 16,384 rows of the benchmark's events a group is 8.5 MB of Arrow data (65,536 rows
#: cost 30 MB more at peak for files 3 % smaller)
ROW_GROUP_ROWS = 16_384
ROW_GROUP_BYTES = 8 * 1024 * 1024

#: the columns of a Parquet dead-letter file, as the JSON Lines dead letter's keys
DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.int64()),
        ("key_b64", pa.string()),
        ("value_b64", pa.string()),
        ("error", pa.string()),
    ]
)
ENVELOPE_FIELDS = [
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("timestamp", pa.timestamp("ms", tz="UTC")),
    ("key", pa.binary()),
    ("headers", pa.list_(pa.struct([("name", pa.string()), ("value", pa.binary())]))),
]


class UnsupportedSchema(ValueError):
    """A schema with a type Parquet columns cannot hold as this exporter writes them."""


def arrow_schema(kind: str, source: Any, envelope: bool = False) -> pa.Schema:
    """The columns of events of ``source`` (an Avro schema as ``fastavro`` parses it, a Protobuf message
    descriptor, or a JSON Schema; ``kind``: ``avro``, ``protobuf``, ``json_schema``)."""
    if kind == "avro":
        value = _avro(source, source.get("__named_schemas", {}) if isinstance(source, dict) else {})
    elif kind == "protobuf":
        value = _proto_message(source)
    else:
        value = _json_schema(source)
    if not pa.types.is_struct(value):
        value = pa.struct([("value", value)])
    if envelope:
        return pa.schema([*ENVELOPE_FIELDS, ("value", value)])
    return pa.schema(list(value))


_AVRO_PRIMITIVES = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_AVRO_LOGICAL = {
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "uuid": pa.string(),
}


def _avro(schema: Any, named: dict[str, Any]) -> pa.DataType:
    if isinstance(schema, str):
        if schema in _AVRO_PRIMITIVES:
            return _AVRO_PRIMITIVES[schema]
        if schema in named:
            return _avro(named[schema], named)
        raise UnsupportedSchema(f"Avro type {schema!r} is not defined")
    if isinstance(schema, list):
        members = [member for member in schema if member != "null"]
        if len(members) != 1:
            raise UnsupportedSchema(f"Avro union {schema}: Parquet columns take a union of null and one type only")
        return _avro(members[0], named)
    logical = schema.get("logicalType")
    if logical == "decimal":
        precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if logical in _AVRO_LOGICAL:
        return _AVRO_LOGICAL[logical]
    kind = schema["type"]
    if kind == "record":
        return pa.struct([pa.field(f["name"], _avro(f["type"], named)) for f in schema["fields"]])
    if kind == "enum":
        return pa.string()
    if kind == "array":
        return pa.list_(_avro(schema["items"], named))
    if kind == "map":
        return pa.map_(pa.string(), _avro(schema["values"], named))
    if kind == "fixed":
        return pa.binary(int(schema["size"]))
    return _avro(kind, named)


def _proto_message(descriptor: Any) -> pa.DataType:
    return pa.struct([pa.field(field.name, _proto_field(field)) for field in descriptor.fields])


def _proto_field(field: Any) -> pa.DataType:
    from google.protobuf.descriptor import FieldDescriptor

    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        entry = field.message_type.fields_by_name
        return pa.map_(_proto_single(entry["key"]), _proto_single(entry["value"]))
    single = _proto_single(field)
    return pa.list_(single) if field.label == FieldDescriptor.LABEL_REPEATED else single


def _proto_single(field: Any) -> pa.DataType:
    from google.protobuf.descriptor import FieldDescriptor as F

    scalars = {
        F.TYPE_DOUBLE: pa.float64(),
        F.TYPE_FLOAT: pa.float32(),
        F.TYPE_INT64: pa.int64(),
        F.TYPE_SINT64: pa.int64(),
        F.TYPE_SFIXED64: pa.int64(),
        F.TYPE_UINT64: pa.uint64(),
        F.TYPE_FIXED64: pa.uint64(),
        F.TYPE_INT32: pa.int32(),
        F.TYPE_SINT32: pa.int32(),
        F.TYPE_SFIXED32: pa.int32(),
        F.TYPE_UINT32: pa.uint32(),
        F.TYPE_FIXED32: pa.uint32(),
        F.TYPE_BOOL: pa.bool_(),
        F.TYPE_STRING: pa.string(),
        F.TYPE_BYTES: pa.binary(),
        F.TYPE_ENUM: pa.string(),
    }
    if field.type in scalars:
        return scalars[field.type]
    full_name = field.message_type.full_name
    if full_name == "google.protobuf.Timestamp":
        return pa.timestamp("us", tz="UTC")
    if full_name.startswith("google.protobuf."):
        raise UnsupportedSchema(f"Protobuf field {field.name!r}: {full_name} has no Parquet column here")
    return _proto_message(field.message_type)


_JSON_SCALARS = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}


def _json_schema(schema: Any) -> pa.DataType:
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"JSON Schema {schema!r}: expected an object")
    kinds = schema.get("type")
    if kinds is None and "enum" in schema and all(isinstance(value, str) for value in schema["enum"]):
        kinds = "string"
    if isinstance(kinds, list):
        members = [kind for kind in kinds if kind != "null"]
        if len(members) != 1:
            raise UnsupportedSchema(f"JSON Schema type {kinds}: Parquet columns take null and one type only")
        return _json_schema({**schema, "type": members[0]})
    if kinds == "object":
        properties = schema.get("properties")
        if properties:
            return pa.struct([pa.field(name, _json_schema(sub)) for name, sub in properties.items()])
        values = schema.get("additionalProperties")
        return pa.map_(pa.string(), _json_schema(values) if isinstance(values, dict) else pa.string())
    if kinds == "array":
        return pa.list_(_json_schema(schema.get("items", {"type": "string"})))
    if kinds in _JSON_SCALARS:
        return _JSON_SCALARS[kinds]
    raise UnsupportedSchema(f"JSON Schema type {kinds!r}: expected object, array, string, integer, number or boolean")


def envelope_rows(events: list[dict[str, Any]], metas: list[RecordMeta], partition: int) -> list[dict[str, Any]]:
    """Rows of :data:`ENVELOPE_FIELDS` with each event as ``value``."""
    return [
        {
            "partition": partition,
            "offset": meta.offset,
            "timestamp": meta.timestamp,
            "key": meta.key,
            "headers": [{"name": name, "value": value} for name, value in meta.headers],
            "value": event,
        }
        for event, meta in zip(events, metas, strict=True)
    ]


class _NoPandas(importlib.abc.MetaPathFinder):
    """Refuses to import pandas, for :func:`_lean_pyarrow`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not needed to convert an export's rows")


def _lean_pyarrow() -> None:
    """pyarrow as an export task needs it: its buffers from the C library's allocator, which the export
    returns to the OS when they are freed (:mod:`strm_provider.tuning`), instead of mimalloc's arenas that
    keep them; and without pandas. pyarrow imports pandas (about 50 MB) the first time it converts Python
    values, only to recognise pandas objects, which an export never gives it; it tries once per process, so a
    refused first try keeps pandas out of the export task. Code that imports pandas itself later gets it."""
    pa.set_memory_pool(pa.system_memory_pool())
    if "pandas" in sys.modules:
        return
    refuse = _NoPandas()
    sys.meta_path.insert(0, refuse)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(refuse)


class Columns:
    """Rows of Parquet files for events of each schema; ``source(schema)`` gives ``(kind, parsed schema)``
    for a :attr:`Lines.schema` (see :func:`arrow_schema`)."""

    def __init__(self, source: Callable[[Hashable], tuple[str, Any]], envelope: bool) -> None:
        self._source = source
        self._envelope = envelope
        self._schemas: dict[Hashable, pa.Schema] = {}
        _lean_pyarrow()

    def schema(self, key: Hashable) -> pa.Schema:
        if key not in self._schemas:
            self._schemas[key] = arrow_schema(*self._source(key), envelope=self._envelope)
        return self._schemas[key]

    def rows(self, events: list[dict[str, Any]], batch: Batch, first: int, key: Hashable) -> pa.RecordBatch:
        """Rows of ``events``, records ``first ...`` of ``batch``; :class:`ValueError` says what does not fit."""
        if self._envelope:
            metas = [batch.meta(first + i) for i in range(len(events))]
            events = envelope_rows(events, metas, batch.partition)
        return to_rows(events, self.schema(key))

    @staticmethod
    def dead_letter_rows(letters: list[dict[str, Any]]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist(letters, schema=DEAD_LETTER_SCHEMA)


def to_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """``rows`` as a record batch of ``schema``; :class:`ValueError` names what does not fit."""
    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"does not fit the Parquet columns: {err}") from None


def empty_parquet() -> bytes:
    """A Parquet file of no rows and no columns: the validation file of a Parquet exporter."""
    out = io.BytesIO()
    pq.write_table(pa.table({}), out)
    return out.getvalue()


class _Counted(io.RawIOBase):
    """The upload stream as ``pyarrow`` writes to it: counts the bytes, and leaves closing to the upload."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.out.write(data)
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def close(self) -> None:  # the upload completes when the rolling file closes it
        pass


class ParquetFile(RollingFile):
    """Parquet files named, cut and uploaded as :class:`RollingFile` does JSON Lines; rows come as the
    :attr:`Lines.rows` of each :class:`Lines`, and a file holds one :attr:`Lines.schema` only."""

    def __init__(
        self,
        storage: StorageHook,
        key_for: Callable[[int, RecordMeta], str],
        max_bytes: int,
        max_events: int | None,
        before_close: Callable[[], None] | None = None,
        compression: str = "zstd",
        period_ms: int | None = None,
    ) -> None:
        super().__init__(storage, key_for, max_bytes, max_events, before_close, "none", period_ms)
        self._codec = compression
        self._schema: Hashable = None
        self._parquet: pq.ParquetWriter | None = None
        self._counted: _Counted | None = None
        self._group: list[pa.RecordBatch] = []
        self._group_rows = 0
        self._group_bytes = 0

    def write(self, lines: Lines) -> None:
        if self._out is not None and lines.schema != self._schema:
            self.close(wait=False)
        super().write(lines)

    def _open(self, lines: Lines, index: int) -> None:
        super()._open(lines, index)
        assert self._out is not None and lines.rows is not None
        self._schema = lines.schema
        self._counted = _Counted(self._out)
        self._parquet = pq.ParquetWriter(self._counted, lines.rows.schema, compression=self._codec)

    def _append(self, lines: Lines, start: int, count: int) -> None:
        """Add rows ``start .. start + count`` of ``lines``, writing each row group as it fills."""
        assert lines.rows is not None
        ends = lines.ends
        done = start
        while done < start + count:
            base = ends[done - 1] if done else 0
            take = min(start + count - done, ROW_GROUP_ROWS - self._group_rows)
            # up to the row whose value bytes fill the group, found by bisection as the file's cut points are
            fills = bisect_left(ends, base + ROW_GROUP_BYTES - self._group_bytes, lo=done, hi=done + take)
            take = min(take, fills - done + 1)
            self._group.append(lines.rows.slice(done, take))
            size = ends[done + take - 1] - base
            self._group_rows += take
            self._group_bytes += size
            self._bytes += size
            self._events += take
            self.total_bytes += size
            self.total_events += take
            done += take
            if self._group_rows >= ROW_GROUP_ROWS or self._group_bytes >= ROW_GROUP_BYTES:
                self._write_group()

    def _write_group(self) -> None:
        if self._group and self._parquet is not None:
            table = pa.Table.from_batches(self._group)
            self._parquet.write_table(table, row_group_size=len(table))
        self._group.clear()
        self._group_rows = self._group_bytes = 0

    def close(self, wait: bool = True) -> None:
        if self._parquet is not None:
            try:
                self._write_group()
                self._parquet.close()
                self._parquet = None
            except BaseException as err:
                self.abort(err)
                raise
            assert self._counted is not None
            # what the parent counts as stored: the Parquet bytes, not the records' value bytes
            self._bytes = self._counted.written
        super().close(wait)

    def abort(self, err: BaseException) -> None:
        self._parquet = None
        self._group.clear()
        self._group_rows = self._group_bytes = 0
        super().abort(err)
