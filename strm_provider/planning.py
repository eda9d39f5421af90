"""The one place that plans offset ranges: which offsets a run exports, per partition and per set.

The plan is computed once per DAG run (by the ``plan`` task) and passed to the export tasks through
XCom, so a retried export task re-exports exactly the same range. This module only computes;
reading and committing the group's offsets is :mod:`strm_provider.offsets`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
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
