"""``make up`` / ``make down``: the live local stack, as a user runs it (``scripts/stack.py``).

``up`` must bring files into the bucket every interval from scheduled runs nobody triggered,
``down`` must stop exactly what ``up`` started, and a second ``up`` must work on the same state.
The stack runs in a temporary directory on free ports, so it never meets a developer's ``.stack/``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil
import pytest

from tests.exporting import FILE_RE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "stack.py"


def stack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("strm_stack", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stack_cli(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in (root / "logs").glob("*.log"))
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}{logs}"
    return done


def family(stack: Any) -> dict[int, float]:
    """pid -> create time of every process the stack runs (its PID files' processes and their descendants)."""
    out: dict[int, float] = {}
    for proc in stack.running().values():
        for member in [proc, *proc.children(recursive=True)]:
            out[member.pid] = member.create_time()
    return out


def alive(pids: dict[int, float]) -> list[int]:
    result = []
    for pid, created in pids.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                result.append(pid)
        except psutil.NoSuchProcess:
            pass
    return result


def token(stack: Any) -> str:
    password = json.loads(stack.password_file.read_text())["admin"]
    reply = httpx.post(f"{stack.ui_url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    reply.raise_for_status()
    return reply.json()["access_token"]


def dag_runs(stack: Any, dag_id: str) -> list[dict[str, Any]]:
    reply = httpx.get(
        f"{stack.ui_url}/api/v2/dags/{dag_id}/dagRuns",
        headers={"Authorization": f"Bearer {token(stack)}"},
        timeout=30,
    )
    reply.raise_for_status()
    return reply.json()["dag_runs"]


def check_bucket(stack: Any, module: ModuleType, at_least: int) -> list[str]:
    """Exported files of the demo exporter: seed-style names below ``events/``, JSON Lines of clickstream events."""
    files = module.data_files(stack)
    assert len(files) >= at_least
    s3 = module._iam_client(stack, "s3", json.loads((stack.root / "s3-admin.json").read_text()))
    for key in files:
        match = FILE_RE.match(key)
        assert match and match.group("prefix") == "events" and match.group("stream") == "demo", key
        body = s3.get_object(Bucket=module.BUCKET, Key=key)["Body"].read()
        events = [json.loads(line) for line in body.splitlines()]
        assert events and all(e["strmMeta"]["schemaId"] == "clickstream" for e in events)
    return files


def successful_runs(stack: Any, at_least: int, timeout: float = 90) -> list[dict[str, Any]]:
    """The exporter DAG's successful runs, once there are ``at_least`` (or the timeout passed).

    A file is uploaded before its run is marked successful, so a run whose file is already in the
    bucket may still be finishing.
    """
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in dag_runs(stack, "strm_export_s3-demo") if r["state"] == "success"]
        if len(runs) >= at_least or time.monotonic() > deadline:
            return runs
        time.sleep(2)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """The stack's folder; whatever a failed assertion leaves running is stopped afterwards."""
    root = tmp_path / "stack"
    yield root
    subprocess.run([sys.executable, str(SCRIPT), "down", "--root", str(root)], capture_output=True, timeout=300)


def test_make_up_exports_every_interval_and_make_down_stops_exactly_what_it_started(root: Path) -> None:
    module = stack_module()
    stack = module.Stack(root)

    first = stack_cli(root, "up", "--ports", "auto", "--wait-files", "2").stdout
    assert f"Airflow UI:   {stack.ui_url}" in first
    assert str(stack.password_file) in first
    password = json.loads(stack.password_file.read_text())["admin"]
    assert password not in first
    assert all(password not in p.read_text(errors="replace") for p in (root / "logs").glob("*.log"))
    assert set(stack.running()) == {"broker", "s3", "airflow", "producer"}
    first_files = check_bucket(stack, module, 2)

    # the files come from the scheduler's own runs: nobody triggered anything
    runs = successful_runs(stack, at_least=2)
    succeeded = len(runs)
    assert succeeded >= 2
    assert {r["run_type"] for r in dag_runs(stack, "strm_export_s3-demo")} == {"scheduled"}

    processes = family(stack)
    ports = dict(stack.ports)
    stack_cli(root, "down")
    assert alive(processes) == []
    assert not any(module.port_open(port) for port in ports.values())
    assert list((root / "pids").glob("*.pid")) == []
    assert "nothing was running" in stack_cli(root, "down").stdout

    # a second ``up`` on the same state works: new S3 (in memory), same Airflow database and broker data
    stack_cli(root, "up", "--ports", "auto", "--wait-files", "1")
    try:
        assert set(stack.running()) == {"broker", "s3", "airflow", "producer"}
        assert not set(check_bucket(stack, module, 1)) & set(first_files)
        assert len(successful_runs(stack, at_least=succeeded + 1)) > succeeded
    finally:
        processes = family(stack)
        stack_cli(root, "down")
    assert alive(processes) == []
