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
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add
from typing import IO, Any

from strm_provider.events import InvalidEvent, dead_letter_line, to_block, to_line
from strm_provider.hooks.storage import StorageHook
from strm_provider.naming import object_key
from strm_provider.planning import PartitionRange
from strm_provider.readers import Batch, RecordReader

log = logging.getLogger(__name__)

#: How long a partition may deliver nothing while offsets remain before the export gives up.
STALL_SECONDS = 60.0


class ExportError(Exception):
    """The export could not complete; nothing past the failure point was committed."""


@dataclass
class ExportResult:
    """What one partition set exported: the task's XCom summary (no secrets)."""

    events: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)
    dead_letters: int = 0
    dead_letter_files: list[str] = field(default_factory=list)
    partitions: list[dict[str, Any]] = field(default_factory=list)
    committed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _RollingFile:
    """A sequence of files named from their content, rotated at deterministic boundaries."""

    def __init__(
        self,
        storage: StorageHook,
        key_for: Callable[[int, dict[int, int]], str],
        max_bytes: int,
        max_events: int | None,
        before_close: Callable[[], None] | None = None,
    ) -> None:
        self._before_close = before_close
        self._storage = storage
        self._key_for = key_for
        self._max_bytes = max_bytes
        self._max_events = max_events
        self._cm: AbstractContextManager[IO[bytes]] | None = None
        self._out: IO[bytes] | None = None
        self._bytes = 0
        self._events = 0
        self._finishing: tuple[threading.Thread, list[BaseException]] | None = None
        self.keys: list[str] = []
        self.total_bytes = 0
        self.total_events = 0

    def write_block(self, block: bytes, ends: list[int], batch: Batch, first: int, cursor: dict[int, int]) -> None:
        """Append the lines of ``block`` (line ``i`` ends at byte ``ends[i]``), made from ``batch``'s
        records ``first, first+1, ...``, rotating files where needed.

        Equivalent to appending the lines one at a time (a file takes lines while it stays within
        ``max_bytes`` and ``max_events``, and always takes its first line), but the cut points are
        found by bisection and each run of lines goes out as one slice of the block. A file a line
        opens is named from that record's timestamp and ``cursor`` with the record's own offset.
        """
        view = memoryview(block)
        done = 0
        while done < len(ends):
            if self._out is None:
                offset, timestamp, _ = batch.meta(first + done)
                key = self._key_for(timestamp, {**cursor, batch.partition: offset})
                self._cm = self._storage.open_writer(key)
                self._out = self._cm.__enter__()
                self._bytes = self._events = 0
                self.keys.append(key)
            base = ends[done - 1] if done else 0
            take = bisect_right(ends, base + self._max_bytes - self._bytes, lo=done) - done
            if self._max_events is not None:
                take = min(take, self._max_events - self._events)
            if take <= 0:
                if self._events:
                    self.close(wait=False)
                    continue
                take = 1  # an empty file always takes its first line, however long
            size = ends[done + take - 1] - base
            self._out.write(view[base : base + size])
            self._bytes += size
            self._events += take
            self.total_bytes += size
            self.total_events += take
            done += take

    def write_lines(self, lines: list[bytes], batch: Batch, first: int, cursor: dict[int, int]) -> None:
        """:meth:`write_block` for separate lines."""
        self.write_block(b"".join(lines), list(accumulate(map(len, lines))), batch, first, cursor)

    def close(self, wait: bool = True) -> None:
        """Finish the current upload (unless ``before_close`` refuses: then abort it).

        A rotation passes ``wait=False``: the file's last parts upload in the background while the
        next file fills (at most one file finishes that way at a time). The final ``close()``, which
        comes before any commit, waits for every upload and raises the first failure.
        """
        if self._cm is not None and self._before_close is not None:
            try:
                self._before_close()
            except BaseException as err:
                self.abort(err)
                raise
        cm, self._cm, self._out = self._cm, None, None
        self._wait_finishing()
        if cm is None:
            return
        if wait:
            cm.__exit__(None, None, None)
            return
        errors: list[BaseException] = []

        def finish() -> None:
            try:
                cm.__exit__(None, None, None)
            except BaseException as err:  # raised in the exporting thread by _wait_finishing
                errors.append(err)

        thread = threading.Thread(target=finish, name="finish-upload", daemon=True)
        thread.start()
        self._finishing = (thread, errors)

    def _wait_finishing(self) -> None:
        if self._finishing is not None:
            (thread, errors), self._finishing = self._finishing, None
            thread.join()
            if errors:
                raise errors[0]

    def abort(self, err: BaseException) -> None:
        """Abandon the current upload: no object appears under its name."""
        cm, self._cm, self._out = self._cm, None, None
        if cm is not None:
            try:
                cm.__exit__(type(err), err, err.__traceback__)
            except BaseException:
                log.debug("abandoned upload raised", exc_info=True)
        try:
            self._wait_finishing()  # a file already complete on our side finishes; nothing is committed
        except BaseException:
            log.debug("background upload raised", exc_info=True)


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
    commit_metadata: str = "",
    before_commit: Callable[[], None] | None = None,
) -> ExportResult:
    """Export ``ranges`` of ``stream`` (one partition set) and commit their end offsets.

    ``consumer`` is a kafka-python consumer whose ``group_id`` is the exporter's group: it checks
    and commits offsets. ``reader`` reads the records (either client, see :mod:`strm_provider.readers`).
    ``before_commit`` is a test seam for fault injection between upload and commit.
    """
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    ranges = sorted(ranges, key=lambda r: r.partition)
    cursor = {r.partition: r.start for r in ranges}
    set_partitions = sorted(partitions)

    def key_for(dead: bool) -> Callable[[int, dict[int, int]], str]:
        return lambda ts, starts: object_key(path_prefix, stream, ts, starts, set_partitions, dead_letter=dead)

    result = ExportResult()
    if _already_covered(consumer, stream, ranges, TopicPartition):
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
        return result

    def guard() -> None:
        """Before a file completes: refuse if another run moved the group meanwhile (see :func:`_check_group`)."""
        if any(_check_group(consumer, stream, ranges, TopicPartition)):
            raise ExportError("another run of the same exporter committed these offsets meanwhile; not overwriting")

    files = _RollingFile(storage, key_for(False), max_file_bytes, max_file_events, guard)
    dead = _RollingFile(storage, key_for(True), max_file_bytes, max_file_events, guard)
    _return_large_buffers_to_the_os()
    with _collected_between_batches():
        try:
            for i, rng in enumerate(ranges):
                before = (files.total_events, dead.total_events, len(files.keys))
                following = next((r for r in ranges[i + 1 :] if r.size), None)
                if rng.size and following is not None:
                    reader.prefetch(stream, following.partition, following.start)
                if rng.size:
                    _read_partition(
                        reader,
                        stream,
                        rng,
                        cursor,
                        files,
                        dead,
                        on_invalid_event,
                    )
                cursor[rng.partition] = rng.end
                written = files.total_events - before[0]
                entry = {
                    "partition": rng.partition,
                    "start": rng.start,
                    "end": rng.end,
                    "events": written,
                    "dead_letters": dead.total_events - before[1],
                    "lost_to_retention": rng.lost_to_retention,
                }
                result.partitions.append(entry)
                log.info(
                    "partition %s: offsets %s..%s, %s events written, %s dead letters, file %s",
                    rng.partition,
                    rng.start,
                    rng.end,
                    written,
                    entry["dead_letters"],
                    (files.keys[-1] if len(files.keys) > before[2] or written else "(none)"),
                )
            files.close()
            dead.close()
        except BaseException as err:
            files.abort(err)
            dead.abort(err)
            raise
    result.events, result.bytes, result.files = files.total_events, files.total_bytes, files.keys
    result.dead_letters, result.dead_letter_files = dead.total_events, dead.keys

    if before_commit is not None:
        before_commit()
    _commit(consumer, stream, ranges, commit_metadata, OffsetAndMetadata, TopicPartition)
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


def _read_partition(
    reader: RecordReader,
    stream: str,
    rng: PartitionRange,
    cursor: dict[int, int],
    files: _RollingFile,
    dead: _RollingFile,
    on_invalid_event: str,
) -> None:
    """Read ``[rng.start, rng.end)`` of one partition into the files, a batch at a time.

    Valid events go out in runs (one write per run); an invalid one ends a run and becomes a dead
    letter (or fails the task), so files and dead letters keep offset order either way.
    """
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
        block = to_block(values) if values else None
        if block is not None:  # the common case: a batch of one-line JSON objects, handled whole
            files.write_block(block, list(accumulate(map(add, map(len, values), repeat(1)))), batch, 0, cursor)
            cursor[rng.partition] = batch.meta(len(values) - 1)[0] + 1
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
                files.write_lines(lines, batch, first, cursor)
            bad = first + len(lines)
            if error is not None:
                offset, timestamp, key = batch.meta(bad)
                if on_invalid_event == "fail":
                    raise ExportError(
                        f"partition {rng.partition} offset {offset}: {error} "
                        "(on_invalid_event: fail; nothing was committed)"
                    )
                line = dead_letter_line(rng.partition, offset, timestamp, key, values[bad], str(error))
                dead.write_lines([line], batch, bad, cursor)
                bad += 1
            first = bad
            cursor[rng.partition] = batch.meta(first - 1)[0] + 1


def _commit(consumer: Any, stream: str, ranges: list[PartitionRange], metadata: str, oam: Any, tp_cls: Any) -> None:
    """Commit each range's end, but only where the group still holds what this run planned from.

    A commit only moves a partition forward from the offset the run planned from; if another run
    already moved it, this run commits nothing and fails loudly instead of rewinding or skipping.
    """
    offsets = {}
    for rng in ranges:
        tp = tp_cls(stream, rng.partition)
        current = consumer.committed(tp)
        if current not in (rng.committed, rng.end) and not (rng.committed is None and current is None):
            raise ExportError(
                f"partition {rng.partition}: the group's committed offset moved from {rng.committed} to "
                f"{current} during this run (another run of the same exporter?); not committing"
            )
        offsets[tp] = oam(rng.end, metadata, -1)
    if offsets:
        consumer.commit(offsets)


def _check_group(consumer: Any, stream: str, ranges: list[PartitionRange], tp_cls: Any) -> list[bool | None]:
    """Per range, whether the group already holds at least its end; raise if it holds anything unexpected.

    A range is exportable while the group still holds the offset this run planned from. If the group
    holds the range's end or beyond, every offset of the range was exported and committed (by an
    earlier attempt of this plan, or by a later run: commits only move forward from a plan's start).
    Anything else means another run moved the group into the middle of the range: writing now would
    duplicate events or overwrite a newer file with an older subset, so nothing is written.
    """
    covered = []
    for rng in ranges:
        current = consumer.committed(tp_cls(stream, rng.partition))
        if not rng.size and (current == rng.committed or (current is not None and current >= rng.end)):
            covered.append(None)  # nothing to export here either way
        elif current == rng.committed:
            covered.append(False)
        elif current is not None and current >= rng.end:
            covered.append(True)
        else:
            raise ExportError(
                f"partition {rng.partition}: the group's committed offset is {current}, but this run planned "
                f"offsets {rng.start}..{rng.end} from {rng.committed} (another run of the same exporter moved "
                "it); nothing written, nothing committed: the next run continues from the group's offset"
            )
    return covered


def _already_covered(consumer: Any, stream: str, ranges: list[PartitionRange], tp_cls: Any) -> bool:
    """True if every range was already exported and committed: a retry after the commit has nothing to do."""
    covered = [c for c in _check_group(consumer, stream, ranges, tp_cls) if c is not None]
    if covered and all(covered):
        log.info("every planned range is already committed (by an earlier attempt or a later run): nothing to do")
        return True
    if any(covered):
        raise ExportError(
            "some partitions of this set are already committed while others are not; not exporting a set "
            "that another run has partly committed"
        )
    return False
