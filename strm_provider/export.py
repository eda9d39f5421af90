"""The export semantics: read planned ranges, write JSON Lines files, commit only after upload.

This module knows nothing of Airflow; the operators wrap it. It is what the exactly-once
guarantee rests on:

- the ranges come from a fixed plan, so a retry reads exactly the same records;
- partitions are read one after another in ascending order, so a file's content and its
  rotation points are a pure function of the plan and the topic;
- a file's name is a pure function of its content (:mod:`strm_provider.naming`), so a re-export
  overwrites instead of duplicating;
- offsets are committed only after every file of the set has been uploaded, and only if the
  group still holds the offsets this run planned from.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from strm_provider.config import default
from strm_provider.hooks.storage import StorageHook
from strm_provider.lines import Events, Lines, batch_lines
from strm_provider.offsets import ExportError, already_committed, check_group, commit_ranges
from strm_provider.planning import PartitionRange
from strm_provider.readers import Batch, RecordReader
from strm_provider.schema_registry import RegistryClient
from strm_provider.tuning import tuned_for_export
from strm_provider.writer import SetWriter

log = logging.getLogger(__name__)

#: How many distinct reasons for dead letters a summary keeps (each with its count; the rest are counted
#: under "(other reasons)").
REASONS_KEPT = 10
#: How long a partition may deliver nothing while offsets remain before the export gives up.
STALL_SECONDS = 60.0


@dataclass
class ExportResult:
    """What one partition set exported: the task's XCom summary (no secrets)."""

    events: int = 0
    #: of the events' JSON Lines, before compression
    bytes: int = 0
    #: of the files as stored (compressed when compressed)
    stored_bytes: int = 0
    files: list[str] = field(default_factory=list)
    dead_letters: int = 0
    dead_letter_files: list[str] = field(default_factory=list)
    #: why records were refused: each reason (up to :data:`REASONS_KEPT`) with how many it refused
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    partitions: list[dict[str, Any]] = field(default_factory=list)
    committed: bool = False
    lost_to_retention: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_ranges(
    consumer: Any,
    reader: RecordReader,
    storage: StorageHook,
    *,
    stream: str,
    path_prefix: str,
    partitions: list[int],
    ranges: list[PartitionRange],
    on_invalid_event: str = default("on_invalid_event"),
    max_file_bytes: int = default("max_file_bytes"),
    max_file_events: int | None = default("max_file_events"),
    compression: str = default("compression"),
    record_format: str = default("format"),
    value_format: str = default("value_format"),
    file_format: str = default("file_format"),
    value_schema: dict[str, Any] | None = None,
    name_style: str = default("name_style"),
    registry: RegistryClient | None = None,
    commit_metadata: str = "",
) -> ExportResult:
    """Export ``ranges`` of ``stream`` (one partition set) and commit their end offsets.

    ``consumer`` is a kafka-python consumer whose ``group_id`` is the exporter's group: it checks
    and commits offsets. ``reader`` reads the records (either client, see :mod:`strm_provider.readers`).
    ``path_prefix`` may be a template of the events' time (:mod:`strm_provider.naming`);
    ``compression`` is ``none``, ``gzip`` or ``zstd`` (for Parquet also ``snappy``); ``record_format`` is
    ``value`` (each line is the event) or ``envelope`` (:func:`~strm_provider.lines.envelope_line`).
    ``value_format`` other than ``json`` decodes framed records with the schemas of ``registry``
    (:mod:`strm_provider.decoders`); ``file_format`` ``parquet`` writes Parquet files
    (:mod:`strm_provider.parquet`), whose columns JSON events take from ``value_schema``. What is not
    given is what an exporter file leaves out (:func:`strm_provider.config.default`).
    """
    ranges = sorted(ranges, key=lambda r: r.partition)
    if already_committed(consumer, stream, ranges):
        return _nothing_left(ranges)
    out = SetWriter(
        storage,
        stream=stream,
        path_prefix=path_prefix,
        partitions=partitions,
        starts={r.partition: r.start for r in ranges},
        max_bytes=max_file_bytes,
        max_events=max_file_events,
        compression=compression,
        before_close=lambda: _refuse_if_moved(consumer, stream, ranges),
        file_format=file_format,
        name_style=name_style,
    )
    events = event_maker(value_format, file_format, record_format, value_schema, registry)
    result = ExportResult()
    write = partial(_write_batch, out, record_format, on_invalid_event, events, result.dead_letter_reasons)
    with tuned_for_export(), out:
        for i, rng in enumerate(ranges):
            following = next((r for r in ranges[i + 1 :] if r.size), None)
            if rng.size and following is not None:
                reader.prefetch(stream, following.partition, following.start)
            earliest = partial(_earliest, consumer, stream, rng.partition)
            result.partitions.append(_export_range(reader, stream, rng, out, write, earliest))
    for key in out.events.keys + out.dead_letters.keys:
        log.info("stored %s", key)
    _fill(result, out)
    commit_ranges(consumer, stream, ranges, commit_metadata)
    result.committed = True
    return result


def _nothing_left(ranges: list[PartitionRange]) -> ExportResult:
    """The result of a set whose every range an earlier attempt (or a later run) committed."""
    partitions = [
        {
            "partition": r.partition,
            "start": r.start,
            "end": r.end,
            "events": 0,
            "dead_letters": 0,
            "lost_to_retention": r.lost_to_retention,
            "already_committed": True,
        }
        for r in ranges
    ]
    lost = sum(r.lost_to_retention for r in ranges)
    return ExportResult(partitions=partitions, committed=True, lost_to_retention=lost)


def _refuse_if_moved(consumer: Any, stream: str, ranges: list[PartitionRange]) -> None:
    """Before a file completes: refuse if another run moved the group meanwhile (offsets.check_group)."""
    if any(check_group(consumer, stream, ranges)):
        raise ExportError("another run of the same exporter committed these offsets meanwhile; not overwriting")


def _fill(result: ExportResult, out: SetWriter) -> None:
    """The set's totals, once every file is stored."""
    result.events, result.bytes, result.files = out.events.total_events, out.events.total_bytes, out.events.keys
    result.stored_bytes = out.events.total_stored_bytes
    result.dead_letters, result.dead_letter_files = out.dead_letters.total_events, out.dead_letters.keys
    result.lost_to_retention = sum(p["lost_to_retention"] for p in result.partitions)


def _export_range(
    reader: RecordReader,
    stream: str,
    rng: PartitionRange,
    out: SetWriter,
    write: Callable[[Batch], None],
    earliest: Callable[[], int],
) -> dict[str, Any]:
    """Read one planned range into the set's files; its entry of the summary."""
    files, dead = out.events, out.dead_letters
    events_before, dead_before, files_before = files.total_events, dead.total_events, len(files.keys)
    lost = rng.lost_to_retention
    if rng.size:
        lost += _read_partition(reader, stream, rng, write, earliest)
    out.read_up_to(rng.partition, rng.end)
    written = files.total_events - events_before
    entry = {
        "partition": rng.partition,
        "start": rng.start,
        "end": rng.end,
        "events": written,
        "dead_letters": dead.total_events - dead_before,
        "lost_to_retention": lost,
    }
    # read, not yet stored: the file's upload completes when it is closed
    log.info(
        "partition %s: offsets %s..%s read, %s events, %s dead letters, into file %s",
        rng.partition,
        rng.start,
        rng.end,
        written,
        entry["dead_letters"],
        (files.keys[-1] if len(files.keys) > files_before or written else "(none)"),
    )
    return entry


def _read_partition(
    reader: RecordReader,
    stream: str,
    rng: PartitionRange,
    write: Callable[[Batch], None],
    earliest: Callable[[], int],
) -> int:
    """Read ``[rng.start, rng.end)`` of one partition, a batch at a time, into ``write``; return how
    many offsets retention deleted before they were read."""
    lost = 0
    position = rng.start
    last_progress = time.monotonic()
    for batch in reader.batches(stream, rng.partition, rng.start, rng.end):
        if not batch.values:
            if time.monotonic() - last_progress > STALL_SECONDS:
                raise ExportError(
                    f"partition {rng.partition}: no records for {STALL_SECONDS:.0f}s at offset "
                    f"{position} while {rng.end} is the planned end (broker down?)"
                )
            continue
        last_progress = time.monotonic()
        gone = _lost_in(batch, position, earliest)
        if gone:
            log.warning(
                "partition %s: %s offsets from %s were deleted by retention while this run read them",
                rng.partition,
                gone,
                position,
            )
            lost += gone
        write(batch)
        position = batch.meta(len(batch.values) - 1).offset + 1
    return lost


def event_maker(
    value_format: str,
    file_format: str,
    record_format: str,
    value_schema: dict[str, Any] | None,
    registry: RegistryClient | None,
) -> Events | None:
    """How records become events, for an exporter that does more than keep JSON values as produced."""
    if value_format == "json" and file_format == "jsonl":
        return None
    from strm_provider.decoders import decoder, event_line

    if value_format == "json":
        decode = None
        fixed = _fixed_schema(value_schema, registry)
        source: Callable[[Hashable], tuple[str, Any]] = lambda _key: fixed  # noqa: E731
    else:
        if registry is None:
            raise ValueError(f"value_format {value_format} needs a Schema Registry")
        framed = decoder(value_format, registry)
        decode = framed.decode
        source = lambda key: (framed.kind, framed.source_schema(key))  # noqa: E731
    if file_format != "parquet":
        return Events(decode, event_line)
    from strm_provider.parquet import Columns

    columns = Columns(source, envelope=record_format == "envelope")
    return Events(decode, event_line, columns.rows, columns.dead_letter_rows)


def _fixed_schema(value_schema: dict[str, Any] | None, registry: RegistryClient | None) -> tuple[str, Any]:
    """The columns' source of JSON events: the exporter's Avro record schema or JSON Schema, or one version
    of a registry subject (an Avro or JSON Schema)."""
    if value_schema is None:
        raise ValueError("value_schema: a Parquet exporter of JSON events needs the schema of its columns")
    if "subject" in value_schema:
        if registry is None:
            raise ValueError("value_schema: a registry subject needs the Kafka connection's schema_registry_url")
        registered = registry.version(value_schema["subject"], value_schema["version"])
        if registered.schema_type not in ("AVRO", "JSON"):
            raise ValueError(f"value_schema: {value_schema['subject']} is a {registered.schema_type} schema")
        value_schema = json.loads(registered.text)
    if value_schema.get("type") == "record":
        import fastavro

        return "avro", fastavro.parse_schema(value_schema)
    return "json_schema", value_schema


def _write_batch(
    out: SetWriter,
    record_format: str,
    on_invalid_event: str,
    events: Events | None,
    reasons: dict[str, int],
    batch: Batch,
) -> None:
    """The batch's events into the set's files, in offset order; each record that is not an event
    becomes a dead letter (its reason counted in ``reasons``), or fails the export."""
    for part in batch_lines(batch, record_format, events):
        if isinstance(part, Lines):
            out.events.write(part)
        elif on_invalid_event == "fail":
            raise ExportError(
                f"partition {batch.partition} offset {part.offset}: {part.error} "
                "(on_invalid_event: fail; nothing was committed)"
            )
        else:
            out.dead_letters.write(part.dead_letter)
            reason = part.error if part.error in reasons or len(reasons) < REASONS_KEPT else "(other reasons)"
            reasons[reason] = reasons.get(reason, 0) + 1


def _earliest(consumer: Any, stream: str, partition: int) -> int:
    from kafka import TopicPartition

    tp = TopicPartition(stream, partition)
    return int(consumer.beginning_offsets([tp])[tp])


def _lost_in(batch: Batch, position: int, earliest: Callable[[], int]) -> int:
    """Offsets from ``position`` up to ``batch`` that retention deleted while the run read the partition.

    The reader's position then falls below the earliest offset, and the client resumes from there: the
    batch starts past ``position``, or jumps inside. Gaps also come from transaction markers and
    compaction; they are told apart by asking Kafka for the earliest offset, only when there is a gap.
    """
    count = len(batch.values)
    first, last = batch.meta(0).offset, batch.meta(count - 1).offset
    if first == position and last - first + 1 == count:
        return 0
    low = earliest()
    if low <= position:
        return 0
    read_below = sum(1 for i in range(count) if batch.meta(i).offset < low)
    return max(min(low, last + 1) - position - read_below, 0)
