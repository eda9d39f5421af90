"""What ``strm monitor batch-exporter`` says of an exporter: its state, its last run, its lag, its progress record.

The state comes from Airflow's records of the exporter's DAG (:mod:`strm_provider.cli.runs`), the
lag from Kafka (the exporter's consumer group against the stream's end offsets), the plan in flight
and the last recovery from the exporter's progress record in Airflow (:mod:`strm_provider.progress`).
:func:`report` makes an exporter's row as JSON shows it, :func:`health_table` the table people read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from strm_provider.cli.output import emit_table
from strm_provider.cli.runs import FINISHED, RunInfo, Runs, TaskRun, first_error
from strm_provider.cli.store import ConnectorStore
from strm_provider.config import ExporterConfig
from strm_provider.naming import EXTENSIONS
from strm_provider.planning import PlanRefused, Progress, RunPlan, StreamsProgress


def state_of(
    paused: bool | None, run: RunInfo | None, tasks: list[TaskRun], interval_s: int, now: datetime
) -> tuple[str, str]:
    """(state, why) of one exporter.

    ``HEALTHY``: the last run succeeded and ended within two intervals; ``RUNNING``; ``RETRYING`` (a
    task failed and waits for its next try); ``UNHEALTHY``: the last run failed, or the last success is
    older than two intervals; ``PAUSED``; ``WAITING``: no run yet.
    """
    if paused:
        return "PAUSED", "paused in Airflow"
    if run is None:
        return "WAITING", "no run yet" if paused is not None else "Airflow has not read the exporter file yet"
    if run.state in ("running", "queued"):
        retrying = [t.label for t in tasks if t.state == "up_for_retry"]
        if retrying:
            return "RETRYING", f"{', '.join(retrying)} failed and will be retried"
        return "RUNNING", ""
    if run.state == "success":
        if run.end is not None and now - run.end > timedelta(seconds=2 * interval_s):
            return "UNHEALTHY", f"no run has ended since {run.end:%Y-%m-%d %H:%M:%S} UTC (over two intervals)"
        return "HEALTHY", ""
    return "UNHEALTHY", f"the last run {run.state}"


def lag(
    store: ConnectorStore, cfg: ExporterConfig, record: Progress | None = None
) -> tuple[dict[str, int] | None, dict[int, int | None] | None, str]:
    """Per partition, the offsets of the stream not yet exported (end offset minus committed); the group's
    committed offsets when ``record`` holds a plan (to tell whether Kafka shows it committed); or None and
    why not (Kafka unreachable, a connection the remote Airflow does not reveal)."""
    from strm_provider.cli.streams import kafka_hook
    from strm_provider.offsets import group_lag, read_offsets, streams_lag
    from strm_provider.planning import select_streams

    try:
        hook = kafka_hook(store, cfg.kafka_connection, f"'kafka_connection' of exporter '{cfg.name}'")
        consumer = hook.consumer(cfg.group_id, request_timeout_ms=15_000)
    except Exception as err:  # lag is information; the rest still shows
        return None, None, _one_line(err)
    try:
        if cfg.several_streams:
            streams = select_streams(consumer.topics(), cfg.streams, cfg.stream_pattern)
            lags = streams_lag(consumer, streams) if streams else {}
            return {f"{s}:{p}": n for s, by_partition in lags.items() for p, n in by_partition.items()}, None, ""
        assert cfg.stream is not None
        partitions = {str(p): n for p, n in group_lag(consumer, cfg.stream).items()}
        committed = read_offsets(consumer, cfg.stream)[0] if record is not None and record.plan else None
        return partitions, committed, ""
    except Exception as err:
        return None, None, _one_line(err)
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


def record_of(
    store: ConnectorStore, cfg: ExporterConfig, several: StreamsProgress | None = None
) -> tuple[Progress | None, str]:
    """The exporter's progress record in Airflow (None when it has none, or one of another stream), or why
    it cannot be read; of an exporter of ``several`` streams, the record of its stream ``cfg.stream``."""
    from strm_provider import progress

    if several is not None:
        return several.streams.get(str(cfg.stream)), ""
    key = progress.variable_key(cfg.group_id)
    try:
        record = progress.parse(store.get_variable(key), key)
    except PlanRefused as err:  # its message names the Variable and what to do
        return None, str(err)
    except Exception as err:  # the record is information; the rest still shows
        return None, _one_line(err)
    # an exporter of several streams keeps one record per stream; the monitor shows their lag instead
    return (record if isinstance(record, Progress) and record.stream == cfg.stream else None), ""


def streams_record(store: ConnectorStore, cfg: ExporterConfig) -> StreamsProgress | None:
    """The record of an exporter of several streams (None when it has none, or one of a single stream)."""
    from strm_provider import progress

    key = progress.variable_key(cfg.group_id)
    record = progress.parse(store.get_variable(key), key)
    return record if isinstance(record, StreamsProgress) else None


def committed_sets(runs: Runs, dag_id: str, record: Progress, committed: Mapping[int, int | None] | None) -> set[int]:
    """The recorded plan's sets that are committed, as the plan task decides: Kafka holds every range's end,
    or, where Kafka has forgotten, the set's export task reported its commit. ``committed`` None (Kafka
    unknown) counts only the sets with nothing to export."""
    plan = record.plan
    if plan is None:
        return set()
    forgotten = committed is not None and any(
        committed.get(r.partition) is None for s in plan.sets for r in s.ranges if r.size
    )
    # the export tasks' summaries are read only when Kafka has forgotten: they cost a request per task
    reported = plan.finished(export_summaries(runs, dag_id, plan), record.stream) if forgotten else set()
    return plan.committed_sets(committed or {}, reported)


def export_summaries(runs: Runs, dag_id: str, plan: RunPlan) -> list[Any]:
    """What the export tasks of the runs that exported ``plan`` returned (XCom), where Airflow still has it."""
    summaries = []
    for run_id in plan.runs:
        for task in runs.tasks(dag_id, run_id):
            if task.task_id == "export":
                summaries.append(runs.summary(dag_id, run_id, task))
    return [s for s in summaries if s is not None]


def in_flight(record: Progress, committed_sets: set[int]) -> RunPlan | None:
    """The record's plan unless every set is committed: a finished run's plan stays in the record until the
    next run sees it committed."""
    plan = record.plan
    if plan is None or all(s.index in committed_sets for s in plan.sets):
        return None
    return plan


def progress_of(record: Progress, committed_sets: set[int]) -> dict[str, Any]:
    """The plan in flight and the last recovery of offsets Kafka had forgotten, as JSON shows them."""
    plan = in_flight(record, committed_sets)
    events = sum(r.size for s in plan.sets for r in s.ranges) if plan else 0
    recovered = None
    if record.recovered:
        note = record.recovered
        recovered = {"runId": note.get("run_id"), "at": note.get("at"), "partitions": note.get("partitions") or {}}
    return {"planInFlight": {"runId": plan.run_id, "events": events} if plan else None, "recovered": recovered}


def _one_line(err: BaseException) -> str:
    text = err.message if isinstance(err, click.ClickException) else f"{type(err).__name__}: {err}"
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def report(runs: Runs, store: ConnectorStore, cfg: ExporterConfig, now: datetime | None = None) -> dict[str, Any]:
    """One exporter's row: state, the last finished run (when it ended, what it exported) and the run going,
    the latest failed try and its error, the lag, the plan in flight and the last recovery of offsets Kafka
    had forgotten."""
    now = now or datetime.now(UTC)
    paused = runs.paused(cfg.dag_id)
    run = runs.latest(cfg.dag_id)
    tasks = runs.tasks(cfg.dag_id, run.run_id) if run else []
    state, why = state_of(paused, run, tasks, cfg.interval, now)
    row: dict[str, Any] = {"ref": {"name": cfg.name}, "state": state}
    going = run is not None and run.state not in FINISHED
    # while a run is going, the row keeps the figures of the last one that ended: a healthy exporter at a
    # short interval would otherwise show an empty row half of the time
    finished, finished_tasks = run, tasks
    if going:
        finished = runs.last_finished(cfg.dag_id)
        finished_tasks = runs.tasks(cfg.dag_id, finished.run_id) if finished else []
    failure = failed_try(runs, cfg.dag_id, run, tasks) if run is not None else None
    if failure is None and going and finished is not None and finished.state == "failed":
        failure = failed_try(runs, cfg.dag_id, finished, finished_tasks)
        why = why or f"the last run ({finished.run_id}) failed"
    if why:
        row["reason"] = why
    if failure is not None:
        row.update(failure)
    if finished is not None:
        row["lastRun"] = finished_run(runs, cfg.dag_id, finished, finished_tasks)
    if going:
        assert run is not None
        row["currentRun"] = {"runId": run.run_id, "state": run.state, "started": _iso(run.start)}
    row.update(_kafka_side(runs, store, cfg))
    return row


def invalid_report(runs: Runs, name: str, path: str, error: str, dag_id: str) -> dict[str, Any]:
    """The row of an exporter file that does not validate: the file and why, and what Airflow recorded of the
    DAG standing in for it (its ``check_config`` task fails every interval with the same reason)."""
    row: dict[str, Any] = {"ref": {"name": name}, "state": "INVALID", "file": path, "error": error}
    finished = runs.last_finished(dag_id)
    if finished is not None:
        tasks = runs.tasks(dag_id, finished.run_id)
        failed = [t for t in tasks if t.state == "failed"]
        if failed:  # its error is the file's, shown already
            row.update({"failedTask": failed[0].label, "failedAt": _iso(failed[0].end)})
        row["lastRun"] = {"runId": finished.run_id, "state": finished.state, "ended": _iso(finished.end)}
    return row


def _kafka_side(runs: Runs, store: ConnectorStore, cfg: ExporterConfig) -> dict[str, Any]:
    """The lag, and the progress record's plan in flight and recovery, or why they are unknown."""
    side: dict[str, Any] = {}
    record, record_error = record_of(store, cfg)
    partitions, committed, lag_error = lag(store, cfg, record)
    side["lag"] = {"total": sum(partitions.values()), "partitions": partitions} if partitions is not None else None
    if partitions is not None and cfg.several_streams:
        per_stream: dict[str, int] = {}
        for key, n in partitions.items():
            stream = key.rsplit(":", 1)[0]
            per_stream[stream] = per_stream.get(stream, 0) + n
        side["lag"]["streams"] = per_stream
    if lag_error:
        side["lagError"] = lag_error
    side["progress"] = (
        progress_of(record, committed_sets(runs, cfg.dag_id, record, committed)) if record is not None else None
    )
    if record_error:
        side["progressError"] = record_error
    return side


def failed_try(runs: Runs, dag_id: str, run: RunInfo, tasks: list[TaskRun]) -> dict[str, Any] | None:
    """The run's failed try (a failed task, or one waiting for its retry): the task, the first line of its
    error and when it ended; None when no task of the run failed."""
    failed = [t for t in tasks if t.state in ("failed", "up_for_retry")]
    if not failed:
        return None
    task = failed[0]
    error = first_error(runs.log(dag_id, run.run_id, task, task.try_number)) or "(no error in its log)"
    return {"failedTask": task.label, "error": error, "failedAt": _iso(task.end)}


def finished_run(runs: Runs, dag_id: str, run: RunInfo, tasks: list[TaskRun]) -> dict[str, Any]:
    """A run that ended, as ``lastRun`` shows it: its id, state, end and what it exported."""
    return {
        "runId": run.run_id,
        "state": run.state,
        "ended": _iso(run.end),
        **_exported(runs, dag_id, run.run_id, tasks),
    }


def _iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC, as Airflow keeps its dates (a naive one is taken as UTC)."""
    if when is None:
        return None
    return (when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _exported(runs: Runs, dag_id: str, run_id: str, tasks: list[TaskRun]) -> dict[str, Any]:
    """Events, bytes, files and dead letters of a run: the sum of its export tasks' summaries. ``bytes`` counts
    the events' JSON Lines, ``storedBytes`` the files as stored (compressed when they are); None when a summary
    does not say. ``deadLetterReasons``: each reason a record was refused for, with how many it refused."""
    total: dict[str, Any] = {
        "events": 0,
        "bytes": 0,
        "storedBytes": 0,
        "files": 0,
        "deadLetters": 0,
        "deadLetterReasons": {},
    }
    for task in tasks:
        if task.task_id != "export" or task.state != "success":
            continue
        summary = runs.summary(dag_id, run_id, task)
        if isinstance(summary, dict):
            total["events"] += int(summary.get("events") or 0)
            total["bytes"] += int(summary.get("bytes") or 0)
            total["files"] += len(summary.get("files") or [])
            total["deadLetters"] += int(summary.get("dead_letters") or 0)
            reasons = summary.get("dead_letter_reasons")
            for reason, count in reasons.items() if isinstance(reasons, dict) else ():
                total["deadLetterReasons"][str(reason)] = total["deadLetterReasons"].get(str(reason), 0) + int(count)
            stored = _stored_bytes(summary)
            total["storedBytes"] = (
                None if stored is None or total["storedBytes"] is None else total["storedBytes"] + stored
            )
    return total


def _stored_bytes(summary: dict[str, Any]) -> int | None:
    """What an export task's files take in storage: its ``stored_bytes`` where the summary has it; else,
    when no file is compressed, its JSON bytes (the files hold exactly those); else unknown."""
    if summary.get("stored_bytes") is not None:
        return int(summary["stored_bytes"])
    compressed = tuple(ext for ext in EXTENSIONS.values() if ext != EXTENSIONS["none"])
    if any(str(key).endswith(compressed) for key in summary.get("files") or []):
        return None
    return int(summary.get("bytes") or 0)


#: the monitor's columns
HEALTH_COLUMNS = (
    "NAME|STATE|LAST RUN ENDED (UTC)|EVENTS|JSON BYTES|STORED BYTES|FILES|DEAD LETTERS|LAG|LAG PER PARTITION|PROBLEM"
)


def health_table(items: list[dict[str, Any]]) -> None:
    """The rows of :func:`report` and :func:`invalid_report` as a table, then why the last runs refused records
    and what the progress records say beyond it."""
    emit_table(
        HEALTH_COLUMNS.split("|"),
        [_health_row(item) for item in items],
    )
    notes = [line for item in items for line in _progress_notes(item)]
    if notes:
        click.echo("")
        for line in notes:
            click.echo(line)


def _health_row(item: dict[str, Any]) -> list[Any]:
    last, backlog = item.get("lastRun") or {}, item.get("lag")
    exported = "events" in last  # an invalid file's stand-in DAG exports nothing

    def count(key: str) -> str:
        return "" if not exported else "?" if last[key] is None else f"{last[key]:,}"

    return [
        item["ref"]["name"],
        item["state"],
        _utc(last.get("ended")),
        count("events"),
        count("bytes"),
        count("storedBytes"),
        count("files"),
        count("deadLetters"),
        "" if item["state"] == "INVALID" else "?" if backlog is None else f"{backlog['total']:,}",
        _lag_detail(backlog),
        _problem(item),
    ]


def _lag_detail(backlog: dict[str, Any] | None) -> str:
    """``0:12 1:0`` per partition; for an exporter of several streams, ``clicks=12 views=0`` per stream."""
    if not backlog:
        return ""
    if "streams" in backlog:
        return " ".join(f"{stream}={n}" for stream, n in backlog["streams"].items())
    return " ".join(f"{p}:{n}" for p, n in backlog["partitions"].items())


def _utc(iso: str | None) -> str:
    """``2026-12-06 04:31:02`` of an ISO date in UTC."""
    return (iso or "")[:19].replace("T", " ")


def _progress_notes(item: dict[str, Any]) -> list[str]:
    """Below the table: the reasons of the last run's dead letters, and what the exporter's progress record in
    Airflow says beyond the row."""
    name, notes = item["ref"]["name"], []
    last = item.get("lastRun") or {}
    if last.get("deadLetters"):
        reasons = sorted((last.get("deadLetterReasons") or {}).items(), key=lambda pair: (-pair[1], pair[0]))
        why = "; ".join(f"{reason} ({count:,})" for reason, count in reasons)
        notes.append(
            f"{name}: {last['deadLetters']:,} dead letter{'s' if last['deadLetters'] != 1 else ''} in run "
            f"{last['runId']}" + (f": {why}" if why else "")
        )
    if item.get("progressError"):
        notes.append(f"{name}: progress record unreadable: {item['progressError']}")
    progress = item.get("progress") or {}
    plan, recovered = progress.get("planInFlight"), progress.get("recovered")
    if plan:
        notes.append(
            f"{name}: plan in flight: run {plan['runId']}, {plan['events']:,} events planned, "
            "not seen committed in Kafka yet"
        )
    if recovered:
        partitions = ", ".join(recovered["partitions"]) or "none"
        notes.append(
            f"{name}: Kafka had forgotten the offsets of partitions {partitions}; run {recovered['runId']} took "
            f"them from Airflow's record at {str(recovered['at'] or '?')[:19].replace('T', ' ')} UTC"
        )
    return notes


def _problem(item: dict[str, Any]) -> str:
    if item["state"] == "INVALID":
        return f"{item['file']}: {item['error']}"
    if item.get("failedTask"):
        at = f" (failed {_utc(item['failedAt'])} UTC)" if item.get("failedAt") else ""
        failure = f"{item['failedTask']}{at}: {item.get('error', '')}"
        # a run is going; the failure is the last finished run's
        return f"the last run failed: {failure}" if item["state"] == "RUNNING" else failure
    if item["state"] in ("UNHEALTHY", "RETRYING"):
        return item.get("reason", "")
    return f"lag unknown: {item['lagError']}" if item.get("lagError") else ""
