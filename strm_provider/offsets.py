"""The one place that reads and commits an exporter's consumer-group offsets.

The group's committed offsets are the exporter's progress, and the commit protocol is what the
exactly-once guarantee rests on:

- a brand-new exporter's start is pinned (committed with :data:`CREATED_METADATA`) before anything
  is read, so "created" is a fixed point;
- each run records its plan before reading: every range's start with its planned end as metadata
  (:data:`PLAN_METADATA`), so a run that never completes is replayed as it was planned;
- the final commit moves each range to its end only where the group still holds what the run
  planned from, after every file was uploaded (:func:`commit_ranges`); the guard before each file
  completes (:func:`check_group`) refuses to overwrite what another run committed meanwhile.

Planning itself (which ranges, in which sets) is pure and lives in :mod:`strm_provider.planning`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from strm_provider.planning import PartitionRange, Plan, plan_ranges

log = logging.getLogger(__name__)

#: metadata of a range's start committed by the plan: the planned end follows
PLAN_METADATA = "strm:plan:"
#: metadata of a new exporter's pinned start
CREATED_METADATA = "strm:created"


class ExportError(Exception):
    """The export could not complete; nothing past the failure point was committed."""


def run_metadata(run_id: str) -> str:
    """Metadata of a run's final commit: which run moved the group (Kafka keeps at most a few hundred bytes)."""
    return f"strm:{run_id}"[:200]


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
    offsets = {p: OffsetAndMetadata(o, CREATED_METADATA, -1) for p, o in plan.pin.items()}
    offsets |= {r.partition: OffsetAndMetadata(r.start, f"{PLAN_METADATA}{r.end}", -1) for r in plan.ranges if r.size}
    if offsets:
        consumer.commit({TopicPartition(stream, p): o for p, o in offsets.items()})
    if plan.pin:
        log.info("new exporter: pinned its start at %s", plan.pin)
    ranges = [replace(r, committed=r.start) if r.size else r for r in plan.ranges]
    return replace(plan, ranges=ranges)


def pin_start(consumer: Any, stream: str, *, include_existing_events: bool) -> dict[int, int]:
    """Commit where a new exporter starts, so its first run neither skips nor repeats anything.

    Without ``include_existing_events`` that is the stream's end offsets now (events that arrive
    between creation and the first run are exported, none from before). With it, a group left
    behind by a deleted exporter of the same name is reset to the earliest offsets; a fresh group
    needs nothing (the first run starts at the earliest offsets).
    """
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    committed, beginning, end = read_offsets(consumer, stream)
    is_new = all(v is None for v in committed.values())
    if is_new and not include_existing_events:
        return plan_stream(consumer, stream, include_existing_events=False).pin
    if is_new:
        return {}
    target = beginning if include_existing_events else end
    consumer.commit({TopicPartition(stream, p): OffsetAndMetadata(o, CREATED_METADATA, -1) for p, o in target.items()})
    return dict(target)


def commit_ranges(consumer: Any, stream: str, ranges: list[PartitionRange], metadata: str) -> None:
    """Commit each range's end, but only where the group still holds what this run planned from.

    A commit only moves a partition forward from the offset the run planned from; if another run
    already moved it, this run commits nothing and fails loudly instead of rewinding or skipping.
    """
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    offsets = {}
    for rng in ranges:
        tp = TopicPartition(stream, rng.partition)
        current = consumer.committed(tp)
        if current not in (rng.committed, rng.end) and not (rng.committed is None and current is None):
            raise ExportError(
                f"partition {rng.partition}: the group's committed offset moved from {rng.committed} to "
                f"{current} during this run (another run of the same exporter?); not committing"
            )
        offsets[tp] = OffsetAndMetadata(rng.end, metadata, -1)
    if offsets:
        consumer.commit(offsets)


def check_group(consumer: Any, stream: str, ranges: list[PartitionRange]) -> list[bool | None]:
    """Per range, whether the group already holds at least its end; raise if it holds anything unexpected.

    A range is exportable while the group still holds the offset this run planned from. If the group
    holds the range's end or beyond, every offset of the range was exported and committed (by an
    earlier attempt of this plan, or by a later run: commits only move forward from a plan's start).
    Anything else means another run moved the group into the middle of the range: writing now would
    duplicate events or overwrite a newer file with an older subset, so nothing is written.
    """
    from kafka import TopicPartition

    covered = []
    for rng in ranges:
        current = consumer.committed(TopicPartition(stream, rng.partition))
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


def already_committed(consumer: Any, stream: str, ranges: list[PartitionRange]) -> bool:
    """True if every range was already exported and committed: a retry after the commit has nothing to do."""
    covered = [c for c in check_group(consumer, stream, ranges) if c is not None]
    if covered and all(covered):
        log.info("every planned range is already committed (by an earlier attempt or a later run): nothing to do")
        return True
    if any(covered):
        raise ExportError(
            "some partitions of this set are already committed while others are not; not exporting a set "
            "that another run has partly committed"
        )
    return False


def group_lag(consumer: Any, stream: str) -> dict[int, int]:
    """Per partition, the offsets of ``stream`` the consumer's group has not committed yet (from the
    earliest offset where it has committed nothing)."""
    committed, beginning, end = read_offsets(consumer, stream)
    return {p: max(end[p] - (beginning[p] if c is None else c), 0) for p, c in sorted(committed.items())}


def add_lag(consumer: Any, stream: str, partitions: list[dict[str, Any]]) -> None:
    """Record per partition how many offsets arrived after this run's planned end (``lag_left``)."""
    from kafka import TopicPartition

    tps = [TopicPartition(stream, entry["partition"]) for entry in partitions]
    try:
        ends = consumer.end_offsets(tps) if tps else {}
    except Exception:  # the export is committed; lag is only information
        return
    for entry, tp in zip(partitions, tps, strict=True):
        entry["lag_left"] = max(ends.get(tp, entry["end"]) - entry["end"], 0)
