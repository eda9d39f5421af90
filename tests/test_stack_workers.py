"""``make up WORKERS=2``: the live stack on the CeleryExecutor, its tasks spread over two Celery workers.

``scripts/stack.py up --workers 2`` starts PostgreSQL (the metadata database and Celery's results) and Redis
(Celery's broker) beside the usual stack, runs Airflow's components on the CeleryExecutor and two ``airflow
celery worker`` processes; the demo exporter's runs must succeed, both workers must take tasks, and ``down``
must stop every one of those processes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.test_stack import SCRIPT, alive, family, stack_cli, stack_module, successful_runs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the Celery stack runs on Airflow 3"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing (make system-deps)"),
]


@pytest.fixture
def root() -> Iterator[Path]:
    """The stack's folder, outside pytest's private tmp folder: PostgreSQL runs as its own account when the tests
    run as root, and must reach its data folder inside the stack's."""
    top = Path(tempfile.mkdtemp(prefix="strm-stack-workers-"))
    top.chmod(0o755)
    yield top / "stack"
    subprocess.run(
        [sys.executable, str(SCRIPT), "down", "--root", str(top / "stack")], capture_output=True, timeout=300
    )
    shutil.rmtree(top, ignore_errors=True)


def test_up_with_two_workers_spreads_the_tasks(root: Path) -> None:
    module = stack_module()
    stack = module.Stack(root)
    out = stack_cli(root, "up", "--ports", "auto", "--interval", "10s", "--workers", "2", "--wait-files", "2").stdout
    assert "Executor:     CeleryExecutor, workers worker-1, worker-2" in out
    assert set(stack.running()) == {
        "broker",
        "s3",
        "registry",
        "postgres",
        "redis",
        "airflow",
        "producer",
        *module.WORKER_NAMES[:2],
    }
    assert stack.full_env()["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # the scheduler's components run on Celery, not the LocalExecutor airflow standalone would force
    assert "Forcing executor" not in (root / "logs" / "airflow.log").read_text(errors="replace")

    # several runs of plan + export: both workers take some
    deadline = time.monotonic() + 180
    while min(module.worker_tasks(stack).values()) == 0 and time.monotonic() < deadline:
        time.sleep(3)
    tasks = module.worker_tasks(stack)
    assert set(tasks) == {"worker-1", "worker-2"} and min(tasks.values()) > 0, tasks
    assert successful_runs(stack, 3, timeout=120)
    status = stack_cli(root, "status").stdout
    assert "tasks received: worker-1 " in status

    pids = family(stack)
    stack_cli(root, "down")
    assert alive(pids) == []
    assert stack.running() == {}
