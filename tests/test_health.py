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
