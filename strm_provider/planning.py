"""The one place that plans offset ranges: which offsets a run exports, per partition and per set.

A run's plan is fixed once (by the ``plan`` task) and passed to the export tasks through XCom, so a
retried export task re-exports exactly the same range. The plan is also recorded in Airflow before
anything is uploaded (:mod:`strm_provider.progress`), and a run that did not finish is replayed
whole by the next: the same sets, the same ranges (empty ones included) and the same settings that
decide where files are cut and how they are named, so every object it uploaded is written again
under the same name with the same lines.

This module only decides; reading and committing the group's offsets is :mod:`strm_provider.offsets`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)

#: metadata of a range's start committed by the plan: the planned end follows
PLAN_METADATA = "strm:plan:"
#: metadata of a new exporter's pinned start
CREATED_METADATA = "strm:created"
#: the settings a plan fixes, as its record names them (they decide where files are cut and what they are
#: named), each with the operators' argument it comes from. ``format`` keeps the name ``record_format`` in
#: the record, the one that progress records and plans in flight carry. A plan also records ``codec``, the
#: build of the compressor that cuts its files.
CUT_SETTINGS = {
    "path_prefix": "path_prefix",
    "max_file_bytes": "max_file_bytes",
    "max_file_events": "max_file_events",
    "compression": "compression",
    "record_format": "format",
    "value_format": "value_format",
    "file_format": "file_format",
    "value_schema": "value_schema",
    "name_style": "name_style",
}


class PlanRefused(Exception):
    """The run cannot tell where the exporter stands without guessing: nothing is written or committed."""


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
    """One mapped export task's work: one file (or a few, on rotation) over these partitions.

    ``settings`` are the plan's :data:`CUT_SETTINGS`; empty for a set planned without them (the
    export task's own arguments then apply). ``stream`` names the set's stream in a run over several
    streams; empty where the exporter has one (the task's own).
    """

    index: int
    partitions: list[int]
    ranges: list[PartitionRange] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    stream: str = ""

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)

    def to_xcom(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "partitions": self.partitions,
            "ranges": [asdict(r) for r in self.ranges],
        }
        if self.settings:
            data["settings"] = self.settings
        if self.stream:
            data["stream"] = self.stream
        return data

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> PartitionSet:
        return cls(
            index=int(data["index"]),
            partitions=[int(p) for p in data["partitions"]],
            ranges=[PartitionRange(**r) for r in data["ranges"]],
            settings=dict(data.get("settings") or {}),
            stream=str(data.get("stream") or ""),
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


@dataclass(frozen=True)
class RunPlan:
    """A plan as recorded in Airflow while it is in flight: every set, empty ones included.

    ``runs`` are the runs that exported it (the one that planned it, then any that replayed it): their
    export tasks' summaries tell which sets were committed when Kafka no longer can.
    """

    run_id: str
    sets: list[PartitionSet]
    settings: dict[str, Any]
    runs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "runs": self.runs or [self.run_id],
            "settings": self.settings,
            "sets": [s.to_xcom() for s in self.sets],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunPlan:
        settings = dict(data.get("settings") or {})
        sets = [replace(PartitionSet.from_xcom(s), settings=settings) for s in data.get("sets") or []]
        run_id = str(data.get("run_id") or "")
        return cls(run_id, sets, settings, [str(r) for r in data.get("runs") or [run_id]])

    def committed_sets(self, held: Mapping[int, int | None], reported: set[int]) -> set[int]:
        """The sets that are committed: Kafka ``held`` every range's end, or, where Kafka holds nothing, the
        set's export task ``reported`` its commit (:meth:`finished`). A set with nothing to export is."""

        def done(index: int, rng: PartitionRange) -> bool:
            offset = held.get(rng.partition)
            return not rng.size or offset == rng.end or (offset is None and index in reported)

        return {s.index for s in self.sets if all(done(s.index, r) for r in s.ranges)}

    def finished(self, summaries: list[Any], stream: str = "") -> set[int]:
        """The sets whose export task reported its commit, from the tasks' summaries (XCom) of :attr:`runs`.

        In a run over several streams, a summary's partitions name their stream: only ``stream``'s count.
        """
        reported = {
            (int(e["partition"]), int(e["start"]), int(e["end"]))
            for summary in summaries
            if isinstance(summary, Mapping) and summary.get("committed")
            for e in summary.get("partitions") or []
            if e.get("stream", stream) == stream
        }
        return {s.index for s in self.sets if all((r.partition, r.start, r.end) in reported for r in s.ranges)}


@dataclass(frozen=True)
class Progress:
    """Where an exporter stands, as Airflow records it (:mod:`strm_provider.progress` stores it).

    ``committed``: the offsets the group held when the last plan was made (its starts). ``plan``: the
    plan in flight, until a later run sees Kafka hold its ends. ``recovered``: the last time Kafka had
    forgotten the group's offsets and the run took them from here. ``validated``: the run whose plan
    task proved the data connector after a failed run; until a run succeeds again, later failed runs
    do not write another validation file.
    """

    stream: str
    committed: dict[int, int]
    topic_id: str | None = None
    plan: RunPlan | None = None
    recovered: dict[str, Any] | None = None
    validated: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "topic_id": self.topic_id,
            "committed": {str(p): o for p, o in sorted(self.committed.items())},
            "plan": self.plan.to_json() if self.plan else None,
            "recovered": self.recovered,
            # only while set: between a failed run and the next success
            **({"validated": self.validated} if self.validated else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        plan = data.get("plan")
        return cls(
            stream=str(data["stream"]),
            committed={int(p): int(o) for p, o in (data.get("committed") or {}).items()},
            topic_id=data.get("topic_id"),
            plan=RunPlan.from_json(plan) if plan else None,
            recovered=data.get("recovered"),
            validated=data.get("validated"),
        )


@dataclass(frozen=True)
class StreamsProgress:
    """Where an exporter of several streams stands: each stream's :class:`Progress`, kept in one record.

    ``created_ms``: when the exporter first planned (ms UTC). A stream that starts matching later is
    exported from its first event at or after that time, or from its earliest with
    ``include_existing_events``: what arrived after the exporter was created is exported, whichever
    stream it went to. ``validated`` is :attr:`Progress.validated`, for the exporter.
    """

    created_ms: int
    streams: dict[str, Progress] = field(default_factory=dict)
    validated: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "created_ms": self.created_ms,
            "streams": {name: record.to_json() for name, record in sorted(self.streams.items())},
            **({"validated": self.validated} if self.validated else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamsProgress:
        return cls(
            created_ms=int(data["created_ms"]),
            streams={str(name): Progress.from_json(r) for name, r in (data.get("streams") or {}).items()},
            validated=data.get("validated"),
        )


def select_streams(topics: Iterable[str], names: Sequence[str] | None, pattern: str | None) -> list[str]:
    """The streams an exporter reads, sorted: those ``names`` lists, or the topics ``pattern`` matches whole.

    A pattern never matches Kafka's internal topics (``__consumer_offsets`` and the like), as a consumer's
    pattern subscription does not. A listed stream that does not exist is refused (:class:`LookupError`).
    """
    present = set(topics)
    if names is not None:
        missing = sorted(set(names) - present)
        if missing:
            raise LookupError(f"stream(s) {', '.join(map(repr, missing))} do not exist on the Kafka cluster")
        return sorted(set(names))
    assert pattern is not None
    rule = re.compile(pattern)
    return sorted(t for t in present if not t.startswith("__") and rule.fullmatch(t))


def bundle_sets(sets: list[PartitionSet], tasks: int) -> list[list[PartitionSet]]:
    """Share the sets of a run over several streams among at most ``tasks`` export tasks, evenly by events.

    The largest set goes first to the task with the fewest events (ties: the lower task), so the shares
    depend on the plan only. Which task exports a set does not change its files: they are named by content.
    """
    shares: list[list[PartitionSet]] = [[] for _ in range(max(1, min(tasks, len(sets))))]
    load = [0] * len(shares)
    for pset in sorted(sets, key=lambda s: (-s.size, s.stream, s.index)):
        slot = min(range(len(shares)), key=lambda i: (load[i], i))
        shares[slot].append(pset)
        load[slot] += pset.size
    return [sorted(share, key=lambda s: (s.stream, s.index)) for share in shares if share]


@dataclass(frozen=True)
class StreamOffsets:
    """What Kafka says of a stream and the exporter's group: per partition, the committed offset and
    its metadata (``None`` where the group has none), the earliest and end offsets; the topic's id
    (``None`` where the broker does not tell)."""

    committed: dict[int, tuple[int, str] | None]
    beginning: dict[int, int]
    end: dict[int, int]
    topic_id: str | None = None

    def offset(self, partition: int) -> int | None:
        entry = self.committed.get(partition)
        return None if entry is None else entry[0]


@dataclass(frozen=True)
class Decision:
    """What a run does: the sets to export, the offsets to commit before reading, the record to keep.

    ``commits`` maps a partition to the offset and metadata committed before anything is read: the
    plan's starts (the pin of a new exporter, the range starts with their planned ends), and for
    every other partition the group's offset again, so Kafka never lets it expire while the exporter
    runs. ``replaying`` names the run whose unfinished plan this run replays; ``recovered`` lists the
    partitions whose offsets Kafka had forgotten, taken from Airflow's record.
    """

    plan: Plan
    sets: list[PartitionSet]
    commits: dict[int, tuple[int, str]]
    record: Progress
    replaying: str | None = None
    recovered: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanRequest:
    """What a run asks of the planner, beside what Kafka and Airflow hold.

    ``settings`` are the :data:`CUT_SETTINGS` a new plan records; ``codecs`` the compressor build of
    this worker per compression: a compressed plan is replayed only by the build that cut it.
    ``finished``: the sets of the plan in flight whose export task reported its commit
    (:meth:`RunPlan.finished`), for when Kafka has forgotten. ``exporter`` is the name the ``strm reset``
    command of a refusal takes.
    """

    stream: str
    include_existing_events: bool
    run_id: str = ""
    partition_sets: int = 1
    settings: Mapping[str, Any] = field(default_factory=dict)
    codecs: Mapping[str, str] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    exporter: str = "NAME"

    @property
    def reset_hint(self) -> str:
        return f"strm reset batch-exporter {self.exporter}"


def plan_ranges(
    committed: Mapping[int, int | None],
    beginning: Mapping[int, int],
    end: Mapping[int, int],
    *,
    include_existing_events: bool,
    pending: Mapping[int, int] | None = None,
    reset_hint: str,
) -> Plan:
    """Plan ``[start, end)`` per partition from the group's committed offsets.

    - ``pending`` holds the end a previous run planned from the same committed offset and did not
      finish (its intent, kept in the commit metadata): that range is replayed as it was.
    - A new exporter (no committed offset at all) starts at the end offsets when
      ``include_existing_events`` is false, else at the earliest retained offset. That start is
      pinned (committed before anything else), so "created" is a fixed point and later runs
      never skip events.
    - A partition without a committed offset in a known group was added to the topic later: it is
      exported from its start.
    - A committed offset below the earliest retained one lost data to retention: the run goes on
      from the earliest offset and reports how many offsets were lost.
    - A committed offset past the partition's end is refused (:class:`PlanRefused`): the topic was
      deleted and recreated, or lost data on the broker; only the user can say where to go on from.
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
        elif done > high:
            raise PlanRefused(
                f"partition {p}: the committed offset {done} is past the stream's end {high} (was the topic "
                f"deleted and recreated?); nothing exported or committed. `{reset_hint} --to-earliest` shows "
                "what moving the exporter would export (add --execute to apply)"
            )
        elif done < low:
            lost, start = low - done, low
            log.warning("partition %s: %s offsets were deleted by retention before export", p, lost)
        else:
            start = done
            unfinished = (pending or {}).get(p)
            if unfinished is not None and done < unfinished <= high:
                log.info("partition %s: replaying the unfinished plan %s..%s", p, done, unfinished)
                high = unfinished
        ranges.append(PartitionRange(p, start, high, done, lost))
    return Plan(ranges, pin, new_exporter)


def split_sets(ranges: list[PartitionRange], sets: int, *, keep_empty: bool = False) -> list[PartitionSet]:
    """Split the partitions into ``sets`` contiguous groups, ascending (``0-1-2``, ``3-4``).

    Contiguous groups keep file names readable and stable while the partition count is stable.
    Sets with nothing to export are dropped (their mapped task would have no work) unless
    ``keep_empty``: a recorded plan keeps them, as they decide the layout a replay must repeat.
    """
    ordered = sorted(ranges, key=lambda r: r.partition)
    count = max(1, min(sets, len(ordered)))
    size, extra = divmod(len(ordered), count)
    result: list[PartitionSet] = []
    pos = 0
    for index in range(count):
        chunk = ordered[pos : pos + size + (1 if index < extra else 0)]
        pos += len(chunk)
        if chunk and (keep_empty or any(r.size for r in chunk)):
            result.append(PartitionSet(index, [r.partition for r in chunk], chunk))
    return result


def _pending(offsets: StreamOffsets) -> dict[int, int]:
    """Planned ends kept in the commit metadata (``strm:plan:<end>``) by a plan Airflow has no record of."""
    pending = {}
    for p, entry in offsets.committed.items():
        if entry is not None and entry[1].startswith(PLAN_METADATA) and entry[1][len(PLAN_METADATA) :].isdigit():
            pending[p] = int(entry[1][len(PLAN_METADATA) :])
    return pending


def _refresh(offsets: StreamOffsets, skip: set[int]) -> dict[int, tuple[int, str]]:
    """The group's offsets as they are, to commit again (a commit restarts Kafka's retention clock)."""
    return {p: entry for p, entry in offsets.committed.items() if entry is not None and p not in skip}


def _replay(
    offsets: StreamOffsets, record: Progress, request: PlanRequest
) -> tuple[list[PartitionSet], dict[int, int]] | None:
    """The sets of the recorded plan still to export (``None`` when all are committed), and the
    partitions whose offsets Kafka has forgotten.

    A set is committed when Kafka holds every range's end, or, where Kafka has forgotten, when its
    export task reported the commit (``request.finished``). Where Kafka holds its start, or nothing and no
    task reported it, the set is replayed: the same objects are written again.
    """
    plan = record.plan
    assert plan is not None
    hint, reported = request.reset_hint, request.finished
    forgotten: dict[int, int] = {}
    undone: list[PartitionSet] = []
    committed = plan.committed_sets({p: offsets.offset(p) for p in offsets.committed}, reported)
    for pset in plan.sets:
        for rng in pset.ranges:
            held = offsets.offset(rng.partition)
            if held is None:
                forgotten[rng.partition] = rng.end if pset.index in reported else rng.start
            elif held != rng.end and held != rng.start:
                raise PlanRefused(
                    f"partition {rng.partition}: the group's committed offset is {held}, but run {plan.run_id!r} "
                    f"planned {rng.start}..{rng.end} and has not finished (offsets moved outside the exporter?); "
                    f"nothing exported or committed. `{hint} --to-offsets {rng.partition}:{rng.start}` (or :{held}) "
                    "shows what each choice would do (add --execute to apply)"
                )
        if pset.index not in committed:
            undone.append(pset)
    if not undone:
        return None
    for rng in (r for s in undone for r in s.ranges if r.size):
        low = offsets.beginning.get(rng.partition, 0)
        if low > rng.start:
            raise PlanRefused(
                f"partition {rng.partition}: run {plan.run_id!r} did not finish, and retention has since deleted "
                f"offsets {rng.start}..{low - 1} its files start from, so they cannot be written again under the "
                f"same names; nothing exported or committed. `{hint} --to-offsets {rng.partition}:{low}` resumes at "
                f"the earliest offset (events the failed run uploaded may then be exported twice), "
                f"`--to-offsets {rng.partition}:{rng.end}` after its plan (add --execute to apply)"
            )
    compression = plan.settings.get("compression", "none")
    here = request.codecs.get(compression, plan.settings.get("codec"))
    if compression != "none" and plan.settings.get("codec") != here:
        raise PlanRefused(
            f"run {plan.run_id!r} did not finish and must be replayed with the compressor that cut its files "
            f"({plan.settings.get('codec')}), but this worker has {here}: its files would be cut "
            f"at other points and duplicate events; run the exporter on a worker with that build, or settle it "
            f"with `{hint}` (add --execute to apply)"
        )
    return undone, forgotten


def plan_run(offsets: StreamOffsets, record: Progress | None, request: PlanRequest) -> Decision:
    """Decide what this run exports, from what Kafka holds and what Airflow recorded.

    - A plan in flight that Kafka does not show committed is replayed whole (its unfinished sets,
      exactly as planned); events and partitions that arrived since wait for the next run.
    - Kafka's offsets and Airflow's record must agree; where Kafka has forgotten the group's
      offsets (they expire after a quiet spell), Airflow's record is used and the run says so.
    - Nothing is guessed: a changed topic identity, an offset past the end, or offsets that moved
      outside the exporter refuse the run (:class:`PlanRefused`, one line naming ``strm reset``).
    """
    record = _applicable(offsets, record, request)
    if record is not None and record.plan is not None:
        replay = _replay(offsets, record, request)
        if replay is not None:
            return _replay_decision(offsets, record, request.run_id, *replay)
    return _new_plan(offsets, record, request)


def _applicable(offsets: StreamOffsets, record: Progress | None, request: PlanRequest) -> Progress | None:
    """Airflow's record where it speaks of the stream Kafka holds now; a recreated topic refuses the run."""
    stream = request.stream
    if record is None or record.stream != stream:
        return None  # the exporter now reads another stream: what it recorded of the old one does not apply
    if record.topic_id and offsets.topic_id and record.topic_id != offsets.topic_id:
        raise PlanRefused(
            f"stream '{stream}' was deleted and recreated (topic id {record.topic_id} is now {offsets.topic_id}): "
            f"its offsets are not the exported ones; nothing exported or committed. `{request.reset_hint} "
            "--to-earliest` (or --to-latest) shows what each choice would export (add --execute to apply)"
        )
    return record


def _replay_decision(
    offsets: StreamOffsets, record: Progress, run_id: str, undone: list[PartitionSet], forgotten: dict[int, int]
) -> Decision:
    """Replay the recorded plan's ``undone`` sets as planned; commit the ends of the done sets Kafka forgot."""
    plan = record.plan
    assert plan is not None
    commits = _refresh(offsets, {r.partition for s in plan.sets for r in s.ranges})
    for pset in plan.sets:
        for rng in pset.ranges:
            if pset in undone:
                commits[rng.partition] = (rng.start, f"{PLAN_METADATA}{rng.end}")
            elif rng.partition in forgotten:
                commits[rng.partition] = (rng.end, f"{PLAN_METADATA}{rng.end}")
    sets = [replace(s, ranges=[replace(r, committed=r.start) for r in s.ranges]) for s in undone if s.size]
    note = _recovered(run_id, forgotten) if forgotten else record.recovered
    runs = plan.runs if run_id in plan.runs else [*plan.runs, run_id]
    kept = replace(record, topic_id=offsets.topic_id or record.topic_id, recovered=note, plan=replace(plan, runs=runs))
    ranges = [r for s in plan.sets for r in s.ranges]
    return Decision(Plan(ranges, {}, False), sets, commits, kept, replaying=plan.run_id, recovered=forgotten)


def _starts(
    offsets: StreamOffsets, known: Mapping[int, int], hint: str
) -> tuple[dict[int, int | None], dict[int, int]]:
    """Per partition, the offset the run plans from, and those Kafka forgot and Airflow's record (``known``) gave.

    Kafka and Airflow must agree where both hold an offset: anything else moved outside the exporter.
    """
    committed: dict[int, int | None] = {}
    recovered: dict[int, int] = {}
    for p in sorted(offsets.end):
        held, was = offsets.offset(p), known.get(p)
        if held is not None and was is not None and held != was:
            raise PlanRefused(
                f"partition {p}: Kafka holds the committed offset {held}, but Airflow recorded {was} for this "
                f"exporter (offsets moved outside the exporter?); nothing exported or committed. `{hint} "
                f"--to-offsets {p}:{held}` (or {p}:{was}) shows what each choice would do (add --execute to apply)"
            )
        if held is None and was is not None:
            recovered[p] = was
        committed[p] = held if held is not None else was
    return committed, recovered


def _new_plan(offsets: StreamOffsets, record: Progress | None, request: PlanRequest) -> Decision:
    """Plan from where the group stands (a committed plan in flight counts as done), and record the plan."""
    known: dict[int, int] = dict(record.committed) if record else {}
    if record is not None and record.plan is not None:
        known |= {r.partition: r.end for s in record.plan.sets for r in s.ranges}
    committed, recovered = _starts(offsets, known, request.reset_hint)
    plan = plan_ranges(
        committed,
        offsets.beginning,
        offsets.end,
        include_existing_events=request.include_existing_events,
        pending=_pending(offsets) if record is None else None,
        reset_hint=request.reset_hint,
    )
    ranges = [replace(r, committed=r.start) for r in plan.ranges]
    commits = {
        r.partition: (
            r.start,
            CREATED_METADATA if r.partition in plan.pin and not r.size else f"{PLAN_METADATA}{r.end}",
        )
        for r in ranges
    }
    run_id, settings = request.run_id, dict(request.settings)
    layout = [replace(s, settings=settings) for s in split_sets(ranges, request.partition_sets, keep_empty=True)]
    in_flight = RunPlan(run_id, layout, settings, [run_id]) if any(s.size for s in layout) else None
    note = _recovered(run_id, recovered) if recovered else (record.recovered if record else None)
    topic_id = offsets.topic_id or (record.topic_id if record else None)
    validated = record.validated if record else None
    new_record = Progress(request.stream, {r.partition: r.start for r in ranges}, topic_id, in_flight, note, validated)
    return Decision(
        replace(plan, ranges=ranges), [s for s in layout if s.size], commits, new_record, recovered=recovered
    )


def _recovered(run_id: str, partitions: Mapping[int, int]) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "run_id": run_id,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "partitions": {str(p): o for p, o in sorted(partitions.items())},
    }
