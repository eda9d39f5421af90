"""Watching exporters on ``make up``'s stack (real scheduler, DAG processor, API server, LocalExecutor):
``strm monitor`` and ``strm logs`` in both modes, the StatsD metrics and the OpenLineage events.

Three exporters run side by side: the stack's ``s3-demo`` (succeeds), ``bad-creds`` (a data connector
with a wrong secret: its export task fails) and ``paused`` (paused in Airflow). StatsD is a UDP socket
in this test; OpenLineage writes to a file through its file transport.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from strm_provider.naming import parse_key
from tests.exporting import exporter_dag
from tests.test_stack import (  # noqa: F401  (root: a fixture)
    SCRIPT,
    api,
    dag_runs,
    root,
    stack_module,
    successful_runs,
)

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
WRONG_SECRET = "wrong-secret-0123456789abcdefghijklmnopqrstu"


class StatsD:
    """A StatsD server as far as the test needs one: every datagram received on a UDP port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines += data.decode(errors="replace").splitlines()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def values(self, name: str) -> list[tuple[float, str]]:
        """(value, type) of every sample of ``name`` (``airflow.`` prefix included)."""
        out = []
        for line in list(self.lines):
            metric, _, rest = line.partition(":")
            if metric == name:
                value, kind = rest.split("|")[:2]
                out.append((float(value), kind))
        return out


def strm(env: dict[str, str], *args: str, code: int = 0) -> str:
    done = subprocess.run([str(BIN / "strm"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == code, f"strm {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f}s"
        time.sleep(2)
    return result


def airflow(env: dict[str, str], *args: str) -> bool:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, timeout=120).returncode == 0


def known(stack: Any, dag_id: str) -> bool:
    """Whether the DAG processor has read the DAG."""
    try:
        return bool(api(stack, f"dags/{dag_id}"))
    except httpx.HTTPStatusError:
        return False


def test_monitor_logs_metrics_and_lineage_on_the_live_stack(root: Path, tmp_path: Path) -> None:  # noqa: F811
    module = stack_module()
    stack = module.Stack(root)
    statsd = StatsD()
    lineage = tmp_path / "openlineage.jsonl"
    settings = {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(lineage), "append": True}),
    }
    up = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "up",
            "--ports",
            "auto",
            "--interval",
            "10s",
            "--wait-files",
            "1",
            "--root",
            str(root),
        ],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        local = stack.full_env()
        # an exporter whose data connector holds a wrong secret, with no retries
        key = json.loads((root / "s3.json").read_text())
        key["AccessKey"]["SecretAccessKey"] = WRONG_SECRET
        bad_key = tmp_path / "bad.json"
        bad_key.write_text(json.dumps(key))
        strm(local, "create", "data-connector", "s3", "bad", module.BUCKET, f"--credentials-file={bad_key}",
             f"--endpoint-url={stack.s3_url}", "--no-validate")  # fmt: skip
        (stack.exporters / "bad-creds.yaml").write_text(
            "name: bad-creds\nstream: demo\ndata_connector: bad\npath_prefix: events\ninterval: 1h\nretries: 0\n"
        )
        (stack.exporters / "paused.yaml").write_text(
            "name: paused\nstream: demo\ndata_connector: s3\npath_prefix: events/paused\ninterval: 1h\n"
        )
        wait_for("the paused exporter's DAG", lambda: known(stack, exporter_dag("paused")), 120)
        assert airflow(local, "dags", "pause", exporter_dag("paused"))
        assert api(stack, f"dags/{exporter_dag('paused')}")["is_paused"]
        wait_for(
            "a failed run of bad-creds",
            lambda: [r for r in dag_runs(stack, exporter_dag("bad-creds")) if r["state"] == "failed"],
            150,
        )
        assert successful_runs(stack, at_least=2, timeout=120)

        password = json.loads(stack.password_file.read_text())["admin"]
        remote = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STRM_"))},
            "STRM_AIRFLOW_URL": stack.ui_url,
            "STRM_AIRFLOW_USERNAME": "admin",
            "STRM_AIRFLOW_PASSWORD": password,
            "STRM_EXPORTERS_DIR": str(stack.exporters),
            # the local database must not be what answers
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'absent' / 'no.db'}",
            "AIRFLOW_HOME": str(tmp_path / "client"),
        }
        for mode, env in (("local", local), ("remote", remote)):
            report = json.loads(strm(env, "monitor", "batch-exporter", "-o", "json"))["batchExporters"]
            rows = {row["ref"]["name"]: row for row in report}
            assert set(rows) == {"s3-demo", "bad-creds", "paused"}, mode
            demo = rows["s3-demo"]
            assert demo["state"] in ("HEALTHY", "RUNNING"), (mode, demo)
            # while the next run goes, the row keeps the last finished one
            assert demo["lastRun"]["state"] == "success" and demo["lastRun"]["ended"], (mode, demo)
            assert demo["lastRun"]["storedBytes"] is not None, (mode, demo)
            assert ("currentRun" in demo) == (demo["state"] == "RUNNING"), (mode, demo)
            assert set(demo["lag"]["partitions"]) == {str(p) for p in range(module.PARTITIONS)}, (mode, demo)
            assert demo["lag"]["total"] == sum(demo["lag"]["partitions"].values())
            bad = rows["bad-creds"]
            assert bad["state"] == "UNHEALTHY" and bad["failedTask"] == "export", (mode, bad)
            assert "'bad'" in bad["error"] and "Signature" in bad["error"], (mode, bad)
            assert bad["failedAt"] and bad["failedAt"] <= bad["lastRun"]["ended"], (mode, bad)
            assert rows["paused"]["state"] == "PAUSED", (mode, rows["paused"])
            one = json.loads(strm(env, "monitor", "batch-exporter", "bad-creds", "-o", "json"))
            assert one["ref"] == {"name": "bad-creds"} and one["state"] == "UNHEALTHY"
            table = strm(env, "monitor", "batch-exporter")
            assert "UNHEALTHY" in table and "PAUSED" in table and "export (failed " in table, table
            assert WRONG_SECRET not in json.dumps(report) + table
            if mode == "local":  # --watch refreshes until interrupted
                watching = subprocess.Popen(
                    [str(BIN / "strm"), "monitor", "batch-exporter", "s3-demo", "--watch", "--every", "1"],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(15)
                watching.terminate()
                refreshed = watching.communicate(timeout=30)[0]
                assert refreshed.count("NAME ") >= 2 and "s3-demo" in refreshed, refreshed

            demo_logs = strm(env, "logs", "batch-exporter", "s3-demo", "--follow")  # to the end of the run
            # one partition set: one task plans and exports, its log tells both
            assert "=== export, try 1" in demo_logs and "plan offsets" in demo_logs, (mode, demo_logs[-2000:])
            assert "events, " in demo_logs and "stored " in demo_logs, (mode, demo_logs[-2000:])
            assert "offsets committed" in demo_logs, (mode, demo_logs[-2000:])
            assert demo_logs.rstrip().endswith(": success"), (mode, demo_logs[-2000:])
            # Airflow's log plumbing stays out: group markers, where the log was read from
            assert "::group::" not in demo_logs and "::endgroup::" not in demo_logs, (mode, demo_logs[-2000:])
            assert "/log/dag_id=" not in demo_logs and "Log message source details" not in demo_logs, mode
            bad_logs = strm(env, "logs", "batch-exporter", "bad-creds", "--follow")
            assert "=== export, try 1" in bad_logs and "Signature" in bad_logs, (mode, bad_logs[-2000:])
            assert bad_logs.rstrip().endswith(": failed") and "Could not read" not in bad_logs, (mode, bad_logs[-2000:])
            assert WRONG_SECRET not in bad_logs
            run_id = rows["s3-demo"]["lastRun"]["runId"]
            assert f"run {run_id}:" in strm(env, "logs", "batch-exporter", "s3-demo", "--run-id", run_id)
            assert "has no run 'nope'" in strm(env, "logs", "batch-exporter", "s3-demo", "--run-id", "nope", code=1)

        # metrics: stop the demo exporter, let its last run end, and compare the counters with the bucket
        assert airflow(local, "dags", "pause", exporter_dag("s3-demo"))
        # a run the scheduler queued just before the pause stays queued (a paused DAG starts none): only a
        # running one can still export
        wait_for(
            "the demo exporter's runs to end",
            lambda: not [r for r in dag_runs(stack, exporter_dag("s3-demo")) if r["state"] == "running"],
            120,
        )
        time.sleep(2)
        objects = module.admin_s3(stack)
        lines = 0
        for key in module.data_files(stack):
            if parse_key(key).prefix == "events":
                lines += objects.get_object(Bucket=module.BUCKET, Key=key)["Body"].read().count(b"\n")
        name = "airflow.strm.exporter.s3-demo"
        events = statsd.values(f"{name}.events")
        assert events and {kind for _, kind in events} == {"c"}, statsd.lines[-50:]
        assert sum(v for v, _ in events) == lines  # every event exported once, counted once
        for metric, kind in (("bytes", "c"), ("files", "c"), ("dead_letters", "c"), ("seconds", "ms"), ("lag", "g")):
            assert {k for _, k in statsd.values(f"{name}.{metric}")} == {kind}, (metric, statsd.lines[-50:])
        assert sum(v for v, _ in statsd.values(f"{name}.files")) >= 2
        assert statsd.values("airflow.strm.exporter.bad-creds.events") == []  # it never exported

        # lineage: topic in, bucket and prefix out, as OpenLineage names them
        events_ol = [json.loads(line) for line in lineage.read_text().splitlines() if line.strip()]
        complete = [
            e
            for e in events_ol
            if e.get("eventType") == "COMPLETE" and e["job"]["name"] == exporter_dag("s3-demo.export")
        ]
        assert complete, [e["job"]["name"] for e in events_ol][:20]
        kafka_port = stack.ports["kafka"]
        assert complete[-1]["inputs"][0]["namespace"] == f"kafka://127.0.0.1:{kafka_port}"
        assert complete[-1]["inputs"][0]["name"] == "demo"
        assert complete[-1]["outputs"][0]["namespace"] == f"s3://{module.BUCKET}"
        assert complete[-1]["outputs"][0]["name"] == "events"
        assert WRONG_SECRET not in lineage.read_text()
    finally:
        statsd.close()
        subprocess.run([sys.executable, str(SCRIPT), "down", "--root", str(root)], capture_output=True)
