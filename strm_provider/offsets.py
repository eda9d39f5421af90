"""The one place that reads and commits an exporter's consumer-group offsets.

The group's committed offsets are the exporter's progress in Kafka, and the commit protocol is what
the exactly-once guarantee rests on:

- before anything is read, the plan task commits every partition's start: a new exporter's pin
  (:data:`~strm_provider.planning.CREATED_METADATA`), each range's start with its planned end
  (:data:`~strm_provider.planning.PLAN_METADATA`), and the group's offset again where nothing is
  planned, so that Kafka, which forgets a group's offsets ``offsets.retention.minutes`` after
  their last commit, never forgets them while the exporter runs (:func:`record_plan`);
- the final commit moves each range to its end only where the group still holds what the run
  planned from, after every file was uploaded (:func:`commit_ranges`); the guard before each file
  completes (:func:`check_group`) refuses to overwrite what another run committed meanwhile.

Kafka can still forget (an exporter paused for longer than the retention), so the plan is also
recorded in Airflow (:mod:`strm_provider.progress`); deciding between the two is
:func:`strm_provider.planning.plan_run`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from strm_provider.planning import (
    CREATED_METADATA,
    PLAN_METADATA,
    Decision,
    PartitionRange,
    PlanRefused,
    PlanRequest,
    Progress,
    StreamOffsets,
    StreamsProgress,
    plan_run,
)

log = logging.getLogger(__name__)

__all__ = ["CREATED_METADATA", "PLAN_METADATA", "ExportError"]


class ExportError(Exception):
    """The export could not complete; nothing past the failure point was committed."""


def run_metadata(run_id: str) -> str:
    """Metadata of a run's final commit: which run moved the group (Kafka keeps at most a few hundred bytes)."""
    return f"strm:{run_id}"[:200]


def _topic_id(consumer: Any, stream: str) -> str | None:
    """The topic's id from the metadata the consumer just fetched (Kafka 2.8+); None where the broker has none."""
    cluster = getattr(consumer, "_cluster", None)
    value = cluster.topic_id(stream) if cluster is not None and hasattr(cluster, "topic_id") else None
    return str(value) if value is not None and getattr(value, "int", 1) != 0 else None


def read_stream(consumer: Any, stream: str) -> StreamOffsets:
    """What Kafka holds of ``stream`` and the consumer's group: committed offsets with their metadata,
    earliest and end offsets, and the topic's id."""
    return read_streams(consumer, [stream])[stream]


def read_streams(consumer: Any, streams: list[str]) -> dict[str, StreamOffsets]:
    """:func:`read_stream` of every stream, in one request of each kind for them all.

    The group's committed offsets come from the consumer's coordinator in one fetch: the consumer's
    ``committed()`` would send one request per partition, hundreds for an exporter of many streams.
    """
    from kafka import TopicPartition

    tps = []
    for stream in streams:
        partitions = consumer.partitions_for_topic(stream)
        if not partitions:
            raise LookupError(f"stream '{stream}' does not exist on the Kafka cluster (no partitions found)")
        tps += [TopicPartition(stream, p) for p in sorted(partitions)]
    end = consumer.end_offsets(tps)
    beginning = consumer.beginning_offsets(tps)
    held = consumer._coordinator.fetch_committed_offsets(tps)
    result = {}
    for stream in streams:
        mine = [tp for tp in tps if tp.topic == stream]
        committed = {
            tp.partition: None if held.get(tp) is None else (held[tp].offset, held[tp].metadata or "") for tp in mine
        }
        result[stream] = StreamOffsets(
            committed,
            {tp.partition: beginning[tp] for tp in mine},
            {tp.partition: end[tp] for tp in mine},
            _topic_id(consumer, stream),
        )
    return result


def read_offsets(consumer: Any, stream: str) -> tuple[dict[int, int | None], dict[int, int], dict[int, int]]:
    """Committed (per the consumer's group), earliest and end offsets of every partition of ``stream``."""
    offsets = read_stream(consumer, stream)
    return {p: offsets.offset(p) for p in offsets.committed}, offsets.beginning, offsets.end


def record_plan(consumer: Any, stream: str, commits: Mapping[int, tuple[int, str]]) -> None:
    """Commit the plan's offsets (:attr:`~strm_provider.planning.Decision.commits`) in one request."""
    record_plans(consumer, {stream: commits})


def record_plans(consumer: Any, commits: Mapping[str, Mapping[int, tuple[int, str]]]) -> None:
    """Commit the plans' offsets of every stream in one request."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    offsets = {
        TopicPartition(stream, p): OffsetAndMetadata(o, m, -1)
        for stream, by_partition in commits.items()
        for p, (o, m) in by_partition.items()
    }
    if offsets:
        consumer.commit(offsets)


def plan_stream(
    consumer: Any,
    request: PlanRequest,
    *,
    record: Progress | None = None,
    save: Callable[[Progress], None] | None = None,
) -> Decision:
    """Read the offsets of the stream, decide the run (:func:`~strm_provider.planning.plan_run`), keep
    the record with ``save``, and only then commit the plan's starts in Kafka.

    The record comes first: a plan committed in Kafka but not recorded would be replayed only in part.
    """
    decision = plan_run(read_stream(consumer, request.stream), record, request)
    if save is not None:
        save(decision.record)
    record_plan(consumer, request.stream, decision.commits)
    if decision.plan.pin:
        log.info("new exporter: pinned its start at %s", decision.plan.pin)
    return decision


def plan_streams(
    consumer: Any,
    requests: list[PlanRequest],
    record: StreamsProgress | None,
    save: Callable[[StreamsProgress], None],
    *,
    now_ms: int,
) -> tuple[dict[str, Decision], StreamsProgress]:
    """:func:`plan_stream` for an exporter of several streams: one read of all, each stream decided as an
    exporter of its own would be, one record kept, then one commit of every plan's starts.

    A stream the record does not know yet is new to the exporter: on its first run (no record) each starts
    as a new exporter's stream does; later, from its first event at or after the exporter's creation
    (:attr:`~strm_provider.planning.StreamsProgress.created_ms`), or from its earliest with
    ``include_existing_events``. Streams the record holds but the run no longer reads keep their record.
    """
    offsets = read_streams(consumer, [r.stream for r in requests]) if requests else {}
    kept = record or StreamsProgress(now_ms)
    since = _offsets_since(consumer, [r.stream for r in requests if r.stream not in kept.streams], kept.created_ms)
    decisions: dict[str, Decision] = {}
    for request in requests:
        held, known = offsets[request.stream], kept.streams.get(request.stream)
        if record is not None and known is None and not request.include_existing_events:
            # the stream is new to a running exporter: from the events that came after the exporter did
            first = {p: since.get((request.stream, p), held.end[p]) for p in held.end}
            held = replace(held, beginning=first)
            request = replace(request, include_existing_events=True)
        try:
            decisions[request.stream] = plan_run(held, known, request)
        except PlanRefused as err:
            raise PlanRefused(f"stream '{request.stream}': {err}") from None
    new = replace(kept, streams={**kept.streams, **{name: d.record for name, d in decisions.items()}})
    save(new)
    record_plans(consumer, {name: d.commits for name, d in decisions.items()})
    return decisions, new


def _offsets_since(consumer: Any, streams: list[str], when_ms: int) -> dict[tuple[str, int], int]:
    """Per partition of ``streams``, the first offset of an event at or after ``when_ms`` (absent: none yet)."""
    from kafka import TopicPartition

    tps = [TopicPartition(s, p) for s in streams for p in sorted(consumer.partitions_for_topic(s) or ())]
    if not tps:
        return {}
    found = consumer.offsets_for_times({tp: when_ms for tp in tps})
    return {(tp.topic, tp.partition): at.offset for tp, at in found.items() if at is not None}


def pin_start(consumer: Any, stream: str, *, include_existing_events: bool) -> dict[int, int]:
    """Commit where a new exporter starts, so its first run neither skips nor repeats anything.

    Without ``include_existing_events`` that is the stream's end offsets now (events that arrive
    between creation and the first run are exported, none from before). With it, a group left
    behind by a deleted exporter of the same name is reset to the earliest offsets; a fresh group
    needs nothing (the first run starts at the earliest offsets).
    """
    committed, beginning, end = read_offsets(consumer, stream)
    is_new = all(v is None for v in committed.values())
    if is_new and not include_existing_events:
        return plan_stream(consumer, PlanRequest(stream, include_existing_events=False)).plan.pin
    if is_new:
        return {}
    target = beginning if include_existing_events else end
    record_plan(consumer, stream, {p: (o, CREATED_METADATA) for p, o in target.items()})
    return dict(target)


def commit_ranges(consumer: Any, stream: str, ranges: list[PartitionRange], metadata: str) -> None:
    """Commit each range's end, but only where the group still holds what this run planned from.

    A commit only moves a partition forward from the offset the run planned from; if another run
    already moved it elsewhere, this run commits nothing and fails loudly instead of rewinding or
    skipping. A partition already at its end (an earlier attempt of the same plan, or a replay of
    it, committed) is left as it is: committing it again could erase the plan marker of the run
    that has planned from there since. Kafka has no compare-and-set for offsets, so a commit racing
    another within the moment between reading and committing is not caught here; it is harmless,
    since every run that may commit a range holds the same plan for it and writes the same objects.
    """
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    offsets = {}
    held = _committed(consumer, stream, [r.partition for r in ranges])
    for rng in ranges:
        tp = TopicPartition(stream, rng.partition)
        current = held[rng.partition]
        if not rng.size or current == rng.end:
            continue
        if current != rng.committed:
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
    covered = []
    held = _committed(consumer, stream, [r.partition for r in ranges])
    for rng in ranges:
        current = held[rng.partition]
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


def _committed(consumer: Any, stream: str, partitions: list[int]) -> dict[int, int | None]:
    """The group's committed offset of each partition (``None`` where it has none), in one request (as
    :func:`read_streams` reads them)."""
    from kafka import TopicPartition

    tps = {p: TopicPartition(stream, p) for p in partitions}
    found = consumer._coordinator.fetch_committed_offsets(list(tps.values()))
    return {p: None if found.get(tp) is None else found[tp].offset for p, tp in tps.items()}


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
    return streams_lag(consumer, [stream])[stream]


def streams_lag(consumer: Any, streams: list[str]) -> dict[str, dict[int, int]]:
    """:func:`group_lag` of every stream, read in one request of each kind."""
    lags: dict[str, dict[int, int]] = {}
    for stream, offsets in read_streams(consumer, streams).items():
        lags[stream] = {}
        for p, end in sorted(offsets.end.items()):
            held = offsets.offset(p)
            lags[stream][p] = max(end - (offsets.beginning[p] if held is None else held), 0)
    return lags
