"""``strm reset batch-exporter``: move an exporter to another position in its stream, in Kafka and Airflow at once.

An exporter's position lives in two places that must agree: its Kafka group's committed offsets and
its progress record in Airflow (:mod:`strm_provider.progress`). A run refuses to guess when they do
not (a recreated topic, an offset past the end, offsets moved by hand); this command is how a user
settles it. It shows first, per partition, where both stand, the target, and how many events moving
there exports again or skips; ``--execute`` then writes the targets to both.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import click

from strm_provider.cli.output import emit_json, emit_table
from strm_provider.cli.runs import Runs
from strm_provider.cli.store import ConnectorStore
from strm_provider.config import ExporterConfig
from strm_provider.planning import Progress, RunPlan, StreamOffsets, StreamsProgress

#: metadata of the offsets ``--execute`` commits: the group was moved by a reset, not by a run
RESET_METADATA = "strm:reset"
OFFSETS_OPTION = "'--to-offsets'"


class IsoDateTime(click.ParamType):
    """An ISO 8601 time; one without an offset is UTC."""

    name = "ISO8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"expected an ISO 8601 time such as 2026-12-04T10:00:00Z, got {value!r}", param, ctx)
        return when if when.tzinfo else when.replace(tzinfo=UTC)


class PartitionOffsets(click.ParamType):
    """``PARTITION:OFFSET`` pairs separated by commas, each partition once."""

    name = "P:O,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[int, int]:
        if isinstance(value, dict):
            return value
        pairs: dict[int, int] = {}
        for item in str(value).split(","):
            partition, sep, offset = item.strip().partition(":")
            if not (sep and partition.isdigit() and offset.isdigit()):
                self.fail(
                    f"expected PARTITION:OFFSET pairs separated by commas, such as 0:120,1:98; got {item.strip()!r}",
                    param,
                    ctx,
                )
            if int(partition) in pairs:
                self.fail(f"partition {partition} is given twice", param, ctx)
            pairs[int(partition)] = int(offset)
        return pairs


@dataclass(frozen=True)
class Target:
    """Where to move: ``earliest``, ``latest``, the first event at or after ``when``, or ``offsets``."""

    kind: str
    when: datetime | None = None
    offsets: dict[int, int] | None = None

    def describe(self) -> str:
        if self.kind == "datetime":
            assert self.when is not None
            return f"the first events at or after {self.when.isoformat()}"
        if self.kind == "offsets":
            return "the offsets given (other partitions keep theirs)"
        return f"the {self.kind} offsets"

    def to_json(self) -> dict[str, Any]:
        if self.kind == "datetime":
            assert self.when is not None
            return {"datetime": self.when.isoformat()}
        if self.kind == "offsets":
            return {"offsets": {str(p): o for p, o in sorted((self.offsets or {}).items())}}
        return {self.kind: True}


def choose(
    to_earliest: bool, to_latest: bool, to_datetime: datetime | None, to_offsets: dict[int, int] | None
) -> Target:
    """The one target the options name (a usage error unless exactly one is given)."""
    given = [
        target
        for target, chosen in (
            (Target("earliest"), to_earliest),
            (Target("latest"), to_latest),
            (Target("datetime", when=to_datetime), to_datetime is not None),
            (Target("offsets", offsets=to_offsets), to_offsets is not None),
        )
        if chosen
    ]
    if len(given) != 1:
        raise click.UsageError(
            "expected exactly one of --to-earliest, --to-latest, --to-datetime, --to-offsets"
            + ("" if not given else f", got {len(given)}")
        )
    return given[0]


def refuse_while_running(runs: Runs, cfg: ExporterConfig) -> None:
    """Refuse while a run could plan or commit: one is running, or one is queued and may start any moment
    (a paused exporter starts no queued run)."""
    run = runs.latest(cfg.dag_id)
    if run is None or run.state not in ("running", "queued"):
        return
    if run.state == "queued" and runs.paused(cfg.dag_id):
        return
    raise click.ClickException(
        f"batch exporter '{cfg.name}' has a run {run.state} ({run.run_id}): wait for it to end, pausing the "
        f"exporter first so that no new run starts (`airflow dags pause {cfg.dag_id}`), then run this again"
    )


@dataclass(frozen=True)
class Row:
    """One partition: where Kafka and Airflow's record put the exporter, the target, and the effect."""

    partition: int
    kafka: int | None
    airflow: int | None
    in_flight_end: int | None
    target: int
    again: int | None
    skipped: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "kafka": self.kafka,
            "airflow": self.airflow,
            **({"inFlightTo": self.in_flight_end} if self.in_flight_end is not None else {}),
            "target": self.target,
            "exportedAgain": self.again,
            "skipped": self.skipped,
        }


def recorded_offsets(record: Progress | None, committed_sets: set[int]) -> dict[int, int]:
    """Where Airflow's record puts the exporter: the starts of the plan's sets not committed yet (a run replays
    them from there), the ends of those committed."""
    if record is None:
        return {}
    done = [s for s in (record.plan.sets if record.plan else []) if s.index in committed_sets]
    return record.committed | {r.partition: r.end for s in done for r in s.ranges}


def current_offsets(offsets: StreamOffsets, recorded: dict[int, int]) -> dict[int, int | None]:
    """Where the exporter stands per partition: Kafka's committed offset, else its record's."""
    return {p: offsets.offset(p) if offsets.offset(p) is not None else recorded.get(p) for p in sorted(offsets.end)}


def targets_of(
    consumer: Any, stream: str, offsets: StreamOffsets, current: dict[int, int | None], to: Target
) -> dict[int, int]:
    """The offset each partition moves to."""
    if to.kind == "earliest":
        return dict(offsets.beginning)
    if to.kind == "latest":
        return dict(offsets.end)
    if to.kind == "datetime":
        return _at_time(consumer, stream, offsets, to)
    return _given(offsets, current, to.offsets or {})


def _at_time(consumer: Any, stream: str, offsets: StreamOffsets, to: Target) -> dict[int, int]:
    """Kafka's first offset at or after the time; a partition with no event since goes to its end."""
    from kafka import TopicPartition

    assert to.when is not None
    millis = max(int(to.when.timestamp() * 1000), 0)
    found = consumer.offsets_for_times({TopicPartition(stream, p): millis for p in offsets.end})
    return {tp.partition: (hit.offset if hit is not None else offsets.end[tp.partition]) for tp, hit in found.items()}


def _given(offsets: StreamOffsets, current: dict[int, int | None], given: dict[int, int]) -> dict[int, int]:
    """``--to-offsets``, checked against the stream; the partitions not given keep where they stand."""
    targets: dict[int, int] = {}
    for p, offset in sorted(given.items()):
        if p not in offsets.end:
            raise click.BadParameter(
                f"partition {p} does not exist in the stream (its partitions: 0-{max(offsets.end)})",
                param_hint=OFFSETS_OPTION,
            )
        low, high = offsets.beginning[p], offsets.end[p]
        if not low <= offset <= high:
            raise click.BadParameter(
                f"partition {p}: expected an offset from its earliest {low} to its end {high}, got {offset}",
                param_hint=OFFSETS_OPTION,
            )
        targets[p] = offset
    for p, offset in current.items():
        if p in targets:
            continue
        if offset is None:
            raise click.BadParameter(
                f"partition {p} is not given and has no offset to keep (none in Kafka, none in Airflow's record); "
                f"give it one, e.g. {p}:{offsets.beginning[p]}",
                param_hint=OFFSETS_OPTION,
            )
        if offset > offsets.end[p]:
            raise click.BadParameter(
                f"partition {p} is not given and its offset {offset} is past the stream's end {offsets.end[p]}; "
                f"give it one, e.g. {p}:{offsets.end[p]}",
                param_hint=OFFSETS_OPTION,
            )
        targets[p] = offset
    return targets


@dataclass(frozen=True)
class Reading:
    """Where the exporter stands: what Kafka holds, Airflow's record as the next run would read it, the targets."""

    offsets: StreamOffsets
    plan: RunPlan | None  # in flight
    recorded: dict[int, int]  # where the record puts each partition
    pending: dict[int, int]  # the planned end of each partition whose set is not committed yet
    targets: dict[int, int]

    def rows(self) -> list[Row]:
        """Per partition, the effect of moving from where the exporter stands to the target.

        Offsets below the earliest are gone and past the end do not exist, so where the exporter stands is
        counted from within the stream: that is what a run would read from."""
        offsets = self.offsets
        current = current_offsets(offsets, self.recorded)
        rows = []
        for p, target in sorted(self.targets.items()):
            again = skipped = None
            if current[p] is not None:
                standing = min(max(current[p], offsets.beginning[p]), offsets.end[p])
                again, skipped = max(standing - target, 0), max(target - standing, 0)
            rows.append(Row(p, offsets.offset(p), self.recorded.get(p), self.pending.get(p), target, again, skipped))
        return rows


def _cell(value: int | None, absent: str) -> str:
    return absent if value is None else str(value)


def _effect(row: Row) -> str:
    if row.again is None:
        return "no offset to compare"
    if row.again:
        return f"{row.again:,} exported again"
    if row.skipped:
        return f"{row.skipped:,} skipped"
    return "no change"


@dataclass(frozen=True)
class View:
    """What the command shows: the exporter, the target, each partition, and what Airflow's record adds."""

    cfg: ExporterConfig
    to: Target
    rows: list[Row]
    record: Progress | None
    record_error: str
    plan: RunPlan | None
    topic_id: str | None
    executed: bool

    @property
    def totals(self) -> tuple[int, int]:
        return sum(r.again or 0 for r in self.rows), sum(r.skipped or 0 for r in self.rows)

    @property
    def planned_events(self) -> int:
        return sum(r.size for s in self.plan.sets for r in s.ranges) if self.plan else 0

    @property
    def recreated(self) -> bool:
        """The stream was deleted and recreated since the record was kept: its offsets are another topic's."""
        recorded = self.record.topic_id if self.record else None
        return bool(recorded and self.topic_id and recorded != self.topic_id)


def _record_lines(view: View) -> list[str]:
    if view.record_error:
        return [f"Airflow's record: unreadable ({view.record_error}); --execute replaces it"]
    if view.record is None:
        return ["Airflow's record: none"]
    lines = ["Airflow's record: no plan in flight"]
    if view.plan is not None:
        lines = [
            f"Airflow's record: plan in flight of run {view.plan.run_id} ({view.planned_events:,} events), not seen "
            "committed in Kafka; after the reset the next run plans anew from the targets (files that run uploaded "
            "stay in the bucket)"
        ]
    if view.recreated:
        assert view.record is not None
        lines.append(
            f"The stream was deleted and recreated since (topic id {view.record.topic_id}, now {view.topic_id}): "
            "the offsets Airflow recorded are the old topic's"
        )
    return lines


def show_table(view: View) -> None:
    cfg = view.cfg
    click.echo(
        f"Batch exporter '{cfg.name}' (stream {cfg.stream}, Kafka group {cfg.group_id}), to {view.to.describe()}:"
    )
    for line in _record_lines(view):
        click.echo(line)
    cells = [[r.partition, _cell(r.kafka, "forgotten"), _airflow_cell(r), r.target, _effect(r)] for r in view.rows]
    again, skipped = view.totals
    cells.append(["TOTAL", "", "", "", f"{again:,} exported again, {skipped:,} skipped"])
    emit_table(["PARTITION", "KAFKA", "AIRFLOW", "TARGET", "EFFECT"], cells)
    if view.executed:
        click.echo(
            f"Reset: Kafka group {cfg.group_id} and Airflow's record now hold the targets; the next run exports "
            "from there."
        )
    else:
        click.echo("Dry run: nothing was changed. Add --execute to apply.")


def _airflow_cell(row: Row) -> str:
    recorded = _cell(row.airflow, "none")
    return recorded if row.in_flight_end is None else f"{recorded}, in flight to {row.in_flight_end}"


def show_json(view: View) -> None:
    again, skipped = view.totals
    in_flight = {"runId": view.plan.run_id, "events": view.planned_events} if view.plan else None
    emit_json(
        {
            "ref": {"name": view.cfg.name},
            "streamRef": {"name": view.cfg.stream},
            "to": view.to.to_json(),
            "planInFlight": in_flight,
            **({"recordError": view.record_error} if view.record_error else {}),
            **({"streamRecreated": True} if view.recreated else {}),
            "partitions": [r.to_json() for r in view.rows],
            "total": {"exportedAgain": again, "skipped": skipped},
            "executed": view.executed,
        }
    )


def apply(
    store: ConnectorStore,
    consumer: Any,
    cfg: ExporterConfig,
    targets: dict[int, int],
    topic_id: str | None,
    several: StreamsProgress | None = None,
) -> None:
    """Write the targets to Airflow's record, then to Kafka.

    The record first, as a run's plan does: were the Kafka commit to fail after it, the next run finds the two
    disagreeing and refuses, naming this command, rather than guessing. Of an exporter of ``several`` streams,
    only the stream's own record changes."""
    from strm_provider import offsets, progress

    assert cfg.stream is not None
    record = Progress(cfg.stream, dict(targets), topic_id, plan=None, recovered=None)
    kept = replace(several, streams={**several.streams, cfg.stream: record}) if several is not None else record
    store.set_variable(progress.variable_key(cfg.group_id), progress.dumps(kept), progress.description(cfg.group_id))
    try:
        offsets.record_plan(consumer, cfg.stream, {p: (o, RESET_METADATA) for p, o in targets.items()})
    except Exception as err:
        raise click.ClickException(
            f"Airflow's record of '{cfg.name}' was moved, but Kafka refused the commit of group {cfg.group_id} "
            f"({type(err).__name__}: {err}); run this command again"
        ) from None


def read_kafka(consumer: Any, cfg: ExporterConfig) -> StreamOffsets:
    from strm_provider.offsets import read_stream

    try:
        return read_stream(consumer, cfg.stream)
    except LookupError:
        raise click.ClickException(
            f"stream '{cfg.stream}' of batch exporter '{cfg.name}' does not exist on the Kafka cluster"
        ) from None


def read_targets(runs: Runs, consumer: Any, cfg: ExporterConfig, record: Progress | None, to: Target) -> Reading:
    """What Kafka holds, the plan in flight, where the record puts the exporter, and the targets."""
    from kafka.errors import KafkaError

    from strm_provider.cli.health import committed_sets, in_flight

    try:
        offsets = read_kafka(consumer, cfg)
        done = (
            committed_sets(runs, cfg.dag_id, record, {p: offsets.offset(p) for p in offsets.end}) if record else set()
        )
        plan = in_flight(record, done) if record else None
        recorded = recorded_offsets(record, done)
        targets = targets_of(consumer, cfg.stream, offsets, current_offsets(offsets, recorded), to)
    except KafkaError as err:
        raise click.ClickException(f"Kafka: {type(err).__name__}: {err}") from None
    pending = {
        r.partition: r.end for s in (plan.sets if plan else []) if s.index not in done for r in s.ranges if r.size
    }
    return Reading(offsets, plan, recorded, pending, targets)


def reset_exporter(
    store: ConnectorStore, cfg: ExporterConfig, to: Target, *, execute: bool, output: str, stream: str | None = None
) -> None:
    """Show (and with ``execute`` apply) moving ``cfg``'s exporter to ``to``; of an exporter of several streams,
    its ``stream`` only."""
    from strm_provider.cli.health import record_of, streams_record
    from strm_provider.cli.runs import open_runs
    from strm_provider.cli.streams import group_consumer, kafka_hook

    runs = open_runs(store)
    refuse_while_running(runs, cfg)
    several = streams_record(store, cfg) if cfg.several_streams else None
    if cfg.several_streams:
        cfg = cfg.model_copy(update={"stream": stream, "streams": None, "stream_pattern": None})
        if several is None:  # not planned yet: the first run plans every stream from the exporter's creation
            raise click.ClickException(
                f"batch exporter '{cfg.name}' has not planned stream '{stream}' yet: its next run decides where it "
                "starts (from the exporter's creation, or the earliest with include_existing_events)"
            )
    record, record_error = record_of(store, cfg, several)
    hook = kafka_hook(store, cfg.kafka_connection, f"'kafka_connection' of exporter '{cfg.name}'")
    consumer = group_consumer(hook, cfg.group_id)
    try:
        reading = read_targets(runs, consumer, cfg, record, to)
        if execute:
            apply(store, consumer, cfg, reading.targets, reading.offsets.topic_id, several)
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
    view = View(cfg, to, reading.rows(), record, record_error, reading.plan, reading.offsets.topic_id, execute)
    if output == "json":
        show_json(view)
    else:
        show_table(view)
