"""``make up`` / ``make down``: the live local stack, as a user runs it (``scripts/stack.py``).

``up`` must bring files into the bucket every interval from scheduled runs nobody triggered,
``down`` must stop exactly what ``up`` started, and a second ``up`` must work on the same state.
The stack runs in a temporary directory on free ports, so it never meets a developer's ``.stack/``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import secrets
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

from strm_provider.naming import is_data_file, parse_key
from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_VERSION
from tests.exporting import exporter_dag, exporter_group
from tests.readme import readme_flow, run_flow

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


def listening(stack: Any) -> list[tuple[str, str, int]]:
    """(command line, address, port) of every TCP socket a process of the stack listens on."""
    out = []
    for pid in family(stack):
        try:
            proc = psutil.Process(pid)
            sockets = [c.laddr for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            out += [(" ".join(proc.cmdline())[:120], addr.ip, addr.port) for addr in sockets]
        except psutil.NoSuchProcess:  # a task's process that ended meanwhile
            pass
    return out


def loopback(ip: str) -> bool:
    """Whether ``ip`` is a loopback address; Java listens on ``::ffff:127.0.0.1`` for 127.0.0.1."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def check_listeners(stack: Any) -> None:
    """Every listening socket of the stack is on loopback, and its own ports (UI, Kafka, S3, logs, registry) are
    among them."""
    sockets = listening(stack)
    assert [s for s in sockets if not loopback(s[1])] == [], sockets
    assert set(stack.ports.values()) <= {port for _, _, port in sockets}, (stack.ports, sockets)


def weak_key_warnings(stack: Any) -> list[str]:
    """The lines of Airflow's logs of the stack (its components' output, task and DAG processor logs) where
    PyJWT warns that a secret is too short for the algorithm."""
    logs = [*(stack.root / "logs").glob("*.log"), *(stack.home / "logs").rglob("*.log")]
    return [line for path in logs for line in path.read_text(errors="replace").splitlines() if "InsecureKey" in line]


def source_env(stack: Any, tmp_path: Path) -> dict[str, str]:
    """``source .stack/env`` in a shell of a user's own (a PATH without the venv, a NO_PROXY, no proxy), then
    ``strm list batch-exporters``: what it printed, and the shell's PATH and NO_PROXY after."""
    user_bin = tmp_path / "user-bin"
    user_bin.mkdir(exist_ok=True)
    user_path = f"{user_bin}:/usr/bin:/bin"
    script = (
        f"source {stack.root / 'env'}\n"
        "strm list batch-exporters\n"
        'printf "PATH=%s\\nNO_PROXY=%s\\n" "$PATH" "$NO_PROXY"\n'
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={"PATH": user_path, "HOME": str(tmp_path), "NO_PROXY": "corp.example"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    shell = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith(("PATH=", "NO_PROXY=")))
    return {"out": done.stdout, "user_path": user_path, **shell}


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


def get(stack: Any, path: str, accept: str = "application/json") -> httpx.Response:
    """``GET`` of the stack's REST API as a client reads it from ``stack.json`` on any Airflow line: basic auth
    (Airflow 2) or a JWT from ``/auth/token`` (Airflow 3)."""
    info = stack.state()["airflow"]
    login = {"username": info["user"], "password": info["password"]}
    headers = {"Accept": accept}
    if info["auth"] == "jwt":
        reply = httpx.post(f"{info['url']}/auth/token", json=login, timeout=30)
        reply.raise_for_status()
        headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
        auth = None
    else:
        auth = httpx.BasicAuth(login["username"], login["password"])
    return httpx.get(f"{info['url']}{info['api']}/{path}", headers=headers, auth=auth, timeout=30)


def dag_runs(stack: Any, dag_id: str) -> list[dict[str, Any]]:
    reply = get(stack, f"dags/{dag_id}/dagRuns")
    if reply.status_code == 404:  # not parsed yet
        return []
    reply.raise_for_status()
    return reply.json()["dag_runs"]


DEMO_AVRO = {"type": "record", "name": "Click", "fields": [{"name": "url", "type": "string"}]}


def register_schema(stack: Any) -> int:
    """Register :data:`DEMO_AVRO` under ``demo-value`` over the stack registry's REST API, as a producer does."""
    reply = httpx.post(
        f"{stack.registry_url}/subjects/demo-value/versions",
        json={"schema": json.dumps(DEMO_AVRO)},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=10,
    )
    reply.raise_for_status()
    return reply.json()["id"]


def check_bucket(stack: Any, module: ModuleType, at_least: int) -> list[str]:
    """Exported files of the demo exporter: exporter file names below ``events/``, JSON Lines of clickstream events."""
    files = module.data_files(stack)
    assert len(files) >= at_least
    s3 = module.admin_s3(stack)
    for key in files:
        name = parse_key(key)
        assert name and name.prefix == "events" and name.stream == "demo", key
        body = s3.get_object(Bucket=module.BUCKET, Key=key)["Body"].read()
        events = [json.loads(line) for line in body.splitlines()]
        assert events and all(e["strmMeta"]["schemaId"] == "clickstream" for e in events)
    return files


def api(stack: Any, path: str) -> Any:
    reply = get(stack, path)
    reply.raise_for_status()
    return reply.json()


def task_log(stack: Any, path: str) -> str:
    """A task try's log as the UI's log view gets it: Airflow 3's structured messages (as JSON), Airflow 2's text."""
    if stack.state()["airflow"]["api"] == "/api/v1":
        reply = get(stack, path, accept="text/plain")
        reply.raise_for_status()
        return reply.text
    return json.dumps(api(stack, path))


def successful_runs(
    stack: Any, at_least: int, timeout: float = 90, dag_id: str = exporter_dag("s3-demo")
) -> list[dict[str, Any]]:
    """The exporter DAG's successful runs, once there are ``at_least`` (or the timeout passed).

    A file is uploaded before its run is marked successful, so a run whose file is already in the
    bucket may still be finishing.
    """
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in dag_runs(stack, dag_id) if r["state"] == "success"]
        if len(runs) >= at_least or time.monotonic() > deadline:
            return runs
        time.sleep(2)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """The stack's folder; whatever a failed assertion leaves running is stopped afterwards."""
    root = tmp_path / "stack"
    yield root
    subprocess.run([sys.executable, str(SCRIPT), "down", "--root", str(root)], capture_output=True, timeout=300)


#: what each fake process runs: a child of its own, as ``airflow standalone`` has
PARENT_AND_CHILD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "time.sleep(600)\n"
)


def test_make_down_stops_what_up_started_after_the_clock_was_stepped(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """NTP or a resume steps the wall clock between ``up`` and ``down``: ``down`` still finds its processes.

    The kernel then moves the boot time it reports, and with it every start time psutil gives in
    wall-clock seconds; here the boot time moves by an hour, as a stepped clock moves it.
    """
    module = stack_module()
    stack = module.Stack(root)
    command = [sys.executable, "-c", PARENT_AND_CHILD]
    started = [stack.spawn(name, command, dict(os.environ)) for name in module.PROCESSES]
    deadline = time.monotonic() + 30
    while not all(proc.children() for proc in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    family = [member for proc in started for member in (proc, *proc.children(recursive=True))]
    assert len(family) == 2 * len(module.PROCESSES)

    real_boot_time = psutil._pslinux.boot_time
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: real_boot_time() + 3600)
    module.down(stack)

    assert capsys.readouterr().out == f"[stack] stopped: {', '.join(module.PROCESSES)}\n"
    _gone, alive = psutil.wait_procs(family, timeout=5)
    assert alive == []
    assert list((root / "pids").iterdir()) == []


def failed_check_log(stack: Any, dag_id: str, timeout: float = 120) -> str:
    """The task log of the first failed run of a broken exporter's DAG, as the UI's log view gets it."""
    deadline = time.monotonic() + timeout
    while not (failed := [r for r in dag_runs(stack, dag_id) if r["state"] == "failed"]):
        assert time.monotonic() < deadline, f"no failed run of {dag_id}: {dag_runs(stack, dag_id)}"
        time.sleep(2)
    run_id = failed[0]["dag_run_id"]
    return task_log(stack, f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/check_config/logs/1")


def check_broken_files_cost_only_their_own_exporter(stack: Any, module: ModuleType) -> None:
    """On the real DAG processor and scheduler: broken files beside a running exporter, then a fix."""
    before = len(successful_runs(stack, at_least=1))
    files_before = set(module.data_files(stack))
    (stack.exporters / "broken.yaml").write_text("path_prefix: events/\ninterval: 10x\n")
    (stack.exporters / "notyaml.yaml").write_text("stream: [unclosed\n")
    # a copy claiming the running exporter's name, sorted before its file: it must not take over
    (stack.exporters / "copy.yaml").write_text(
        "name: s3-demo\nstream: demo\ndata_connector: s3\npath_prefix: events/copy\ninterval: 30s\n"
    )
    expected = {
        exporter_dag("broken"): [
            "broken.yaml",
            "field 'stream': required field is missing",
            "field 'interval': expected a duration like 30s, 5m or 1h, got '10x'",
            "field 'path_prefix': must not start or end with '/'",
        ],
        exporter_dag("notyaml"): ["notyaml.yaml", "not readable YAML"],
        exporter_dag("copy"): ["copy.yaml", "field 'name': duplicate exporter name 's3-demo'"],
    }
    for dag_id, parts in expected.items():
        log = failed_check_log(stack, dag_id)
        assert all(part in log for part in parts), (dag_id, log[-3000:])
        assert parts[1] in api(stack, f"dags/{dag_id}")["description"]
    assert api(stack, "importErrors")["import_errors"] == []

    # meanwhile the valid exporter keeps its schedule, writing where its own file says
    runs = successful_runs(stack, at_least=before + 2, timeout=150)
    assert len(runs) >= before + 2
    # and its task log reads as the export's story, without the Kafka client's connection chatter
    dag, run = exporter_dag("s3-demo"), runs[-1]["dag_run_id"]
    path = f"dags/{dag}/dagRuns/{run}/taskInstances/export/logs/1"
    story = task_log(stack, path)
    assert "stored events/" in story and "kafka.net" not in story and "kafka.cluster" not in story
    new = set(check_bucket(stack, module, len(files_before) + 1)) - files_before
    assert new and not [key for key in new if key.startswith("events/copy/")]

    # fixing the file, without a restart, turns it into an exporter that runs
    (stack.exporters / "broken.yaml").write_text(
        "name: broken\nstream: demo\ndata_connector: s3\npath_prefix: events/fixed\ninterval: 30s\n"
        "include_existing_events: true\n"
    )
    assert successful_runs(stack, at_least=1, timeout=150, dag_id=exporter_dag("broken"))
    fixed = [key for key in module.data_files(stack) if key.startswith("events/fixed/")]
    assert fixed and all(is_data_file(key) for key in fixed)
    running = len(successful_runs(stack, at_least=1))
    assert len(successful_runs(stack, at_least=running + 1, timeout=90)) > running
    for name in ("broken", "notyaml", "copy"):
        (stack.exporters / f"{name}.yaml").unlink()


@pytest.mark.compat
def test_make_up_exports_every_interval_and_make_down_stops_exactly_what_it_started(root: Path, tmp_path: Path) -> None:
    module = stack_module()
    stack = module.Stack(root)

    first = stack_cli(root, "up", "--ports", "auto", "--interval", "10s", "--wait-files", "2").stdout
    assert f"Airflow UI:   {stack.ui_url}" in first
    # what a client needs, the same way on every Airflow line
    info = stack.state()["airflow"]
    assert info == {
        "version": str(AIRFLOW_VERSION),
        "url": stack.ui_url,
        "user": "admin",
        "password": stack.password,
        "api": "/api/v2" if AIRFLOW_V_3_0_PLUS else "/api/v1",
        "auth": "jwt" if AIRFLOW_V_3_0_PLUS else "basic",
    }
    assert stack.state_file.stat().st_mode & 0o077 == 0
    # it serves on 127.0.0.1, as it says: nothing of it listens on another interface
    check_listeners(stack)
    # .stack/env gives a user's shell the CLI on the stack, and keeps the shell's PATH and NO_PROXY
    shell = source_env(stack, tmp_path)
    assert "s3-demo" in shell["out"]
    assert shell["PATH"].endswith(f":{shell['user_path']}")
    assert shell["NO_PROXY"] == "corp.example,127.0.0.1,localhost"
    assert str(stack.password_file) in first
    password = stack.password
    assert password not in first
    assert all(password not in p.read_text(errors="replace") for p in (root / "logs").glob("*.log"))
    assert set(stack.running()) == {"broker", "s3", "registry", "airflow", "producer"}
    first_files = check_bucket(stack, module, 2)
    # the Schema Registry: in the banner, in stack.json, the Kafka connection's schema_registry_url
    assert f"Registry:     {stack.registry_url}" in first
    assert stack.state()["schema_registry"]["url"] == stack.registry_url
    kafka_conn = get(stack, "connections/strm_kafka_default")
    kafka_conn.raise_for_status()
    assert json.loads(kafka_conn.json()["extra"])["schema_registry_url"] == stack.registry_url
    schema_id = register_schema(stack)

    # the files come from the scheduler's own runs: nobody triggered anything
    runs = successful_runs(stack, at_least=2)
    succeeded = len(runs)
    assert succeeded >= 2
    assert {r["run_type"] for r in dag_runs(stack, exporter_dag("s3-demo"))} == {"scheduled"}
    # the scheduler's tasks keep the exporter's progress in Airflow's Variables
    record = json.loads(api(stack, f"variables/strm.progress.{exporter_group('s3-demo')}")["value"])
    assert record["stream"] == "demo" and record["committed"] and all(o >= 0 for o in record["committed"].values())
    assert record["plan"] is None or record["plan"]["run_id"].startswith("scheduled__"), record
    # each export updates its Asset (Airflow 2: Dataset), which schedules the downstream example DAG
    assert successful_runs(stack, at_least=1, dag_id="example_strm_downstream")
    assert {r["run_type"] for r in dag_runs(stack, "example_strm_downstream")} == {
        "asset_triggered" if AIRFLOW_V_3_0_PLUS else "dataset_triggered"
    }
    check_broken_files_cost_only_their_own_exporter(stack, module)

    processes = family(stack)
    ports = dict(stack.ports)
    stack_cli(root, "down")
    assert alive(processes) == []
    assert not any(module.port_open(port) for port in ports.values())
    assert list((root / "pids").glob("*.pid")) == []
    assert "nothing was running" in stack_cli(root, "down").stdout

    # a .stack/ of an earlier make up has the secrets Airflow generates, 24 bytes: the next up replaces them
    config = stack.home / "airflow.cfg"
    short = re.sub(
        r"(?m)^(jwt_secret|secret_key) = .*$", lambda m: f"{m[1]} = {secrets.token_urlsafe(18)}", config.read_text()
    )
    config.write_text(short)

    # a second ``up`` on the same state works: new S3 (in memory), same Airflow database and broker data
    stack_cli(root, "up", "--ports", "auto", "--wait-files", "1")
    try:
        assert set(stack.running()) == {"broker", "s3", "registry", "airflow", "producer"}
        check_listeners(stack)
        # the registry kept its schemas (.stack/schema-registry.json): the ids in the broker's records resolve
        kept = httpx.get(f"{stack.registry_url}/schemas/ids/{schema_id}", timeout=10)
        assert kept.status_code == 200 and json.loads(kept.json()["schema"]) == DEMO_AVRO
        assert register_schema(stack) == schema_id
        # the scheduler signed each task's token and the API server checked it, both ups: with keys of full length
        assert weak_key_warnings(stack) == []
        assert not set(check_bucket(stack, module, 1)) & set(first_files)
        assert len(successful_runs(stack, at_least=succeeded + 1)) > succeeded
    finally:
        processes = family(stack)
        stack_cli(root, "down")
    assert alive(processes) == []


def test_readme_flow_on_the_stack(root: Path) -> None:
    """The README's block for ``make up``'s stack, as printed; the stack lives in ``root`` on free ports."""
    script = readme_flow("stack")
    assert "source .stack/env" in script
    out = run_flow(
        script.replace(".stack/", f"{root}/"),
        cwd=REPO,
        # a PATH without the venv: after ``source .stack/env``, ``strm`` and ``python`` are the venv's
        env={"STACK_ROOT": str(root), "STACK_PORTS": "auto", "PATH": "/usr/bin:/bin"},
        stderr=True,
    )
    assert "s3-demo" in out  # strm list batch-exporters: make up's exporter
    listed = [line.split("s3://strmprivacy-export-demo/")[1] for line in out.splitlines() if "s3://" in line]
    copies = [key for key in listed if key.startswith("events/copy/") and is_data_file(key)]
    assert copies, out[-3000:]
    # compressed into this hour's folder, which the stack's key may write; another folder is refused at
    # creation, naming what the exporter would write
    hourly = re.compile(r"^events/gz/dt=\d{4}-\d\d-\d\d/hour=\d\d/[^/]+\.jsonl\.gz$")
    assert [key for key in listed if hourly.match(key) and is_data_file(key)], out[-3000:]
    assert "nothing was created" in out and "the exporter writes its files as elsewhere/*.jsonl" in out
    assert "Batch Exporters have been deleted: demo-copy, demo-gz" in out and "stopped: " in out
