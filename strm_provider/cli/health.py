"""What ``strm monitor batch-exporter`` says of an exporter: its state, its last run and its lag.

The state comes from Airflow's records of the exporter's DAG (:mod:`strm_provider.cli.runs`), the
lag from Kafka (the exporter's consumer group against the stream's end offsets).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from strm_provider.cli.runs import RunInfo, Runs, TaskRun, first_error
from strm_provider.cli.store import ConnectorStore
from strm_provider.config import ExporterConfig

#: every state, in the order a table sorts them by concern
STATES = ("UNHEALTHY", "RETRYING", "RUNNING", "WAITING", "PAUSED", "HEALTHY")


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


def lag(store: ConnectorStore, cfg: ExporterConfig) -> tuple[dict[str, int] | None, str]:
    """Per partition, the offsets of the stream not yet exported (end offset minus committed); or None and
    why not (Kafka unreachable, a connection the remote Airflow does not reveal)."""
    from strm_provider.cli.streams import kafka_hook
    from strm_provider.offsets import group_lag

    try:
        hook = kafka_hook(store, cfg.kafka_connection, f"'kafka_connection' of exporter '{cfg.name}'")
        consumer = hook.consumer(cfg.group_id, request_timeout_ms=15_000)
    except Exception as err:  # lag is information; the rest still shows
        return None, _one_line(err)
    try:
        return {str(p): n for p, n in group_lag(consumer, cfg.stream).items()}, ""
    except Exception as err:
        return None, _one_line(err)
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


def _one_line(err: BaseException) -> str:
    text = err.message if isinstance(err, click.ClickException) else f"{type(err).__name__}: {err}"
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def report(runs: Runs, store: ConnectorStore, cfg: ExporterConfig, now: datetime | None = None) -> dict[str, Any]:
    """One exporter's row: state, the last run (when it ended, what it exported), the lag."""
    now = now or datetime.now(UTC)
    paused = runs.paused(cfg.dag_id)
    run = runs.latest(cfg.dag_id)
    tasks = runs.tasks(cfg.dag_id, run.run_id) if run else []
    state, why = state_of(paused, run, tasks, cfg.interval, now)
    row: dict[str, Any] = {"ref": {"name": cfg.name}, "state": state}
    if why:
        row["reason"] = why
    failed = [t for t in tasks if t.state == "failed"]
    if run is not None and failed:
        task = failed[0]
        row["failedTask"] = task.label
        row["error"] = first_error(runs.log(cfg.dag_id, run.run_id, task, task.try_number)) or "(no error in its log)"
    if run is not None:
        row["lastRun"] = {
            "runId": run.run_id,
            "state": run.state,
            "ended": run.end.isoformat() if run.end else None,
            **_exported(runs, cfg.dag_id, run.run_id, tasks),
        }
    partitions, lag_error = lag(store, cfg)
    row["lag"] = {"total": sum(partitions.values()), "partitions": partitions} if partitions is not None else None
    if lag_error:
        row["lagError"] = lag_error
    return row


def _exported(runs: Runs, dag_id: str, run_id: str, tasks: list[TaskRun]) -> dict[str, int]:
    """Events, bytes and files of a run: the sum of its export tasks' summaries."""
    total = {"events": 0, "bytes": 0, "files": 0}
    for task in tasks:
        if task.task_id != "export" or task.state != "success":
            continue
        summary = runs.summary(dag_id, run_id, task)
        if isinstance(summary, dict):
            total["events"] += int(summary.get("events") or 0)
            total["bytes"] += int(summary.get("bytes") or 0)
            total["files"] += len(summary.get("files") or [])
    return total
