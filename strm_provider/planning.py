"""The one place that plans offset ranges: which offsets a run exports, per partition and per set.

The plan is computed once per DAG run (by the ``plan`` task) and passed to the export tasks through
XCom, so a retried export task re-exports exactly the same range.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition; ``committed`` is what the group held when planned."""

    partition: int
    start: int
    end: int
    committed: int | None = None
    lost_to_retention: int = 0

    @property
    def size(self) -> int:
        return max(self.end - self.start, 0)


@dataclass(frozen=True)
class PartitionSet:
    """One mapped export task's work: one file (or a few, on rotation) over these partitions."""

    index: int
    partitions: list[int]
    ranges: list[PartitionRange] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "partitions": self.partitions,
            "ranges": [asdict(r) for r in self.ranges],
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> PartitionSet:
        return cls(
            index=int(data["index"]),
            partitions=[int(p) for p in data["partitions"]],
            ranges=[PartitionRange(**r) for r in data["ranges"]],
        )


@dataclass(frozen=True)
class Plan:
    """What one run exports. ``pin`` holds the offsets to commit first for a brand-new exporter."""

    ranges: list[PartitionRange]
    pin: dict[int, int]
    new_exporter: bool

    @property
    def events_planned(self) -> int:
        return sum(r.size for r in self.ranges)


def plan_ranges(
    committed: Mapping[int, int | None],
    beginning: Mapping[int, int],
    end: Mapping[int, int],
    *,
    include_existing_events: bool,
    pending: Mapping[int, int] | None = None,
) -> Plan:
    """Plan ``[start, end)`` per partition from the group's committed offsets.

    - ``pending`` holds the end a previous run planned from the same committed offset and did not
      finish (its intent, kept in the commit metadata): that range is replayed as it was, so the
      files it may already have uploaded are rewritten under the same names, never duplicated by
      files cut at other rotation points.

    - A new exporter (no committed offset at all) starts at the end offsets when
      ``include_existing_events`` is false, else at the earliest retained offset. That start is
      pinned (committed before anything else), so "created" is a fixed point and later runs
      never skip events.
    - A partition without a committed offset in a known group was added to the topic later: it is
      exported from its start.
    - A committed offset below the earliest retained one lost data to retention: the run goes on
      from the earliest offset and reports how many offsets were lost.
    """
    partitions = sorted(end)
    new_exporter = all(committed.get(p) is None for p in partitions)
    ranges: list[PartitionRange] = []
    pin: dict[int, int] = {}
    for p in partitions:
        low, high, done = beginning.get(p, 0), end[p], committed.get(p)
        lost = 0
        if new_exporter:
            # "created" is pinned: the start is committed before anything else, so the group exists
            # from the first run on and later runs never skip (or re-plan) events.
            start = high if not include_existing_events else low
            pin[p] = done = start
        elif done is None:
            start = low
        elif done < low:
            lost, start = low - done, low
            log.warning("partition %s: %s offsets were deleted by retention before export", p, lost)
        elif done > high:
            log.warning("partition %s: committed offset %s is past the end %s (topic recreated?)", p, done, high)
            start = low
        else:
            start = done
            unfinished = (pending or {}).get(p)
            if unfinished is not None and done < unfinished <= high:
                log.info("partition %s: replaying the unfinished plan %s..%s", p, done, unfinished)
                high = unfinished
        ranges.append(PartitionRange(p, start, high, done, lost))
    return Plan(ranges, pin, new_exporter)


def split_sets(ranges: list[PartitionRange], sets: int) -> list[PartitionSet]:
    """Split the partitions into ``sets`` contiguous groups, ascending (``0-1-2``, ``3-4``).

    Contiguous groups keep file names readable and stable while the partition count is stable.
    Sets with nothing to export are dropped: their mapped task would have no work.
    """
    ordered = sorted(ranges, key=lambda r: r.partition)
    count = max(1, min(sets, len(ordered)))
    size, extra = divmod(len(ordered), count)
    result: list[PartitionSet] = []
    pos = 0
    for index in range(count):
        chunk = ordered[pos : pos + size + (1 if index < extra else 0)]
        pos += len(chunk)
        if chunk and any(r.size for r in chunk):
            result.append(PartitionSet(index, [r.partition for r in chunk], chunk))
    return result


PLAN_METADATA = "strm:plan:"


def _read(consumer: Any, stream: str) -> tuple[dict[int, Any], dict[int, int], dict[int, int]]:
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(stream)
    if not partitions:
        raise LookupError(f"stream '{stream}' does not exist on the Kafka cluster (no partitions found)")
    tps = [TopicPartition(stream, p) for p in sorted(partitions)]
    end = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    beginning = {tp.partition: off for tp, off in consumer.beginning_offsets(tps).items()}
    committed = {tp.partition: consumer.committed(tp, metadata=True) for tp in tps}
    return committed, beginning, end


def read_offsets(consumer: Any, stream: str) -> tuple[dict[int, int | None], dict[int, int], dict[int, int]]:
    """Committed (per the consumer's group), earliest and end offsets of every partition of ``stream``."""
    committed, beginning, end = _read(consumer, stream)
    return {p: (c.offset if c is not None else None) for p, c in committed.items()}, beginning, end


def plan_stream(consumer: Any, stream: str, *, include_existing_events: bool) -> Plan:
    """Read the offsets of ``stream``, plan a run, and record the plan in Kafka before anything is read.

    One commit carries the pin of a brand-new exporter and, for every range with events, the
    range's start with its planned end as metadata (:data:`PLAN_METADATA`). The offsets do not
    move; if the run never completes, the next run finds the intent and replays the same range.
    """
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    raw, beginning, end = _read(consumer, stream)
    committed = {p: (c.offset if c is not None else None) for p, c in raw.items()}
    pending = {
        p: int(c.metadata.removeprefix(PLAN_METADATA))
        for p, c in raw.items()
        if c is not None
        and (c.metadata or "").startswith(PLAN_METADATA)
        and c.metadata.removeprefix(PLAN_METADATA).isdigit()
    }
    plan = plan_ranges(committed, beginning, end, include_existing_events=include_existing_events, pending=pending)
    offsets = {p: OffsetAndMetadata(o, "strm:created", -1) for p, o in plan.pin.items()}
    offsets |= {r.partition: OffsetAndMetadata(r.start, f"{PLAN_METADATA}{r.end}", -1) for r in plan.ranges if r.size}
    if offsets:
        consumer.commit({TopicPartition(stream, p): o for p, o in offsets.items()})
    if plan.pin:
        log.info("new exporter: pinned its start at %s", plan.pin)
    ranges = [replace(r, committed=r.start) if r.size else r for r in plan.ranges]
    return replace(plan, ranges=ranges)
