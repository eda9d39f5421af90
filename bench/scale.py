"""Many exporters on one Airflow: ``make bench-scale`` (``python bench/scale.py``).

On a stack like ``make up``'s (``scripts/stack.py up --no-demo-exporter`` in a state folder of its own, free
ports), for each N of ``--exporters``: N topics with events flowing into every one (one producer process,
round-robin), N exporter files in the stack's exporters folder, and then, with the DAGs parsed:

- a baseline: every exporter's DAG paused, the Airflow process tree's CPU over ``--baseline`` seconds;
- the measured window: the DAGs unpaused for ``--intervals`` intervals, then paused again, each between two
  of its runs, so no run is left unfinished; the tree's CPU over the window minus the baseline's rate over
  the same time, divided by the runs completed in it, is ``per_run_cpu_s``;
- each run due in the window: its start delay, the DagRun's ``start_date`` minus when it was due
  (``run_after``); p50 and p95;
- the runs failed, the exporters' lag at the end (end offsets minus each group's committed offsets, from
  kafka-python's ``list_group_offsets``) and the peak RSS of the Airflow processes (summed over the tree,
  sampled every second).

CPU accounting: the sum over every live process of the stack's Airflow tree (``airflow standalone`` and its
descendants; on the Celery stack also the workers, PostgreSQL and Redis) of user + system + children_user +
children_system (psutil ``cpu_times()``): a task process that exited was reaped by its parent, whose
children_* fields then hold its CPU, so every task process that ever ran is counted.

One stack serves every N: each level adds exporters to the previous ones (``scale-0001`` … ``scale-0200``),
so the 200-exporter level runs the 50 of the level before plus 150 more; restarting Airflow for each N would
cost minutes and measure nothing more. Its own baseline is taken at each N, so the DAG processor's cost of
parsing N exporters is the baseline's, not the runs'.

Then one exporter over many topics (``stream_pattern``): ``--pattern-topics`` topics with events flowing,
the N exporters' files removed, measured like a level; then the producer stops, the exporter catches up, and
every event produced into those topics must be in the bucket exactly once.

Writes ``bench/scale.json`` and ``bench/scale.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: the processes of a stack whose CPU and memory are Airflow's (the broker, S3 and the registry are not)
AIRFLOW_PROCESSES = ("airflow", "worker-1", "worker-2", "postgres", "redis")
SCALE_PREFIX = "scale-"
PATTERN_NAME = "pattern-exporter"
PATTERN_TOPIC_PREFIX = "many-"
PATH_PREFIX = "events/scale"  # the stack's exporter key may write under ``events/`` only
CONNECTOR = "s3"
#: tries of a REST API request that fails with a server error
API_ATTEMPTS = 6
#: seconds of each slice of the baseline
BASELINE_SLICE = 10.0
STATES_ACTIVE = ["queued", "running"]


def say(msg: str) -> None:
    print(f"[scale {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def load_stack_module() -> Any:
    """``scripts/stack.py`` (a script, not a package): its :class:`Stack` reads the stack's state and PIDs."""
    spec = importlib.util.spec_from_file_location("strm_stack", REPO / "scripts" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["strm_stack"] = module
    spec.loader.exec_module(module)
    return module


# ----- the Airflow process tree -------------------------------------------------------------------
def airflow_tree(stack: Any) -> list[psutil.Process]:
    """The live processes of :data:`AIRFLOW_PROCESSES` and all their descendants."""
    members: list[psutil.Process] = []
    for name in AIRFLOW_PROCESSES:
        root = stack.process(name)
        if root is None:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            members += [root, *root.children(recursive=True)]
    return members


def tree_cpu(stack: Any) -> float:
    """CPU seconds of the Airflow tree so far, reaped children included (see the module's docstring)."""
    total = 0.0
    for proc in airflow_tree(stack):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def executor_cpu(stack: Any) -> float:
    """CPU seconds so far of the processes that run tasks, with their descendants: the LocalExecutor's workers
    (the scheduler's children), or the Celery workers. They idle between tasks, so this part of a run's cost
    needs no baseline (it leaves out what a run costs the scheduler and the API server)."""
    roots = [proc for name in AIRFLOW_PROCESSES if name.startswith("worker") and (proc := stack.process(name))]
    for proc in airflow_tree(stack):
        with contextlib.suppress(psutil.Error):
            if "LocalExecutor" in " ".join(proc.cmdline()):
                roots.append(proc)
    total = 0.0
    for root in roots:
        with contextlib.suppress(psutil.Error):
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy() -> float:
    """CPU seconds every core of the machine spent on anything but idling, so far."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def tree_rss(stack: Any) -> int:
    total = 0
    for proc in airflow_tree(stack):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


class PeakRss:
    """Samples the tree's RSS sum every second in a thread; ``peak`` is the highest seen."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.stack))
            self._stop.wait(1.0)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----- Airflow's REST API -------------------------------------------------------------------------
class Api:
    """The stack's REST API (Airflow 3: ``/api/v2`` with a JWT from ``/auth/token``)."""

    def __init__(self, info: dict[str, str]) -> None:
        if info["auth"] != "jwt":
            raise SystemExit("bench/scale.py needs Airflow 3 (its REST API lists runs across DAGs)")
        reply = httpx.post(
            f"{info['url']}/auth/token", json={"username": info["user"], "password": info["password"]}, timeout=30
        )
        reply.raise_for_status()
        self.client = httpx.Client(
            base_url=f"{info['url']}{info['api']}",
            headers={"Authorization": f"Bearer {reply.json()['access_token']}"},
            timeout=60,
        )

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request's JSON reply; a server error is retried a few times: the stack's metadata database is
        SQLite, and a write of the API server (its audit log) gives up when the busy scheduler holds the lock
        too long ("database is locked")."""
        for attempt in range(API_ATTEMPTS):
            try:
                return self.client.request(method, path, **kwargs).raise_for_status().json()
            except (httpx.HTTPStatusError, httpx.TransportError) as err:
                server_error = not isinstance(err, httpx.HTTPStatusError) or err.response.status_code >= 500
                if not server_error or attempt == API_ATTEMPTS - 1:
                    raise
                time.sleep(2 * (attempt + 1))
        raise AssertionError("unreachable")

    def dags(self, prefix: str, paused: bool | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"dag_id_prefix_pattern": prefix, "limit": 100, "exclude_stale": True}
        if paused is not None:
            params["paused"] = paused
        while True:
            page = self.send("GET", "/dags", params={**params, "offset": len(out)})
            out += page["dags"]
            if not page["dags"] or len(out) >= page["total_entries"]:
                return out

    def set_paused(self, dag_ids: list[str], paused: bool) -> None:
        """Pause or unpause ``dag_ids`` (one request per DAG: the bulk PATCH takes patterns, not lists)."""
        for dag_id in dag_ids:
            self.send("PATCH", f"/dags/{dag_id}", params={"update_mask": "is_paused"}, json={"is_paused": paused})

    def runs(self, dag_ids: list[str], **filters: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for first in range(0, len(dag_ids), 100):
            body = {"dag_ids": dag_ids[first : first + 100], "page_limit": 100, "order_by": "id", **filters}
            offset = 0
            while True:
                page = self.send("POST", "/dags/~/dagRuns/list", json={**body, "page_offset": offset})
                out += page["dag_runs"]
                offset += len(page["dag_runs"])
                if not page["dag_runs"] or offset >= page["total_entries"]:
                    break
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def percentile(values: list[float], q: int) -> float | None:
    """The ``q``-th percentile (inclusive method: within the sample's range), None of no values."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ----- Kafka --------------------------------------------------------------------------------------
def create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
        for first in range(0, len(new), 50):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new[first : first + 50])
        deadline = time.monotonic() + 60
        while not set(topics) <= set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise SystemExit("[scale] the broker did not list the new topics within 60 s")
            time.sleep(0.5)
    finally:
        admin.close()


def lag(bootstrap: str, groups: dict[str, list[str]], partitions: int) -> int:
    """Events not yet committed by each group (``{group: its topics}``): end offsets minus committed ones."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        total = 0
        held = admin.list_group_offsets(dict.fromkeys(groups))  # every group in one request (Kafka 3.0+)
        for group, topics in groups.items():
            committed = {tp: meta.offset for tp, meta in (held.get(group) or {}).items()}
            tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
            ends = consumer.end_offsets(tps)
            total += sum(max(0, ends[tp] - max(committed.get(tp, 0), 0)) for tp in tps)
        return total
    finally:
        consumer.close()
        admin.close()


def produce(bootstrap: str, topics_file: Path, counts_file: Path, rate: float) -> None:
    """The benchmark's producer: ``rate`` events a second round-robin over the topics listed in ``topics_file``
    (re-read every few seconds); each event ``{"topic", "seq", "ts"}``, ``seq`` counting from 0 per topic.
    On SIGTERM it flushes and writes the acknowledged events per topic to ``counts_file``."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    acked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    seq: Counter[str] = Counter()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    topics: list[str] = []
    read_at = 0.0
    index = 0
    next_at = time.monotonic()
    while not stop.is_set():
        if time.monotonic() - read_at > 3:
            with contextlib.suppress(OSError):
                topics = topics_file.read_text().split()
            read_at = time.monotonic()
        if topics:
            topic = topics[index % len(topics)]
            index += 1
            value = {"topic": topic, "seq": seq[topic], "ts": datetime.now(UTC).isoformat()}
            seq[topic] += 1
            future = producer.send(topic, json.dumps(value).encode())
            future.add_callback(lambda _meta, t=topic: acked.update([t]))
            future.add_errback(lambda _err, t=topic: failed.update([t]))
        next_at += 1 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))
    producer.flush(60)
    producer.close(30)
    counts_file.write_text(json.dumps({"acked": acked, "failed": failed, "sent": seq}))


# ----- exporters ----------------------------------------------------------------------------------
def write_exporter_file(exporters: Path, fields: dict[str, Any]) -> str:
    """Validate ``fields`` as an exporter file and write it as ``strm create batch-exporter`` does
    (:func:`strm_provider.config.write_exporter`: ``<name>.yaml``, atomically). Returns the DAG id."""
    os.environ["STRM_EXPORTERS_DIR"] = str(exporters)
    from strm_provider.config import ExporterConfig, write_exporter

    cfg = ExporterConfig.model_validate(fields)
    write_exporter(cfg)
    return cfg.dag_id


def exporter_fields(name: str, interval: int, **more: Any) -> dict[str, Any]:
    # a fresh group of a fresh topic: from its first event (nothing to pin), so every event is exported
    return {
        "name": name,
        "data_connector": CONNECTOR,
        "path_prefix": f"{PATH_PREFIX}/{name}",
        "interval": f"{interval}s",
        "include_existing_events": True,
        **more,
    }


def pattern_supported() -> bool:
    from strm_provider.config import ExporterConfig

    return "stream_pattern" in ExporterConfig.model_fields


# ----- one measurement ----------------------------------------------------------------------------
class StackFailed(RuntimeError):
    """Airflow stopped reporting healthy (a component exited): the level cannot finish."""


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Any, stack_module: Any) -> None:
        self.args = args
        self.stack = stack
        self.stack_module = stack_module
        self.bootstrap = f"127.0.0.1:{stack.ports['kafka']}"
        self.api = Api(stack.state()["airflow"])
        self.interval: int = args.interval
        self.producer: subprocess.Popen[bytes] | None = None

    def wait_parsed(self, dag_ids: list[str], prefix: str, timeout: float = 600) -> float:
        """Wait until the DAG processor has made every one of ``dag_ids``; the seconds it took."""
        started = time.monotonic()
        wanted = set(dag_ids)
        while True:
            seen = {d["dag_id"] for d in self.api.dags(prefix)}
            if wanted <= seen:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise SystemExit(f"[scale] {len(wanted - seen)} DAG(s) not parsed after {timeout:.0f}s")
            time.sleep(3)

    def check_health(self) -> None:
        """Fail the level when Airflow's health endpoint reports a component unhealthy (e.g. a scheduler that
        exited on "database is locked": ``airflow standalone`` does not restart it)."""
        if not self.stack_module.airflow_health(self.stack):
            time.sleep(15)  # a slow heartbeat recovers; a dead component does not
            if not self.stack_module.airflow_health(self.stack):
                health = httpx.get(f"{self.stack.ui_url}{self.stack_module.HEALTH}", timeout=10).json()
                raise StackFailed(f"Airflow unhealthy: {json.dumps(health)}")

    def sleep_watching(self, seconds: float) -> None:
        """Sleep, checking Airflow's health every half minute."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(30.0, left))
            self.check_health()

    def active(self, dag_ids: list[str]) -> set[str]:
        return {run["dag_id"] for run in self.api.runs(dag_ids, states=STATES_ACTIVE)}

    def pause_between_runs(self, dag_ids: list[str]) -> None:
        """Pause each of ``dag_ids`` while it has no queued or running run, and return when all are paused and
        none has one. A paused DAG's running run stays unfinished (the scheduler examines only the runs of
        unpaused DAGs), so a DAG that got a run just before its pause is unpaused until that run is done."""
        deadline = time.monotonic() + 10 * self.interval + 600
        pending, paused = set(dag_ids), set[str]()
        while time.monotonic() < deadline:
            active = self.active(dag_ids)
            stuck = paused & active
            self.api.set_paused(sorted(stuck), False)
            paused -= stuck
            pending |= stuck
            ready = pending - active
            self.api.set_paused(sorted(ready), True)
            pending -= ready
            paused |= ready
            if not pending:
                time.sleep(2)
                if not self.active(dag_ids):
                    return
            else:
                time.sleep(2)
            self.check_health()
        raise SystemExit(f"[scale] {len(pending)} DAG(s) still running after {10 * self.interval + 600:.0f}s")

    def measure(self, dag_ids: list[str], groups: dict[str, list[str]]) -> dict[str, Any]:
        """Baseline (paused), then ``--intervals`` intervals unpaused; see the module's docstring."""
        args = self.args
        self.pause_between_runs(dag_ids)
        time.sleep(3)
        with PeakRss(self.stack) as idle_rss:
            b0, c0 = time.monotonic(), tree_cpu(self.stack)
            # in slices, whose spread tells how steady the baseline is (the DAG processor and the scheduler work
            # in bursts), and so how far per_run_cpu_s may be off
            marks = [(b0, c0)]
            while (left := b0 + args.baseline - time.monotonic()) > 0:
                time.sleep(min(BASELINE_SLICE, left))
                marks.append((time.monotonic(), tree_cpu(self.stack)))
            b1, c1 = marks[-1]
        baseline_rate = (c1 - c0) / (b1 - b0)
        rates = [(c - pc) / (t - pt) for (pt, pc), (t, c) in itertools.pairwise(marks) if t - pt > 1]
        say(f"baseline: {baseline_rate:.3f} CPU s/s with the {len(dag_ids)} DAG(s) paused")
        wall0 = datetime.now(UTC)
        t0, cpu0, busy0, tasks0 = time.monotonic(), tree_cpu(self.stack), machine_busy(), executor_cpu(self.stack)
        with PeakRss(self.stack) as rss:
            self.api.set_paused(dag_ids, False)
            self.sleep_watching(t0 + args.intervals * self.interval - time.monotonic())
            wall1 = datetime.now(UTC)
            self.pause_between_runs(dag_ids)
            t2, cpu2, busy2 = time.monotonic(), tree_cpu(self.stack), machine_busy()
            tasks2 = executor_cpu(self.stack)
        window = t2 - t0
        active_cpu = cpu2 - cpu0
        # every run since unpausing (none was left unfinished before, and all ended by t2); the first of each DAG
        # may have been due while it was paused, so only the runs due in the window give start delays
        ran = self.api.runs(dag_ids, start_date_gte=wall0.isoformat())
        completed = [r for r in ran if r["state"] in ("success", "failed")]
        failed = [r for r in completed if r["state"] == "failed"]
        delays = sorted(
            (start - due).total_seconds()
            for r in ran
            if (due := when(r["run_after"])) and (start := when(r["start_date"])) and wall0 <= due <= wall1
        )
        per_run = (active_cpu - baseline_rate * window) / len(completed) if completed else None
        # the standard error of the baseline's rate, carried over the window and shared among the runs
        spread = (
            statistics.stdev(rates) / len(rates) ** 0.5 * window / len(completed)
            if completed and len(rates) > 1
            else None
        )
        return {
            "exporters": len(dag_ids),
            "window_s": round(window, 1),
            "baseline_s": round(b1 - b0, 1),
            "baseline_cpu_per_s": round(baseline_rate, 4),
            "active_cpu_s": round(active_cpu, 1),
            "cpu_cores_used": round(active_cpu / window, 2),
            # the whole machine's busy cores over the window beside Airflow's: what else ran (the broker, S3,
            # the producer, anything else on the machine) and may have delayed the runs
            "machine_cores_busy": round((busy2 - busy0) / window, 2),
            "runs_completed": len(completed),
            "runs_expected": len(dag_ids) * args.intervals,
            "runs_failed": len(failed),
            "failed_runs": [f"{r['dag_id']}/{r['dag_run_id']}" for r in failed][:20],
            "per_run_cpu_s": round(per_run, 3) if per_run is not None else None,
            "per_run_cpu_s_error": round(spread, 3) if spread is not None else None,
            "per_run_task_cpu_s": round((tasks2 - tasks0) / len(completed), 3) if completed else None,
            "start_delay_s": {
                "runs": len(delays),
                "p50": _round(percentile(delays, 50)),
                "p95": _round(percentile(delays, 95)),
                "max": round(delays[-1], 2) if delays else None,
            },
            "lag_end_events": lag(self.bootstrap, groups, self.args.partitions),
            "peak_rss_mib": round(rss.peak / 2**20),
            "paused_peak_rss_mib": round(idle_rss.peak / 2**20),
        }

    # ----- the cases ------------------------------------------------------------------------------
    def level(self, n: int) -> dict[str, Any]:
        args = self.args
        names = [f"{SCALE_PREFIX}{i:04d}" for i in range(1, n + 1)]
        create_topics(self.bootstrap, names, args.partitions)
        self.set_topics(names)
        dag_ids = [
            write_exporter_file(self.stack.exporters, exporter_fields(name, self.interval, stream=name))
            for name in names
        ]
        parsed = self.wait_parsed(dag_ids, f"strm_export_{SCALE_PREFIX}")
        say(f"N={n}: {n} exporter DAG(s) parsed within {parsed:.0f}s; measuring")
        result = self.measure(dag_ids, {f"strm-exporter-{name}": [name] for name in names})
        result["parse_wait_s"] = round(parsed, 1)
        return result

    def pattern_case(self, level_names: list[str]) -> dict[str, Any]:
        args = self.args
        count = args.pattern_topics
        if not pattern_supported():
            return {"topics": count, "status": "not run: field missing (stream_pattern)"}
        topics = [f"{PATTERN_TOPIC_PREFIX}{i:03d}" for i in range(count)]
        create_topics(self.bootstrap, topics, args.partitions)
        self.set_topics(topics)
        for name in level_names:  # this case measures the one exporter alone
            (self.stack.exporters / f"{name}.yaml").unlink(missing_ok=True)
        regex = f"{PATTERN_TOPIC_PREFIX}[0-9]{{3}}"
        try:
            dag_id = write_exporter_file(
                self.stack.exporters, exporter_fields(PATTERN_NAME, self.interval, stream_pattern=regex)
            )
        except ValueError as err:
            return {"topics": count, "status": f"not run: the exporter file was refused: {err}"}
        parsed = self.wait_parsed([dag_id], f"strm_export_{PATTERN_NAME}")
        say(f"one exporter over {count} topics ({regex!r}): parsed within {parsed:.0f}s; measuring")
        group = {f"strm-exporter-{PATTERN_NAME}": topics}
        result = self.measure([dag_id], group)
        result |= {"topics": count, "stream_pattern": regex, "interval_s": self.interval, "status": "run"}
        # exactly once: stop producing, let the exporter catch up, then compare the bucket with what was acked
        counts = self.stop_producer()
        self.api.set_paused([dag_id], False)
        deadline = time.monotonic() + 4 * self.interval + 300
        while (left := lag(self.bootstrap, group, self.args.partitions)) and time.monotonic() < deadline:
            time.sleep(5)
        self.pause_between_runs([dag_id])
        result["exactly_once"] = self.check_bucket(PATTERN_NAME, topics, counts, left)
        return result

    def check_bucket(self, name: str, topics: list[str], counts: dict[str, Any], lag_left: int) -> dict[str, Any]:
        s3 = self.stack_module.admin_s3(self.stack)
        seen: Counter[tuple[str, int]] = Counter()
        prefix = f"{PATH_PREFIX}/{name}/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.stack_module.BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                if not self.stack_module.is_data_file(item["Key"]):
                    continue
                body = s3.get_object(Bucket=self.stack_module.BUCKET, Key=item["Key"])["Body"].read()
                for line in body.decode().splitlines():
                    event = json.loads(line)
                    seen[(event["topic"], event["seq"])] += 1
        expected = {(t, s) for t in topics for s in range(counts["acked"].get(t, 0))}
        duplicates = sum(c - 1 for c in seen.values() if c > 1)
        missing = len(expected - set(seen))
        return {
            "events_produced": len(expected),
            "events_in_bucket": sum(seen.values()),
            "missing": missing,
            "duplicates": duplicates,
            "unexpected": len(set(seen) - expected),
            "lag_left": lag_left,
            "produce_failures": sum(counts["failed"].get(t, 0) for t in topics),
            "ok": missing == 0 and duplicates == 0 and not (set(seen) - expected),
        }

    # ----- the producer ---------------------------------------------------------------------------
    def set_topics(self, topics: list[str]) -> None:
        tmp = self.topics_file.with_suffix(".tmp")
        tmp.write_text("\n".join(topics) + "\n")
        tmp.replace(self.topics_file)

    def start_producer(self) -> None:
        self.topics_file = self.stack.root / "scale-topics.txt"
        self.counts_file = self.stack.root / "scale-produced.json"
        self.counts_file.unlink(missing_ok=True)
        self.topics_file.write_text("")
        cmd = [PYTHON, str(Path(__file__).resolve()), "produce", "--bootstrap", self.bootstrap]
        cmd += ["--topics-file", str(self.topics_file), "--counts-file", str(self.counts_file)]
        cmd += ["--rate", f"{self.args.rate:g}"]
        log = (self.stack.logs / "scale-producer.log").open("ab")
        self.producer = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)}
        )

    def stop_producer(self) -> dict[str, Any]:
        assert self.producer is not None
        if self.producer.poll() is None:
            self.producer.send_signal(signal.SIGTERM)
            self.producer.wait(120)
        if not self.counts_file.exists():
            raise SystemExit("[scale] the producer wrote no counts; see scale-producer.log in the stack's logs")
        return json.loads(self.counts_file.read_text())


# ----- report -------------------------------------------------------------------------------------
def table(results: dict[str, Any]) -> str:
    head = (
        f"{'case':>22} {'runs':>6} {'failed':>6} {'CPU s/run':>13} {'tasks':>6} {'base CPU/s':>10} {'delay p50':>9} "
        f"{'p95':>6} {'max':>6} {'lag':>6} {'peak RSS':>9}"
    )
    lines = [head, "-" * len(head)]
    rows = [(f"{r['exporters']} exporter(s)", r) for r in measured(results)]
    pattern = results.get("pattern")
    if pattern and pattern.get("status") == "run":
        rows.append((f"1 over {pattern['topics']} topics", pattern))
    for label, r in rows:
        d = r["start_delay_s"]
        lines.append(
            f"{label:>22} {r['runs_completed']:>6} {r['runs_failed']:>6} {_cpu(r):>13} "
            f"{_fmt(r.get('per_run_task_cpu_s'), 2):>6} "
            f"{r['baseline_cpu_per_s']:>10.3f} {_fmt(d['p50'], 1):>9} {_fmt(d['p95'], 1):>6} {_fmt(d['max'], 1):>6} "
            f"{r['lag_end_events']:>6} {r['peak_rss_mib']:>6} MiB"
        )
    lines += [f"{r['exporters']} exporter(s): not measured: {r['error']}" for r in results["levels"] if "error" in r]
    if pattern and pattern.get("status") != "run":
        lines.append(f"one exporter over {pattern['topics']} topics: {pattern['status']}")
    elif pattern and "exactly_once" in pattern:
        e = pattern["exactly_once"]
        lines.append(
            f"one exporter over {pattern['topics']} topics: {e['events_in_bucket']} of {e['events_produced']} events "
            f"in the bucket, {e['missing']} missing, {e['duplicates']} duplicated: {'ok' if e['ok'] else 'FAILED'}"
        )
    return "\n".join(lines)


def _cpu(level: dict[str, Any]) -> str:
    error = level.get("per_run_cpu_s_error")
    return _fmt(level["per_run_cpu_s"], 2) + (f" ±{error:.2f}" if error is not None else "")


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = measured(results)
    ns = [r["exporters"] for r in levels]
    fig, (cpu_ax, delay_ax) = plt.subplots(1, 2, figsize=(10, 4))
    cpu_ax.errorbar(
        ns,
        [r["per_run_cpu_s"] for r in levels],
        yerr=[r.get("per_run_cpu_s_error") or 0 for r in levels],
        fmt="o-",
        capsize=3,
        label="per run (active - paused baseline)",
    )
    cpu_ax.axhline(0.6, color="grey", linestyle="--", label="target 0.6 s")
    cpu_ax.set(xlabel="exporters", ylabel="CPU seconds per run", title="CPU per run", ylim=(0, None))
    for ax in (cpu_ax, delay_ax):
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
    cpu_ax.legend(fontsize=8)
    delay_ax.plot(ns, [r["start_delay_s"]["p95"] for r in levels], "o-", label="p95")
    delay_ax.plot(ns, [r["start_delay_s"]["p50"] for r in levels], "s--", label="p50")
    delay_ax.axhline(15, color="grey", linestyle="--", label="target p95 15 s")
    delay_ax.set(xlabel="exporters", ylabel="seconds", title="start delay (start - due)", ylim=(0, None))
    delay_ax.legend(fontsize=8)
    fig.suptitle(
        f"{results['executor']}, every {results['interval_s']} s, {results['intervals']} intervals, "
        f"{results['cpus']} cores",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----- the stack ----------------------------------------------------------------------------------
def stack_cmd(root: Path, *args: str) -> list[str]:
    return [PYTHON, str(REPO / "scripts" / "stack.py"), *args, "--root", str(root)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    from strm_provider.config import parse_interval

    stack_module = load_stack_module()
    root = args.root.resolve()
    stack = stack_module.Stack(root)
    if stack.running():
        raise SystemExit(f"[scale] a stack is running in {root}: `scripts/stack.py down --root {root}` first")
    shutil.rmtree(root, ignore_errors=True)  # fresh topics, groups, runs and exporters for every benchmark
    up = stack_cmd(root, "up", "--ports", "auto", "--no-demo-exporter")
    if args.workers:
        up += ["--workers", str(args.workers)]
    elif args.database != "sqlite":
        up += ["--database", args.database]
    say(f"$ {' '.join(up)}")
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "interval_s": parse_interval(args.interval),
        "intervals": args.intervals,
        "baseline_s": args.baseline,
        "events_per_s": args.rate,
        "partitions_per_topic": args.partitions,
        "cpus": os.cpu_count(),
        "executor": f"CeleryExecutor, {args.workers} workers" if args.workers else f"LocalExecutor, {args.database}",
        "cpu_method": (
            "sum over every live process of the Airflow tree of user+system+children_user+children_system "
            "(psutil cpu_times); per_run_cpu_s = (CPU while the exporters run - the paused baseline's rate "
            "over the same time) / runs completed"
        ),
        "start_delay": "DagRun start_date minus run_after, over the runs due in the window",
        "levels": [],
    }
    bench: Bench | None = None
    try:
        subprocess.run(up, check=True, timeout=600)
        bench = Bench(args, stack, stack_module)
        results["airflow"] = stack.state()["airflow"]["version"]
        bench.start_producer()
        names: list[str] = []
        for n in args.exporters:
            try:
                level = bench.level(n)
            except StackFailed as err:
                # the stack is broken from here on: what was measured stays, with why the rest is missing
                results["levels"].append({"exporters": n, "error": str(err)})
                say(f"N={n}: {err}")
                write_results(args, results)
                return results
            names = [f"{SCALE_PREFIX}{i:04d}" for i in range(1, n + 1)]
            results["levels"].append(level)
            say(json.dumps(level))
            write_results(args, results)  # each level as it is measured
        if args.pattern_topics:
            try:
                results["pattern"] = bench.pattern_case(names)
            except StackFailed as err:
                results["pattern"] = {"topics": args.pattern_topics, "status": f"not measured: {err}"}
            say(json.dumps(results["pattern"]))
        bench.stop_producer()
    finally:
        if bench is not None and getattr(bench, "producer", None) is not None and bench.producer.poll() is None:
            bench.producer.kill()
        subprocess.run(stack_cmd(root, "down"), timeout=300)
    return results


def write_results(args: argparse.Namespace, results: dict[str, Any], final: bool = False) -> None:
    if not args.exporters and not final:  # the stream_pattern case alone: main adds it to the earlier levels
        return
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if measured(results):
        chart(results, args.out.with_suffix(".png"))


def measured(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The levels that finished (a level the stack failed holds only its ``error``)."""
    return [level for level in results["levels"] if "error" not in level]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["produce"]:
        sub = argparse.ArgumentParser()
        sub.add_argument("command")
        sub.add_argument("--bootstrap", required=True)
        sub.add_argument("--topics-file", type=Path, required=True)
        sub.add_argument("--counts-file", type=Path, required=True)
        sub.add_argument("--rate", type=float, required=True)
        p = sub.parse_args(argv)
        produce(p.bootstrap, p.topics_file, p.counts_file, p.rate)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exporters", default="1,50,200",
        help="the numbers of exporters; 'none': only the stream_pattern case, added to --out's earlier levels",
    )  # fmt: skip
    parser.add_argument("--interval", default="120s", help="every exporter's interval")
    parser.add_argument("--intervals", type=int, default=3, help="intervals measured at each N")
    parser.add_argument("--baseline", type=float, help="seconds of the paused baseline (default: one interval)")
    parser.add_argument("--rate", type=float, default=5.0, help="events a second, over all topics")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of each topic")
    parser.add_argument("--pattern-topics", type=int, default=200, help="topics of the stream_pattern case (0: skip)")
    parser.add_argument("--workers", type=int, default=0, help="Celery workers (default: the LocalExecutor)")
    parser.add_argument(
        "--database", choices=["sqlite", "postgres"], default="postgres",
        help="the LocalExecutor's metadata database (default: postgres; SQLite's one writer stops a scheduler "
        "of a few hundred exporters)",
    )  # fmt: skip
    parser.add_argument("--root", type=Path, default=REPO / ".stack-scale", help="the stack's state folder")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "scale.json")
    args = parser.parse_args(argv)
    from strm_provider.config import parse_interval

    args.exporters = [] if args.exporters == "none" else sorted(int(n) for n in args.exporters.split(","))
    args.interval = parse_interval(args.interval)
    args.baseline = args.baseline or float(args.interval)
    earlier = json.loads(args.out.read_text()) if not args.exporters and args.out.exists() else None
    results = run(args)
    if earlier is not None:
        results = {**earlier, "pattern": results.get("pattern"), "pattern_started": results["started"]}
    write_results(args, results, final=True)
    print(table(results))
    print(f"\n{args.out}" + (f" and {args.out.with_suffix('.png')}" if measured(results) else "") + " written")


if __name__ == "__main__":
    main()
