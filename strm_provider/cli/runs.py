"""An exporter's DAG runs as Airflow records them: state, task instances, XCom summaries and task logs.

Two sources behind one interface, as for data connectors: :class:`LocalRuns` reads Airflow's
metadata database and its task log reader (what the API server itself uses), :class:`RemoteRuns`
the REST API v2 of a deployed Airflow. Both only read. :func:`print_logs` shows a run's task logs
as ``strm logs batch-exporter`` prints them.
"""

from __future__ import annotations

import abc
import json
import logging
import re
import time
from datetime import datetime
from typing import Any, NamedTuple

import click

from strm_provider.cli.store import ConnectorStore, LocalStore, RemoteStore
from strm_provider.version_compat import DAG_RUN_DUE, read_task_log, xcom_table, xcom_value


class RunInfo(NamedTuple):
    run_id: str
    state: str
    start: datetime | None
    end: datetime | None


#: the run states after which nothing more happens to a run
FINISHED = ("success", "failed")


class TaskRun(NamedTuple):
    task_id: str
    map_index: int
    state: str
    try_number: int
    #: when its latest try ended (a failed try that waits for its retry keeps it); None while it runs
    end: datetime | None = None

    @property
    def label(self) -> str:
        """``plan``, ``export[1]``: how the task is named in the CLI's output."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


class Runs(abc.ABC):
    """Read-only view of Airflow's DAG runs."""

    @abc.abstractmethod
    def paused(self, dag_id: str) -> bool | None:
        """Whether the DAG is paused; None when Airflow does not know it (yet)."""

    @abc.abstractmethod
    def latest(self, dag_id: str) -> RunInfo | None:
        """The most recent run (by its scheduled time), or None."""

    @abc.abstractmethod
    def last_finished(self, dag_id: str) -> RunInfo | None:
        """The most recent run that has ended (succeeded or failed), or None."""

    @abc.abstractmethod
    def run(self, dag_id: str, run_id: str) -> RunInfo | None:
        """One run, or None when there is none of that id."""

    @abc.abstractmethod
    def tasks(self, dag_id: str, run_id: str) -> list[TaskRun]:
        """The run's task instances (mapped ones one per index), in task order."""

    @abc.abstractmethod
    def summary(self, dag_id: str, run_id: str, task: TaskRun) -> Any:
        """The task's return value (XCom ``return_value``), or None."""

    @abc.abstractmethod
    def log(self, dag_id: str, run_id: str, task: TaskRun, try_number: int) -> list[dict[str, Any]]:
        """The structured log lines of one try (``event``, ``timestamp``, ``level``, ...), secrets masked."""


def _sorted(tasks: list[TaskRun]) -> list[TaskRun]:
    order = {"check_config": 0, "plan": 1, "export": 2}
    return sorted(tasks, key=lambda t: (order.get(t.task_id, 9), t.task_id, t.map_index))


def _date(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _state(value: Any) -> str:
    return str(getattr(value, "value", value) or "none")


class LocalRuns(Runs):
    """Airflow's metadata database on this machine, and its task log reader."""

    def __init__(self, store: LocalStore) -> None:
        self._read = store.in_session

    def paused(self, dag_id: str) -> bool | None:
        from airflow.models import DagModel
        from sqlalchemy import select

        return self._read(lambda s: s.scalar(select(DagModel.is_paused).where(DagModel.dag_id == dag_id)))

    def _info(self, run: Any) -> RunInfo | None:
        return None if run is None else RunInfo(run.run_id, _state(run.state), run.start_date, run.end_date)

    def latest(self, dag_id: str) -> RunInfo | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        stmt = select(DagRun).where(DagRun.dag_id == dag_id).order_by(getattr(DagRun, DAG_RUN_DUE).desc()).limit(1)
        return self._read(lambda s: self._info(s.scalar(stmt)))

    def last_finished(self, dag_id: str) -> RunInfo | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        stmt = (
            select(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.state.in_(FINISHED))
            .order_by(getattr(DagRun, DAG_RUN_DUE).desc())
            .limit(1)
        )
        return self._read(lambda s: self._info(s.scalar(stmt)))

    def run(self, dag_id: str, run_id: str) -> RunInfo | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        stmt = select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        return self._read(lambda s: self._info(s.scalar(stmt)))

    def tasks(self, dag_id: str, run_id: str) -> list[TaskRun]:
        from airflow.models import TaskInstance
        from sqlalchemy import select

        stmt = select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        return _sorted(
            self._read(
                lambda s: [
                    TaskRun(t.task_id, t.map_index, _state(t.state), t.try_number, t.end_date) for t in s.scalars(stmt)
                ]
            )
        )

    def summary(self, dag_id: str, run_id: str, task: TaskRun) -> Any:
        from sqlalchemy import select

        table = xcom_table()
        stmt = select(table).where(
            table.dag_id == dag_id,
            table.run_id == run_id,
            table.task_id == task.task_id,
            table.map_index == task.map_index,
            table.key == "return_value",
        )

        def read(session: Any) -> Any:
            row = session.scalar(stmt)
            return None if row is None else xcom_value(row)

        return self._read(read)

    def log(self, dag_id: str, run_id: str, task: TaskRun, try_number: int) -> list[dict[str, Any]]:
        from airflow.models import TaskInstance, Trigger
        from sqlalchemy import select
        from sqlalchemy.orm import selectinload

        def read(session: Any) -> list[dict[str, Any]]:
            stmt = (
                select(TaskInstance)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == task.task_id,
                    TaskInstance.map_index == task.map_index,
                )
                # what the log reader touches, loaded while the session is open (as the API server does); in
                # queries of their own, as Airflow 2 joins the DAG's row with an inner join, which would drop a
                # task instance whose DAG has no row
                .options(selectinload(TaskInstance.dag_run))
                .options(selectinload(TaskInstance.trigger).selectinload(Trigger.triggerer_job))
                .options(selectinload(TaskInstance.dag_model))
            )
            ti = session.scalar(stmt)
            if ti is None:
                return []
            log = read_task_log(ti, try_number)
            return text_log_lines(log) if isinstance(log, str) else [_line(m) for m in log]

        return self._read(read)


def _line(message: Any) -> dict[str, Any]:
    return message.model_dump(mode="json") if hasattr(message, "model_dump") else dict(message)


#: a record of a text log as Airflow's default log format writes it: ``[time] {file.py:12} LEVEL - message``
#: (the reader's own lines, such as the source details' group, have the level and message only)
TEXT_RECORD = re.compile(
    r"^\s*(?:\[(?P<timestamp>[^\]]*)\]\s+)?(?:\{[^}]*\}\s+)?"
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) - (?P<event>.*)$"
)
TRACEBACK = "Traceback (most recent call last):"


def text_log_lines(text: str) -> list[dict[str, Any]]:
    """A text log (Airflow 2's) as the structured lines Airflow 3 gives: a line that does not start a record
    continues the one before (a traceback, a message of several lines); a traceback becomes the record's
    ``error_detail``, its exception's type and message, as Airflow 3 records it."""
    records: list[dict[str, Any]] = []
    for raw in text.splitlines():
        match = TEXT_RECORD.match(raw)
        if match:
            records.append({k: v for k, v in match.groupdict().items() if v is not None})
        elif records:
            records[-1]["event"] += "\n" + raw
        elif raw.strip():
            records.append({"event": raw})
    for record in records:
        message, sep, trace = record["event"].partition(TRACEBACK)
        if sep:
            record["event"] = message.rstrip()
            record["error_detail"] = [_exception_of(trace)]
    return records


def _exception_of(trace: str) -> dict[str, str]:
    """The exception a traceback ends with (the last one of a chain): its type and message."""
    last = trace.rsplit(TRACEBACK, 1)[-1].splitlines()
    body = [line for line in last if line.strip()]
    # the frames are indented; the exception's line is the first that is not, its message may go on
    start = next((i for i, line in enumerate(body) if not line[:1].isspace()), len(body))
    kind, _, value = "\n".join(body[start:]).partition(":")
    return {"exc_type": kind.strip(), "exc_value": value.strip()}


class RemoteRuns(Runs):
    """A deployed Airflow's REST API (v2, or v1 on Airflow 2), with the connector store's authentication."""

    def __init__(self, store: RemoteStore) -> None:
        self.api = store

    def paused(self, dag_id: str) -> bool | None:
        dag = self.api.call("GET", f"/dags/{dag_id}", ok_missing=True)
        return None if dag is None else bool(dag.get("is_paused"))

    @staticmethod
    def _info(run: dict[str, Any]) -> RunInfo:
        return RunInfo(
            run["dag_run_id"], _state(run.get("state")), _date(run.get("start_date")), _date(run.get("end_date"))
        )

    def latest(self, dag_id: str) -> RunInfo | None:
        return self._newest(dag_id, {})

    def last_finished(self, dag_id: str) -> RunInfo | None:
        return self._newest(dag_id, {"state": list(FINISHED)})

    def _newest(self, dag_id: str, where: dict[str, Any]) -> RunInfo | None:
        # API v1 (Airflow 2) orders runs by when they were due under the name execution_date
        due = "execution_date" if self.api.api == "v1" else "run_after"
        params = {"order_by": f"-{due}", "limit": 1, **where}
        page = self.api.call("GET", f"/dags/{dag_id}/dagRuns", ok_missing=True, params=params)
        runs = (page or {}).get("dag_runs") or []
        return self._info(runs[0]) if runs else None

    def run(self, dag_id: str, run_id: str) -> RunInfo | None:
        run = self.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}", ok_missing=True)
        return None if run is None else self._info(run)

    def tasks(self, dag_id: str, run_id: str) -> list[TaskRun]:
        page = self.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return _sorted([self._task_run(t) for t in page.get("task_instances", [])])

    @staticmethod
    def _task_run(data: dict[str, Any]) -> TaskRun:
        map_index, try_number = int(data.get("map_index", -1)), int(data.get("try_number") or 0)
        return TaskRun(data["task_id"], map_index, _state(data.get("state")), try_number, _date(data.get("end_date")))

    def summary(self, dag_id: str, run_id: str, task: TaskRun) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task.task_id}/xcomEntries/return_value"
        params: dict[str, Any] = {"map_index": task.map_index}
        if self.api.api == "v1":  # Airflow 2 answers the value's Python repr unless asked for JSON
            params["stringify"] = "false"
        entry = self.api.call("GET", path, ok_missing=True, params=params)
        value = None if entry is None else entry.get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def log(self, dag_id: str, run_id: str, task: TaskRun, try_number: int) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task.task_id}/logs/{try_number}"
        if self.api.api == "v1":  # Airflow 2 keeps text logs: their text, read as Airflow 3's lines
            params = {"map_index": task.map_index, "full_content": "true"}
            text = self.api.call(
                "GET", path, ok_missing=True, raw=True, params=params, headers={"Accept": "text/plain"}
            )
            return text_log_lines(text or "")
        page = self.api.call(
            "GET",
            path,
            ok_missing=True,
            params={"map_index": task.map_index, "full_content": "true"},
            headers={"Accept": "application/json"},
        )
        return list((page or {}).get("content") or [])


def open_runs(store: ConnectorStore) -> Runs:
    if isinstance(store, RemoteStore):
        return RemoteRuns(store)
    assert isinstance(store, LocalStore)
    return LocalRuns(store)


def first_error(lines: list[dict[str, Any]]) -> str:
    """The first line of the error a failed try ended with: the exception's type and message where the
    log has it, else the last error-level line."""
    for line in reversed(lines):
        details = line.get("error_detail")
        if details:
            last = details[-1] if isinstance(details, list) else details
            message = str(last.get("exc_value") or "").strip().splitlines()
            kind = str(last.get("exc_type") or "").rsplit(".", 1)[-1]
            return f"{kind}: {message[0]}" if message else kind
    errors = [
        str(line.get("event", "")) for line in lines if str(line.get("level", "")).lower() in ("error", "critical")
    ]
    return errors[-1].strip().splitlines()[0] if errors and errors[-1].strip() else ""


#: Airflow's log reader opens every log with a group listing where it read it from (the log file, the worker's
#: log server link): plumbing, not the exporter's log
SOURCE_GROUP = "::group::Log message source details"
GROUP_START, GROUP_END = "::group::", "::endgroup::"
#: the one source detail kept: why a running task's log could not be fetched from its worker
UNREADABLE = "Could not read served logs"
#: a worker log server's link, e.g. http://worker:8793/log/dag_id=.../attempt=1.log
LOG_LINK = re.compile(r"^https?://\S+/log/\S*$")


def print_logs(runs: Runs, dag_id: str, run: RunInfo, follow: bool) -> None:
    """Every try's log of ``run``, each under a heading; with ``follow``, the lines that come until the run
    ends, then the state it ended in."""
    shown: dict[tuple[str, int, int], int] = {}
    # a running try's log is streamed from its worker while it is written: a read cut short there is read again
    # on the next pass, so Airflow's error about it says nothing to the user
    streaming = logging.getLogger("airflow.utils.log.file_task_handler")
    level = streaming.level
    if follow:
        streaming.setLevel(logging.CRITICAL)
    try:
        _follow_logs(runs, dag_id, run, follow, shown)
    finally:
        streaming.setLevel(level)


def _follow_logs(runs: Runs, dag_id: str, run: RunInfo, follow: bool, shown: dict[tuple[str, int, int], int]) -> None:
    while True:
        # the state first: once the run has ended, this pass reads every task's log to its end
        current = runs.run(dag_id, run.run_id) if follow else run
        for task in runs.tasks(dag_id, run.run_id):
            for attempt in range(1, task.try_number + 1):
                key = (task.task_id, task.map_index, attempt)
                lines = _readable(runs.log(dag_id, run.run_id, task, attempt))
                if key not in shown and lines:
                    state = task.state if attempt == task.try_number else "failed"
                    click.echo(f"=== {task.label}, try {attempt} ({state})")
                for line in lines[shown.get(key, 0) :]:
                    click.echo(_render(line))
                if lines:
                    shown[key] = len(lines)
        if not follow:
            return
        if current is None or current.state not in ("running", "queued"):
            click.echo(f"run {run.run_id}: {current.state if current else 'gone'}")
            return
        time.sleep(2)


def _readable(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines of a try that tell about the exporter: without the log's source details and group ends.

    Counted after this filter, so that ``--follow`` picks up where it was although the source details
    change while a task runs (the log server's link until it ends, then the file)."""
    kept, in_sources = [], False
    for line in lines:
        event = str(line.get("event") or "")
        if event.startswith(SOURCE_GROUP):
            in_sources = True
        elif event.startswith(GROUP_END):
            in_sources = False
        elif event.startswith(UNREADABLE) or (not in_sources and not LOG_LINK.match(event.strip())):
            kept.append(line)  # a log that could not be read says so: it is why the try shows nothing
    return kept


def _render(line: dict[str, Any]) -> str:
    event = str(line.get("event") or "")
    if event.startswith(GROUP_START):  # Airflow's sections of a try (Pre Execute, Post Execute): a heading
        return f"--- {event.removeprefix(GROUP_START).strip()}"
    stamp = str(line.get("timestamp") or "")[:23].replace("T", " ")
    level = str(line.get("level") or "").upper()
    details = line.get("error_detail")
    if details:
        for detail in details if isinstance(details, list) else [details]:
            event += f"\n    {detail.get('exc_type', '')}: {detail.get('exc_value', '')}"
    return " ".join(part for part in (stamp, level, event) if part)
