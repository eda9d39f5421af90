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

import ctypes
import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add
from typing import Any

from strm_provider.events import InvalidEvent, dead_letter_line, envelope_line, to_block, to_line
from strm_provider.hooks.storage import StorageHook
from strm_provider.naming import object_key, period_ms
from strm_provider.offsets import ExportError, already_committed, check_group, commit_ranges
from strm_provider.planning import PartitionRange
from strm_provider.readers import Batch, RecordReader
from strm_provider.writer import RollingFile

log = logging.getLogger(__name__)

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
    on_invalid_event: str = "dead_letter",
    max_file_bytes: int = 128 * 1024 * 1024,
    max_file_events: int | None = None,
    compression: str = "none",
    record_format: str = "value",
    commit_metadata: str = "",
) -> ExportResult:
    """Export ``ranges`` of ``stream`` (one partition set) and commit their end offsets.

    ``consumer`` is a kafka-python consumer whose ``group_id`` is the exporter's group: it checks
    and commits offsets. ``reader`` reads the records (either client, see :mod:`strm_provider.readers`).
    ``path_prefix`` may be a template of the events' time (:mod:`strm_provider.naming`);
    ``compression`` is ``none``, ``gzip`` or ``zstd``; ``record_format`` is ``value`` (each line is
    the event) or ``envelope`` (:func:`~strm_provider.events.envelope_line`).
    """
    ranges = sorted(ranges, key=lambda r: r.partition)
    cursor = {r.partition: r.start for r in ranges}
    set_partitions = sorted(partitions)

    def key_for(dead: bool) -> Callable[[int, dict[int, int]], str]:
        return lambda ts, starts: object_key(
            path_prefix, stream, ts, starts, set_partitions, dead_letter=dead, compression=compression
        )

    result = ExportResult()
    if already_committed(consumer, stream, ranges):
        result.committed = True
        result.partitions = [
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
        result.lost_to_retention = sum(r.lost_to_retention for r in ranges)
        return result

    def guard() -> None:
        """Before a file completes: refuse if another run moved the group meanwhile (offsets.check_group)."""
        if any(check_group(consumer, stream, ranges)):
            raise ExportError("another run of the same exporter committed these offsets meanwhile; not overwriting")

    files = RollingFile(storage, key_for(False), max_file_bytes, max_file_events, guard, compression)
    dead = RollingFile(storage, key_for(True), max_file_bytes, max_file_events, guard, compression)
    lines = _Lines(period_ms(path_prefix), record_format == "envelope")
    _return_large_buffers_to_the_os()
    with _collected_between_batches():
        try:
            for i, rng in enumerate(ranges):
                events_before, dead_before, files_before = files.total_events, dead.total_events, len(files.keys)
                following = next((r for r in ranges[i + 1 :] if r.size), None)
                if rng.size and following is not None:
                    reader.prefetch(stream, following.partition, following.start)
                lost = rng.lost_to_retention
                if rng.size:
                    lost += _read_partition(
                        reader,
                        stream,
                        rng,
                        cursor,
                        files,
                        dead,
                        on_invalid_event,
                        lines,
                        lambda p=rng.partition: _earliest(consumer, stream, p),
                    )
                cursor[rng.partition] = rng.end
                written = files.total_events - events_before
                entry = {
                    "partition": rng.partition,
                    "start": rng.start,
                    "end": rng.end,
                    "events": written,
                    "dead_letters": dead.total_events - dead_before,
                    "lost_to_retention": lost,
                }
                result.partitions.append(entry)
                result.lost_to_retention += lost
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
            files.close()
            dead.close()
        except BaseException as err:
            files.abort(err)
            dead.abort(err)
            raise
    for key in files.keys + dead.keys:
        log.info("stored %s", key)
    result.events, result.bytes, result.files = files.total_events, files.total_bytes, files.keys
    result.stored_bytes = files.total_stored_bytes
    result.dead_letters, result.dead_letter_files = dead.total_events, dead.keys

    commit_ranges(consumer, stream, ranges, commit_metadata)
    result.committed = True
    return result


def _return_large_buffers_to_the_os() -> None:
    """Serve every allocation over 128 KiB with its own mapping, returned to the OS when freed.

    glibc raises its mmap threshold each time such a buffer is freed (up to 32 MiB); after that the
    export's fetch buffers, batches and upload parts (MiBs each, made and freed by several threads)
    come from per-thread heaps that fragment and are not trimmed, and the task's peak RSS followed
    the backlog (393 MB at 1M events, 520 MB at 4M; 247 MB at 1M with the threshold fixed, which
    also stops the adjustment). Other C libraries have no ``mallopt`` and nothing to fix.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold = -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 128 * 1024)


@contextmanager
def _collected_between_batches() -> Iterator[None]:
    """Collect garbage every 100,000 allocations, not every 700, and never rescan the task's imports.

    Reading allocates an object or more per record (kafka-python: a record, a tuple and a list;
    librdkafka: a message), and a batch keeps thousands alive while it is written. With Python's
    thresholds the collector ran every 700 allocations and rescanned the live batch again and again:
    0.9 s of a 3.8 s confluent export of 300,000 events was ``gc_collect_main`` under ``consume``
    (``BENCH_PROFILE=py-spy``). A pass every 100,000 allocations still finds the few cycles the
    clients make, within a few batches. The objects that exist before the export (an Airflow task
    holds ~200,000 from its imports) are frozen, so no pass scans them.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@dataclass(frozen=True)
class _Lines:
    """How a batch's events become lines: whole values or envelopes, and the folder period of each."""

    period: int | None  # ms per folder of a templated prefix (naming.period_ms), None when untemplated
    envelope: bool

    def periods(self, batch: Batch) -> list[int] | None:
        if self.period is None:
            return None
        period = self.period
        return [max(ts, 0) // period for ts in batch.timestamps()]

    def wrap(self, batch: Batch, first: int, values: list[bytes]) -> list[bytes]:
        """Envelopes of ``values`` (one-line JSON, no newline), records ``first, first+1, ...`` of ``batch``."""
        return [envelope_line(batch.partition, batch.meta(first + i), v) for i, v in enumerate(values)]


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


def _read_partition(
    reader: RecordReader,
    stream: str,
    rng: PartitionRange,
    cursor: dict[int, int],
    files: RollingFile,
    dead: RollingFile,
    on_invalid_event: str,
    how: _Lines,
    earliest: Callable[[], int],
) -> int:
    """Read ``[rng.start, rng.end)`` of one partition into the files, a batch at a time; return how
    many offsets retention deleted before they were read.

    Valid events go out in runs (one write per run); an invalid one ends a run and becomes a dead
    letter (or fails the task), so files and dead letters keep offset order either way.
    """
    lost = 0
    last_progress = time.monotonic()
    for batch in reader.batches(stream, rng.partition, rng.start, rng.end):
        values = batch.values
        if values:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            raise ExportError(
                f"partition {rng.partition}: no records for {STALL_SECONDS:.0f}s at offset "
                f"{cursor[rng.partition]} while {rng.end} is the planned end (broker down?)"
            )
        if not values:
            continue
        gone = _lost_in(batch, cursor[rng.partition], earliest)
        if gone:
            log.warning(
                "partition %s: %s offsets from %s were deleted by retention while this run read them",
                rng.partition,
                gone,
                cursor[rng.partition],
            )
            lost += gone
        periods = how.periods(batch)
        block = to_block(values)
        if block is not None:  # the common case: a batch of one-line JSON objects, handled whole
            if how.envelope:
                files.write_lines(how.wrap(batch, 0, values), batch, 0, cursor, periods)  # type: ignore[arg-type]
            else:
                ends = list(accumulate(map(add, map(len, values), repeat(1))))  # type: ignore[arg-type]
                files.write_block(block, ends, batch, 0, cursor, periods)
            cursor[rng.partition] = batch.meta(len(values) - 1).offset + 1
            continue
        first = 0
        while first < len(values):
            lines: list[bytes] = []
            error = None
            for value in values[first:] if first else values:
                try:
                    lines.append(to_line(value))
                except InvalidEvent as err:
                    error = err
                    break
            if lines:
                if how.envelope:
                    lines = how.wrap(batch, first, [line[:-1] for line in lines])
                run = None if periods is None else periods[first : first + len(lines)]
                files.write_lines(lines, batch, first, cursor, run)
            bad = first + len(lines)
            if error is not None:
                meta = batch.meta(bad)
                if on_invalid_event == "fail":
                    raise ExportError(
                        f"partition {rng.partition} offset {meta.offset}: {error} "
                        "(on_invalid_event: fail; nothing was committed)"
                    )
                line = dead_letter_line(rng.partition, meta.offset, meta.timestamp, meta.key, values[bad], str(error))
                dead.write_lines([line], batch, bad, cursor)
                bad += 1
            first = bad
            cursor[rng.partition] = batch.meta(first - 1).offset + 1
    return lost
