"""Throughput and memory benchmark: the export against the raw client limits and the naive Airflow way.

``make bench`` (or ``.venv/bin/python bench/run.py [--events N]``) starts Apache Kafka (one KRaft node,
``make kafka``) and moto_server S3 on 127.0.0.1, produces ``N`` seed-shaped events of about 600 bytes over 8
partitions, and measures, on the same backlog, each method in a fresh process (so peak RSS is
per method: each process's own high-water mark and the tree's total, polled from /proc):

- ``kafka_python_raw``: kafka-python tuned (no CRC checks, large fetches, big polls), values only;
- ``confluent_raw``: confluent-kafka (librdkafka), values only;
- ``s3_ingest``: the backlog's JSON Lines uploaded from a local file through the same S3 hook, no
  Kafka at all: the S3 server's own ingest ceiling, which bounds every method that uploads;
- ``export_task``: one ``KafkaToStorageOperator.execute`` of the whole backlog, upload included,
  with the default kafka-python reader; ``export_task_confluent``: the same with the connection's
  ``reader: confluent`` (librdkafka);
- ``dag_run``: ``airflow dags test`` of the exporter's DAG, ``partition_sets`` 1 and 2
  (wall time of the CLI: Airflow start-up, DAG parse and the run); ``dag_run_confluent``: the same
  with the confluent reader;
- ``naive_airflow``: ``airflow dags test`` of bench/dags/naive_airflow.py
  (``ConsumeFromTopicOperator`` + ``S3Hook.load_string``).

Each worker method also reports the CPU seconds of its own process during the measured work
(``work_cpu_s``, every thread) and of the broker and S3 server meanwhile (``server_cpu_s``): on a
shared 2-core machine these say where the time goes more steadily than wall time does.

``BENCH_PROFILE=1`` runs the in-process workers under cProfile (``<method>.json.prof`` in the working
directory, with ``--keep``); ``BENCH_PROFILE=py-spy`` samples every measured process, all threads,
into ``<method>.pyspy.txt`` (collapsed stacks) in the current directory (``BENCH_IDLE=1``: waits too).
Before each method the broker and S3 server are left to go idle (log segment flushes and the JVM's
own work after a big produce). Figures, not assertions. MB are 10^6 bytes of record
values (the JSON events, without newlines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOPIC = "bench"
PARTITIONS = 8
EVENT_BYTES = 600
METHODS = (
    "kafka_python_raw",
    "confluent_raw",
    "s3_ingest",
    "export_task",
    "export_task_confluent",
    "dag_run",
    "dag_run_confluent",
    "naive_airflow",
)
LABELS = {
    "kafka_python_raw": "(a) kafka-python raw",
    "confluent_raw": "(b) confluent-kafka raw",
    "s3_ingest": "(f) S3 upload only",
    "export_task": "(c) export task",
    "export_task_confluent": "(c) export task, confluent reader",
    "dag_run": "(d) DAG run",
    "dag_run_confluent": "(d) DAG run, confluent reader",
    "naive_airflow": "(e) naive Airflow",
}
#: (partition sets, prefix suffix) of the DAG runs: each reader, one and two mapped exports
DAG_RUNS = [(sets, suffix) for suffix in ("", "_confluent") for sets in (1, 2)]
#: kafka-python tuned as well as it goes (the ceiling of the client the export uses).
KAFKA_PYTHON_TUNED = {
    "check_crcs": False,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_poll_records": 10_000,
}


# ----- data ---------------------------------------------------------------------------------------
def events(count: int, seed: int = 6) -> Iterator[bytes]:
    """Clickstream events (strm simulate random-events), padded to about 600 bytes with a URL query."""
    import orjson

    from strm_provider.cli.streams import random_event

    rng = random.Random(seed)
    for i in range(count):
        event = random_event(rng, now_ms=1_700_000_000_000 + i * 7)
        size = len(orjson.dumps(event))
        target = EVENT_BYTES + rng.randint(-20, 20)
        if size + 20 < target:
            event["url"] += "?utm_source=bench&utm_content=" + "x" * (target - size - 31)
        yield orjson.dumps(event)


def produce(bootstrap: str, count: int, partitions: int = PARTITIONS, spool: Path | None = None) -> int:
    """Produce ``count`` events round-robin over the partitions; return the bytes of all values.

    ``spool`` also gets them as JSON Lines (what the exports write), for the upload-only method.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_000_000,
            "acks": "1",
        }
    )
    total = 0
    out = spool.open("wb") if spool else None
    for i, value in enumerate(events(count)):
        total += len(value)
        if out:
            out.write(value + b"\n")
        while True:
            try:
                producer.produce(TOPIC, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    if out:
        out.close()
    if producer.flush(120):
        raise RuntimeError("producer could not deliver every event")
    return total


# ----- workers (each runs in its own process) -------------------------------------------------------
def _start(spec: dict[str, Any]) -> float:
    """Mark the start of a worker's measured work (imports and set-up excluded); return the wall clock."""
    spec["cpu0"], spec["server_cpu0"] = time.process_time(), tree_cpu(spec["servers"])
    return time.perf_counter()


def _done(spec: dict[str, Any], events_read: int, value_bytes: int, seconds: float, **more: Any) -> None:
    """Write a worker's figures; besides events, bytes and seconds, the CPU seconds since :func:`_start`
    of its own process (``work_cpu_s``, every thread) and of the broker and S3 server (``server_cpu_s``)."""
    Path(spec["result"]).write_text(
        json.dumps(
            {
                "events": events_read,
                "bytes": value_bytes,
                "seconds": seconds,
                "work_cpu_s": round(time.process_time() - spec["cpu0"], 2),
                "server_cpu_s": round(tree_cpu(spec["servers"]) - spec["server_cpu0"], 2),
                **more,
            }
        )
    )


def worker_kafka_python(spec: dict[str, Any]) -> None:
    """Raw kafka-python: partitions read one after another to their end offsets (as the export reads them),
    values counted."""
    from kafka import KafkaConsumer, TopicPartition

    start = _start(spec)
    consumer = KafkaConsumer(bootstrap_servers=spec["bootstrap"], enable_auto_commit=False, **KAFKA_PYTHON_TUNED)
    count = size = 0
    for partition in range(spec["partitions"]):
        tp = TopicPartition(TOPIC, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        end = consumer.end_offsets([tp])[tp]
        while consumer.position(tp) < end:
            for records in consumer.poll(timeout_ms=1000).values():
                count += len(records)
                size += sum(len(r.value) for r in records)
    seconds = time.perf_counter() - start
    consumer.close()
    _done(spec, count, size, seconds)


def worker_confluent(spec: dict[str, Any]) -> None:
    """Raw confluent-kafka: every partition assigned from the beginning, consumed in batches."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    start = _start(spec)
    consumer = Consumer(
        {
            "bootstrap.servers": spec["bootstrap"],
            "group.id": "bench-confluent-raw",
            "enable.auto.commit": False,
            "fetch.max.bytes": 128 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(spec["partitions"])])
    count = size = 0
    target = spec["events"]
    while count < target:
        # consume() waits until it has num_messages (or the timeout): never ask for more than remain
        for msg in consumer.consume(num_messages=min(10_000, target - count), timeout=1.0):
            if msg.error():
                continue
            count += 1
            size += len(msg.value())
    seconds = time.perf_counter() - start
    consumer.close()
    _done(spec, count, size, seconds)


def worker_export(spec: dict[str, Any]) -> None:
    """One KafkaToStorageOperator export of the whole backlog (read, upload, commit), as the DAG runs it.

    The plan comes first, untimed, as the DAG's own ``plan`` task (it commits the new exporter's start):
    (c) measures the export task alone; (d) includes the plan.
    """
    from strm_provider.operators import KafkaExportPlanOperator, KafkaToStorageOperator

    method = spec["method"]
    common = {
        "stream": TOPIC,
        "data_connector": f"bench_s3_{method}",
        "group_id": f"strm-exporter-bench-{method}",
        "path_prefix": PREFIXES[method],
        "kafka_conn_id": KAFKA_CONNS[method],
    }
    context: Any = {"run_id": "bench"}
    [partition_set] = KafkaExportPlanOperator(task_id="plan", include_existing_events=True, **common).execute(context)
    settle(spec["servers"])
    operator = KafkaToStorageOperator(task_id="export", partition_set=partition_set, **common)
    start = _start(spec)
    summary = operator.execute(context)
    seconds = time.perf_counter() - start
    _done(spec, summary["events"], summary["bytes"] - summary["events"], seconds, files=len(summary["files"]))


def worker_s3_ingest(spec: dict[str, Any]) -> None:
    """The exports' upload alone: the JSON Lines of the backlog, from a local file, through the same hook.

    Every method that uploads shares the machine with the S3 server, whose CPU per byte received is
    the same whoever sends: this is the fastest any export into it can be.
    """
    from strm_provider.hooks import storage_hook

    storage = storage_hook("bench_s3_s3_ingest")
    storage.client  # noqa: B018  (region lookup and client set-up, outside the measured time)
    size = 0
    start = _start(spec)
    with open(spec["spool"], "rb") as src, storage.open_writer(f"{PREFIXES['s3_ingest']}/backlog.jsonl") as out:
        while chunk := src.read(8 * 1024 * 1024):
            out.write(chunk)
            size += len(chunk)
    seconds = time.perf_counter() - start
    _done(spec, spec["events"], size - spec["events"], seconds, files=1)


WORKERS = {
    "kafka_python_raw": worker_kafka_python,
    "confluent_raw": worker_confluent,
    "s3_ingest": worker_s3_ingest,
    "export_task": worker_export,
    "export_task_confluent": worker_export,
}
#: where each export method writes in the bucket
PREFIXES = {"export_task": "task", "export_task_confluent": "task-confluent", "s3_ingest": "ingest"}
#: the Kafka connection of each exporting method: the confluent ones choose the reader there
KAFKA_CONNS = {
    "export_task": "bench_kafka",
    "export_task_confluent": "bench_kafka_confluent",
    "dag_run": "bench_kafka",
    "dag_run_confluent": "bench_kafka_confluent",
}


# ----- orchestration ----------------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by ``pids`` and their children (the broker and the S3 server)."""
    import psutil

    total = 0.0
    for pid in pids:
        for member in _tree(pid):
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(member).cpu_times()
                total += times.user + times.system
    return total


def settle(pids: list[int], idle: float = 0.1, limit: float = 120.0) -> float:
    """Wait until the servers (``pids`` and their children) use under ``idle`` of a core over a second.

    A broker still busy after a big produce would share the machine's two cores with the method being
    measured. Returns the seconds waited.
    """

    started = time.monotonic()
    before = tree_cpu(pids)
    while time.monotonic() - started < limit:
        time.sleep(1.0)
        now = tree_cpu(pids)
        if now - before < idle:
            break
        before = now
    return time.monotonic() - started


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in kB; VmHWM is its own high-water mark since its last exec."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def run_measured(cmd: list[str], env: dict[str, str], log: Path, name: str) -> tuple[float, float, float, int]:
    """Run ``cmd``; return (wall s, peak RSS MB of its process tree, CPU s of the tree, exit code).

    Peak RSS is polled from /proc (each process's own VmHWM, and the sum of the tree's VmRSS every
    20 ms): ``ru_maxrss`` is useless here because a child inherits its parent's high-water mark at
    fork and keeps it across exec.
    """
    peak_kb = 0
    if os.environ.get("BENCH_PROFILE") == "1" and Path(cmd[0]).name == "airflow":  # the CLI's main thread
        cmd = [sys.executable, "-m", "cProfile", "-o", str(Path.cwd() / f"{name}.prof"), *cmd]
    if os.environ.get("BENCH_PROFILE") == "py-spy":  # BENCH_IDLE=1: waiting threads too
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--threads", "--subprocesses", "--rate", "200"]
        spy += ["--idle"] if os.environ.get("BENCH_IDLE") else []
        cmd = [*spy, "--format", "raw", "--output", str(Path.cwd() / f"{name}.pyspy.txt"), "--", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        hwm: dict[int, int] = {}
        while proc.poll() is None:
            total = 0
            for pid in _tree(proc.pid):
                rss, high = _memory_kb(pid)
                total += rss
                hwm[pid] = max(hwm.get(pid, 0), high)
            peak_kb = max(peak_kb, total, *hwm.values(), 0)
            time.sleep(0.02)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, peak_kb / 1024, cpu, proc.returncode


def bucket_bytes(s3: Any, prefix: str) -> tuple[int, int]:
    """(objects, bytes) of exported data files below ``prefix`` (no validation files, no dead letters)."""
    from strm_provider.naming import is_data_file

    objects = size = 0
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            if is_data_file(item["Key"]):
                objects += 1
                size += item["Size"]
    return objects, size


def airflow_env(home: Path) -> dict[str, str]:
    from tests.servers.airflow import airflow_env as isolated

    return {
        **os.environ,
        **isolated(home, home / "exporters"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
    }


def result_row(
    events_read: int, value_bytes: int, seconds: float, rss_mb: float, cpu: float, **more: Any
) -> dict[str, Any]:
    """One method's figures; ``cpu_s`` is the CPU time of its process tree (steadier than wall time)."""
    return {
        "events": events_read,
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu, 2),
        "events_per_s": round(events_read / seconds, 1),
        "mb_per_s": round(value_bytes / seconds / 1e6, 2),
        "peak_rss_mb": round(rss_mb, 1),
        **more,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from tests.exporting import conn_env
    from tests.servers import free_port
    from tests.servers.kafka import Broker, start_broker
    from tests.servers.moto import start_moto

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; expected some of {', '.join(METHODS)}")
    work = Path(tempfile.mkdtemp(prefix="strm-bench-"))
    home = work / "airflow"
    (home / "exporters").mkdir(parents=True)
    env = airflow_env(home)
    log = work / "bench.log"
    print(f"working directory: {work} (logs: {log})", flush=True)
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        port = free_port()
        servers = [stack.enter_context(start_broker(work / "kafka", port)).pid]
        broker = Broker(port, work / "kafka")
        s3 = stack.enter_context(start_moto(work / "moto"))
        servers.append(s3.pid)
        broker.create_topic(TOPIC, args.partitions)
        started = time.perf_counter()
        spool = work / "backlog.jsonl"
        total_bytes = produce(broker.bootstrap, args.events, args.partitions, spool if "s3_ingest" in methods else None)
        print(
            f"produced {args.events:,} events ({total_bytes / 1e6:,.0f} MB, {total_bytes / args.events:.0f} B/event) "
            f"over {args.partitions} partitions in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        broker.reset_clients()

        kafka_conn = broker.connection()
        conns = {
            "bench_kafka": kafka_conn,
            "bench_kafka_confluent": {**kafka_conn, "extra": {**kafka_conn["extra"], "reader": "confluent"}},
            **{f"bench_s3_{method}": s3.connection(prefix) for method, prefix in PREFIXES.items()},
            **{f"bench_s3_dag{sets}{suffix}": s3.connection(f"dag{sets}{suffix}") for sets, suffix in DAG_RUNS},
            "bench_kafka_naive": {
                "conn_type": "kafka",
                "extra": {
                    "bootstrap.servers": broker.bootstrap,
                    "group.id": "bench-naive",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": "false",
                },
            },
        }
        naive_user = s3.user_for("naive")
        conns["bench_aws"] = {
            "conn_type": "aws",
            "login": naive_user["AccessKeyId"],
            "password": naive_user["SecretAccessKey"],
            "extra": {"endpoint_url": s3.endpoint, "region_name": "eu-west-1"},
        }
        for conn_id, conn in conns.items():
            env[conn_env(conn_id)] = json.dumps(conn)
        env.update(
            {
                "BENCH_TOPIC": TOPIC,
                "BENCH_EVENTS": str(args.events),
                "BENCH_SPOOL": str(work / "naive-spool.jsonl"),
                "BENCH_BUCKET": s3.bucket,
            }
        )
        if {"dag_run", "naive_airflow"} & set(methods):
            subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                env=env,
                check=True,
                capture_output=True,
            )

        expected_file_bytes = total_bytes + args.events  # one newline per event
        for method in methods:
            waited = settle(servers)
            print(f"measuring {LABELS[method]} (servers idle after {waited:.0f}s) ...", flush=True)
            try:
                if method in WORKERS:
                    spec = {
                        "method": method,
                        "bootstrap": broker.bootstrap,
                        "events": args.events,
                        "partitions": args.partitions,
                        "result": str(work / f"{method}.json"),
                        "spool": str(spool),
                        "servers": servers,
                    }
                    cmd = [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--worker",
                        method,
                        "--spec",
                        json.dumps(spec),
                    ]
                    wall, rss, cpu, code = run_measured(cmd, env, log, method)
                    if code:
                        raise RuntimeError(f"{method} failed (exit {code}); see {log}")
                    out = json.loads(Path(spec["result"]).read_text())
                    more: dict[str, Any] = {}
                    if method in PREFIXES:
                        files, size = bucket_bytes(s3, PREFIXES[method])
                        if size != expected_file_bytes:
                            raise RuntimeError(f"{method} wrote {size} bytes, expected {expected_file_bytes}")
                        more = {"files": files, "process_wall_s": round(wall, 2)}
                    more |= {"work_cpu_s": out["work_cpu_s"], "server_cpu_s": out["server_cpu_s"]}
                    results[method] = result_row(out["events"], out["bytes"], out["seconds"], rss, cpu, **more)
                elif method in ("dag_run", "dag_run_confluent"):
                    variants = {}
                    suffix = "_confluent" if method == "dag_run_confluent" else ""
                    for sets in (1, 2):
                        name = f"bench-dag{sets}{suffix.replace('_', '-')}"
                        (home / "exporters" / f"{name}.yaml").write_text(
                            yaml.safe_dump(
                                {
                                    "name": name,
                                    "stream": TOPIC,
                                    "data_connector": f"bench_s3_dag{sets}{suffix}",
                                    "path_prefix": f"dag{sets}{suffix}",
                                    "kafka_connection": KAFKA_CONNS[method],
                                    "partition_sets": sets,
                                    "include_existing_events": True,
                                }
                            )
                        )
                        cmd = [str(Path(sys.executable).parent / "airflow"), "dags", "test", f"strm_export_{name}"]
                        wall, rss, cpu, code = run_measured(cmd, env, log, f"{method}_{sets}")
                        files, size = bucket_bytes(s3, f"dag{sets}{suffix}")
                        if code or size != expected_file_bytes:
                            raise RuntimeError(f"{method} partition_sets={sets}: exit {code}, {size} bytes; see {log}")
                        variants[f"partition_sets_{sets}"] = result_row(
                            args.events, total_bytes, wall, rss, cpu, files=files
                        )
                    results[method] = {**variants["partition_sets_1"], "partition_sets": 1, "variants": variants}
                elif method == "naive_airflow":
                    naive_env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(BENCH / "dags")}
                    cmd = [str(Path(sys.executable).parent / "airflow"), "dags", "test", "bench_naive_airflow"]
                    wall, rss, cpu, code = run_measured(cmd, naive_env, log, method)
                    files, size = bucket_bytes(s3, "naive")
                    if code or size != expected_file_bytes:
                        raise RuntimeError(f"naive_airflow: exit {code}, {size} bytes in the bucket; see {log}")
                    results[method] = result_row(args.events, total_bytes, wall, rss, cpu, files=files)
            except Exception as err:  # one broken method must not lose the others' figures
                print(f"  {method} failed: {err}", flush=True)
                results[method] = {"error": str(err)}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)  # the broker's log holds the whole backlog
    return {
        "broker": f"apache-kafka {Broker.version}",
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "events": args.events,
        "event_bytes_avg": round(total_bytes / args.events, 1),
        "partitions": args.partitions,
        "methods": results,
    }


#: name -> (method, what it is compared with: one method or the slower of several, the ratio wanted)
TARGETS = {
    "export_task / kafka_python_raw": ("export_task", ("kafka_python_raw",), 0.8),
    "export_task_confluent / min(confluent_raw, s3_ingest)": (
        "export_task_confluent",
        ("confluent_raw", "s3_ingest"),
        0.6,
    ),
    "export_task_confluent / naive_airflow": ("export_task_confluent", ("naive_airflow",), 3.0),
    "dag_run_confluent / naive_airflow": ("dag_run_confluent", ("naive_airflow",), 1.5),
    "dag_run / naive_airflow": ("dag_run", ("naive_airflow",), 1.0),
}


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | bool]]:
    """Each target ratio of events/s measured in this run, the ratio wanted and whether it was reached."""
    rate = {k: v["events_per_s"] for k, v in results.items() if "error" not in v}
    out: dict[str, dict[str, float | bool]] = {}
    for name, (method, versus, wanted) in TARGETS.items():
        if method in rate and all(v in rate for v in versus):
            ratio = rate[method] / min(rate[v] for v in versus)
            out[name] = {"ratio": round(ratio, 3), "target": wanted, "reached": ratio >= wanted}
    return out


def table(report: dict[str, Any]) -> str:
    rows = [
        "| method | events/s | MB/s | peak RSS MB | seconds | CPU s | servers' CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, row in report["methods"].items():
        if "error" in row:
            rows.append(f"| {LABELS[method]} | failed: {row['error'][:80]} | | | | | |")
            continue
        variants = row.get("variants") or {"": row}
        for variant, v in variants.items():
            label = LABELS[method] + (f", {variant.replace('_', ' ').replace('sets ', 'sets=')}" if variant else "")
            rows.append(
                f"| {label} | {v['events_per_s']:,.0f} | {v['mb_per_s']:,.1f} | {v['peak_rss_mb']:,.0f} | "
                f"{v['seconds']:,.1f} | {v.get('work_cpu_s', v['cpu_s']):,.1f} | {v.get('server_cpu_s', '')} |"
            )
    text = "\n".join(rows)
    if report.get("ratios"):
        text += "\n\n| ratio of events/s | measured | target |\n|---|---:|---:|\n" + "\n".join(
            f"| {k} | {v['ratio']:.2f} | ≥ {v['target']} {'✓' if v['reached'] else '✗'} |"
            for k, v in report["ratios"].items()
        )
    return text


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = {
        "kafka_python_raw": "#888888",
        "confluent_raw": "#555555",
        "export_task": "#2e86c1",
        "export_task_confluent": "#1a5276",
        "s3_ingest": "#aaaaaa",
        "dag_run": "#5dade2",
        "dag_run_confluent": "#2874a6",
        "naive_airflow": "#e67e22",
    }
    labels, rates, rss, colors = [], [], [], []
    for method, row in report["methods"].items():
        if "error" in row:
            continue
        for variant, v in (row.get("variants") or {"": row}).items():
            labels.append(LABELS[method] + (f"\n{variant.replace('_', ' ')}" if variant else ""))
            rates.append(v["events_per_s"] / 1000)
            rss.append(v["peak_rss_mb"])
            colors.append(palette[method])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    left.barh(labels, rates, color=colors)
    left.set_xlabel("thousand events/s (higher is better)")
    right.barh(labels, rss, color=colors)
    right.set_xlabel("peak RSS, MB (lower is better)")
    right.set_yticklabels([])
    for axis, values, fmt in ((left, rates, "{:,.0f}k"), (right, rss, "{:,.0f}")):
        axis.invert_yaxis()
        for i, value in enumerate(values):
            axis.text(value, i, " " + fmt.format(value), va="center", fontsize=8)
    m = report["machine"]
    fig.suptitle(
        f"{report['events']:,} events of ~{report['event_bytes_avg']:.0f} B, {report['partitions']} partitions, "
        f"loopback {report['broker']} + S3 (moto); {m['cpus']} cores, {m['memory_gb']} GB"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog size (default 1,000,000)")
    parser.add_argument("--partitions", type=int, default=PARTITIONS, help="partitions of the topic (default 8)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="results JSON (chart beside it)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, broker data)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.spec)
        if os.environ.get("BENCH_PROFILE") == "1":  # cProfile the worker: <result>.prof beside its result
            import cProfile

            cProfile.runctx("WORKERS[args.worker](spec)", globals(), locals(), filename=spec["result"] + ".prof")
        else:
            WORKERS[args.worker](spec)
        return
    started = time.perf_counter()
    report = bench(args)
    report["ratios"] = ratios(report["methods"])
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    chart(report, png)
    print()
    print(table(report))
    print(f"\n{report['machine']['cpus']} cores, {report['machine']['memory_gb']} GB; total {report['wall_seconds']}s")
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
