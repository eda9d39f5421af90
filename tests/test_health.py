"""The states ``strm monitor batch-exporter`` shows, from what Airflow records of a run (the live stack
test sees HEALTHY, UNHEALTHY and PAUSED happen; these pin every rule, RUNNING and RETRYING included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strm_provider.cli.health import state_of
from strm_provider.cli.runs import RunInfo, TaskRun, first_error

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def run(state: str, ended_ago: float | None = None) -> RunInfo:
    end = None if ended_ago is None else NOW - timedelta(seconds=ended_ago)
    return RunInfo("scheduled__x", state, NOW - timedelta(minutes=5), end)


@pytest.mark.parametrize(
    ("paused", "last", "tasks", "expected"),
    [
        (False, None, [], "WAITING"),
        (None, None, [], "WAITING"),
        (True, run("failed", 10), [], "PAUSED"),
        (False, run("success", 50), [], "HEALTHY"),
        (False, run("success", 61), [], "UNHEALTHY"),  # two intervals of 30 s passed without a run
        (False, run("running"), [TaskRun("export", 0, "running", 1)], "RUNNING"),
        (False, run("running"), [TaskRun("export", 1, "up_for_retry", 1)], "RETRYING"),
        (False, run("failed", 5), [TaskRun("plan", -1, "failed", 1)], "UNHEALTHY"),
    ],
)
def test_state(paused: bool | None, last: RunInfo | None, tasks: list[TaskRun], expected: str) -> None:
    state, why = state_of(paused, last, tasks, 30, NOW)
    assert state == expected
    if expected == "RETRYING":
        assert "export[1]" in why


def test_first_error_is_the_exception_a_failed_try_ended_with() -> None:
    lines = [
        {"event": "starting", "level": "info"},
        {"event": "something went wrong", "level": "error"},
        {
            "event": "Task failed with exception",
            "level": "error",
            "error_detail": [
                {"exc_type": "strm_provider.hooks.StorageError", "exc_value": "data connector 'bad': denied\nmore"}
            ],
        },
    ]
    assert first_error(lines) == "StorageError: data connector 'bad': denied"
    assert first_error(lines[:2]) == "something went wrong"
    assert first_error(lines[:1]) == ""


AIRFLOW_2_LOG = """ INFO - ::group::Log message source details
*** Found local files:
***   * /airflow/logs/dag_id=strm_export_x/run_id=manual__1/task_id=plan/attempt=1.log
 INFO - ::endgroup::
[2026-12-04T12:00:01.123+0000] {taskinstance.py:2614} INFO - Dependencies all met
[2026-12-04T12:00:02.000+0000] {taskinstance.py:3313} ERROR - Task failed with exception
Traceback (most recent call last):
  File "/strm_provider/operators.py", line 1, in execute
    raise StorageError("wrapped")
ValueError: first

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/strm_provider/operators.py", line 2, in execute
    raise StorageError(msg)
strm_provider.hooks.StorageError: AccessDenied: s3://bucket/elsewhere/x
  refused
[2026-12-04T12:00:02.100+0000] {taskinstance.py:1225} INFO - Marking task as FAILED.
"""


@pytest.mark.compat
def test_an_airflow_2_text_log_reads_as_airflow_3_lines() -> None:
    """Airflow 2 keeps task logs as text: its records, with a traceback as the exception it ended with."""
    from strm_provider.cli.runs import _readable, _render, text_log_lines

    lines = text_log_lines(AIRFLOW_2_LOG)
    assert [line["level"] for line in lines] == ["INFO", "INFO", "INFO", "ERROR", "INFO"]
    assert lines[3]["event"] == "Task failed with exception" and lines[3]["timestamp"].startswith("2026-12-04T12")
    assert lines[3]["error_detail"] == [
        {
            "exc_type": "strm_provider.hooks.StorageError",
            "exc_value": "AccessDenied: s3://bucket/elsewhere/x\n  refused",
        }
    ]
    assert first_error(lines) == "StorageError: AccessDenied: s3://bucket/elsewhere/x"
    shown = [_render(line) for line in _readable(lines)]
    assert shown[0] == "2026-12-04 12:00:01.123 INFO Dependencies all met" and len(shown) == 3, shown
    assert "Found local files" not in "\n".join(shown)
