"""Throughput and memory benchmark: the export against the raw client limits and the naive Airflow way.

``make bench`` (or ``.venv/bin/python bench/run.py [--events N]``) starts Apache Kafka (one KRaft node,
``make kafka``) and moto_server S3 on 127.0.0.1, produces ``N`` clickstream events of about 600 bytes
over 8 partitions (bench/backlog.py), and measures, on the same backlog, each method in a fresh
process (so peak RSS is per method: each process's own high-water mark and the tree's total, polled
from /proc):

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
  (``ConsumeFromTopicOperator`` + ``S3Hook.load_string``);
- ``export_task_avro_jsonl``, ``export_task_avro_parquet``: the same events produced as Avro by
  confluent-kafka's ``AvroSerializer`` through a Schema Registry the bench starts (devstack/schema_registry.py;
  schema ``AVRO_SCHEMA`` in bench/backlog.py), exported as ``export_task_confluent`` is (confluent reader)
  with ``value_format: avro`` into JSON Lines (checked byte for byte the size of the JSON events' lines) and
  into Parquet with zstd (checked row for row). Their MB/s count the same JSON bytes as every other method;
  ``kafka_value_mb`` is what they read from Kafka (the framed Avro values).

When both Avro exports ran, ``scan`` is what a downstream reader pays for one column: DuckDB counts the events
per ``eventType`` over the JSON Lines files and over the Parquet files (the same events), each query in a
fresh process whose bytes read are the ``rchar`` of /proc (bench/scan.py).

Each worker method also reports the CPU seconds of its own process during the measured work
(``work_cpu_s``, every thread) and of the broker and S3 server meanwhile (``server_cpu_s``): on a
shared 2-core machine these say where the time goes more steadily than wall time does.

The in-process methods live in bench/workers.py, the measuring in bench/measure.py, the ratios,
table and chart in bench/report.py. ``BENCH_PROFILE=1`` runs the in-process workers under cProfile
(``<method>.json.prof`` in the working directory, with ``--keep``); ``BENCH_PROFILE=py-spy``
samples every measured process, all threads, into ``<method>.pyspy.txt`` (collapsed stacks) in the
current directory (``BENCH_IDLE=1``: waits too).
Before each method the broker and S3 server are left to go idle (log segment flushes and the JVM's
own work after a big produce). Figures, not assertions. MB are 10^6 bytes of record
values (the JSON events, without newlines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.backlog import AVRO_TOPIC, PARTITIONS, TOPIC, produce, produce_avro
from bench.measure import bucket_bytes, result_row, run_measured, settle
from bench.report import LABELS, chart, ratios, table
from bench.scan import scan as scan_files
from bench.workers import CODECS, FORMATS, KAFKA_CONNS, PREFIXES, WORKERS

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

METHODS = tuple(LABELS)
AIRFLOW = str(Path(sys.executable).parent / "airflow")
#: (partition sets, prefix suffix) of the DAG runs: each reader, one and two mapped exports
DAG_RUNS = [(sets, suffix) for suffix in ("", "_confluent") for sets in (1, 2)]


class Run:
    """One benchmark run: the servers, the Airflow environment and the backlog every method reads."""

    def __init__(self, work: Path, env: dict[str, str], broker: Any, s3: Any, servers: list[int], args: Any) -> None:
        self.work, self.env, self.broker, self.s3, self.servers = work, env, broker, s3, servers
        self.events, self.partitions = args.events, args.partitions
        self.log = work / "bench.log"
        self.spool = work / "backlog.jsonl"
        self.total_bytes = 0
        #: bytes of the Avro values (framing included) of the Avro topic
        self.avro_bytes = 0
        #: the files of the Avro exports, downloaded for the downstream scan: format -> paths
        self.downloads: dict[str, list[Path]] = {}

    @property
    def file_bytes(self) -> int:
        """What every method must have in the bucket: each value and its newline."""
        return self.total_bytes + self.events

    def worker(self, method: str) -> dict[str, Any]:
        """An in-process method (bench/workers.py) in a fresh process."""
        spec = {
            "method": method,
            "bootstrap": self.broker.bootstrap,
            "events": self.events,
            "partitions": self.partitions,
            "result": str(self.work / f"{method}.json"),
            "spool": str(self.spool),
            "servers": self.servers,
        }
        cmd = [sys.executable, "-m", "bench.workers", method, json.dumps(spec)]
        wall, rss, cpu, code = run_measured(cmd, self.env, self.log, method)
        if code:
            raise RuntimeError(f"{method} failed (exit {code}); see {self.log}")
        out = json.loads(Path(spec["result"]).read_text())
        more: dict[str, Any] = {}
        if method in FORMATS:
            more = self.check_avro_export(method) | {"process_wall_s": round(wall, 2)}
            out["bytes"] = self.total_bytes  # MB/s of the same JSON bytes as every other method
        elif method in PREFIXES:
            files, size, stored = bucket_bytes(self.s3, PREFIXES[method])
            if size != self.file_bytes:
                raise RuntimeError(f"{method} wrote {size} bytes, expected {self.file_bytes}")
            more = {"files": files, "process_wall_s": round(wall, 2)}
            if method in CODECS:
                more |= {"stored_mb": round(stored / 1e6, 1), "compression_ratio": round(size / stored, 2)}
        more |= {"work_cpu_s": out["work_cpu_s"], "server_cpu_s": out["server_cpu_s"]}
        return result_row(out["events"], out["bytes"], out["seconds"], rss, cpu, **more)

    def check_avro_export(self, method: str) -> dict[str, Any]:
        """Check an Avro export's files hold every event (JSON Lines: the JSON events' bytes; Parquet: the
        rows), download them for the scan; the files and bytes stored."""
        import pyarrow.parquet as pq

        kind = FORMATS[method][1]
        folder = self.work / "files" / kind
        paths = download(self.s3, PREFIXES[method], f".{kind}", folder)
        stored = sum(p.stat().st_size for p in paths)
        if kind == "jsonl":
            if stored != self.file_bytes:
                raise RuntimeError(f"{method} wrote {stored} bytes, expected {self.file_bytes}")
        else:
            rows = sum(pq.read_metadata(p).num_rows for p in paths)
            if rows != self.events:
                raise RuntimeError(f"{method} wrote {rows} rows, expected {self.events}")
            groups = [pq.read_metadata(p).num_row_groups for p in paths]
        self.downloads[kind] = paths
        return {
            "files": len(paths),
            "stored_mb": round(stored / 1e6, 1),
            "json_lines_mb_per_stored_mb": round(self.file_bytes / stored, 2),
            "kafka_value_mb": round(self.avro_bytes / 1e6, 1),
            **({"row_groups": sum(groups)} if kind == "parquet" else {}),
        }

    def dag_runs(self, method: str) -> dict[str, Any]:
        """``airflow dags test`` of an exporter's DAG with one and two partition sets."""
        import yaml

        variants = {}
        suffix = "_confluent" if method == "dag_run_confluent" else ""
        for sets in (1, 2):
            name = f"bench-dag{sets}{suffix.replace('_', '-')}"
            exporter = {
                "name": name,
                "stream": TOPIC,
                "data_connector": f"bench_s3_dag{sets}{suffix}",
                "path_prefix": f"dag{sets}{suffix}",
                "kafka_connection": KAFKA_CONNS[method],
                "partition_sets": sets,
                "include_existing_events": True,
            }
            (self.work / "airflow" / "exporters" / f"{name}.yaml").write_text(yaml.safe_dump(exporter))
            cmd = [AIRFLOW, "dags", "test", f"strm_export_{name}"]
            wall, rss, cpu, code = run_measured(cmd, self.env, self.log, f"{method}_{sets}")
            files, size, _ = bucket_bytes(self.s3, f"dag{sets}{suffix}")
            if code or size != self.file_bytes:
                raise RuntimeError(f"{method} partition_sets={sets}: exit {code}, {size} bytes; see {self.log}")
            variants[f"partition_sets_{sets}"] = result_row(self.events, self.total_bytes, wall, rss, cpu, files=files)
        return {**variants["partition_sets_1"], "partition_sets": 1, "variants": variants}

    def naive(self) -> dict[str, Any]:
        """``airflow dags test`` of bench/dags/naive_airflow.py."""
        env = {**self.env, "AIRFLOW__CORE__DAGS_FOLDER": str(BENCH / "dags")}
        wall, rss, cpu, code = run_measured([AIRFLOW, "dags", "test", "bench_naive_airflow"], env, self.log, "naive")
        files, size, _ = bucket_bytes(self.s3, "naive")
        if code or size != self.file_bytes:
            raise RuntimeError(f"naive_airflow: exit {code}, {size} bytes in the bucket; see {self.log}")
        return result_row(self.events, self.total_bytes, wall, rss, cpu, files=files)

    def measure(self, method: str) -> dict[str, Any]:
        if method in WORKERS:
            return self.worker(method)
        if method == "naive_airflow":
            return self.naive()
        return self.dag_runs(method)


def download(s3: Any, prefix: str, ending: str, folder: Path) -> list[Path]:
    """The data files below ``prefix`` ending in ``ending`` (no validation files, no dead letters), into ``folder``."""
    from strm_provider.naming import DEAD_LETTER_DIR, is_test_object

    client = s3.client()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            if is_test_object(key) or f"/{DEAD_LETTER_DIR}/" in key or not key.endswith(ending):
                continue
            path = folder / f"{len(paths):04d}{ending}"
            client.download_file(s3.bucket, key, str(path))
            paths.append(path)
    return paths


def connections(broker: Any, s3: Any, registry_url: str | None = None) -> dict[str, dict[str, Any]]:
    """Every method's Kafka and storage connection, each storage one with its own least-privilege user."""
    kafka_conn = broker.connection()
    naive_user = s3.user_for("naive")
    confluent = {**kafka_conn, "extra": {**kafka_conn["extra"], "reader": "confluent"}}
    return {
        "bench_kafka": kafka_conn,
        "bench_kafka_confluent": confluent,
        **(
            {"bench_kafka_avro": {**confluent, "extra": {**confluent["extra"], "schema_registry_url": registry_url}}}
            if registry_url
            else {}
        ),
        **{
            f"bench_s3_{method}": s3.connection(prefix, endings=(".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"))
            for method, prefix in PREFIXES.items()
        },
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
        "bench_aws": {
            "conn_type": "aws",
            "login": naive_user["AccessKeyId"],
            "password": naive_user["SecretAccessKey"],
            "extra": {"endpoint_url": s3.endpoint, "region_name": "eu-west-1"},
        },
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from devstack import free_port
    from devstack.airflow import airflow_env, conn_env
    from devstack.kafka import Broker, start_broker
    from devstack.moto import start_moto
    from devstack.schema_registry import SchemaRegistry

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; expected some of {', '.join(METHODS)}")
    work = Path(tempfile.mkdtemp(prefix="strm-bench-"))
    home = work / "airflow"
    (home / "exporters").mkdir(parents=True)
    env = {
        **os.environ,
        **airflow_env(home, home / "exporters"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
    }
    print(f"working directory: {work} (logs: {work / 'bench.log'})", flush=True)
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        port = free_port()
        servers = [stack.enter_context(start_broker(work / "kafka", port)).pid]
        broker = Broker(port, work / "kafka")
        s3 = stack.enter_context(start_moto(work / "moto"))
        servers.append(s3.pid)
        run = Run(work, env, broker, s3, servers, args)
        registry_url = None
        if set(FORMATS) & set(methods):
            registry = stack.enter_context(SchemaRegistry(work / "schema-registry"))
            assert registry.proc is not None
            servers.append(registry.proc.pid)
            registry_url = registry.url
            broker.create_topic(AVRO_TOPIC, args.partitions)
            started = time.perf_counter()
            run.total_bytes, run.avro_bytes = produce_avro(broker.bootstrap, registry_url, args.events, args.partitions)
            print(
                f"produced {args.events:,} events as Avro ({run.avro_bytes / 1e6:,.0f} MB of values, "
                f"{run.avro_bytes / args.events:.0f} B/event; {run.total_bytes / 1e6:,.0f} MB as JSON) "
                f"in {time.perf_counter() - started:.1f}s",
                flush=True,
            )
        if set(methods) - set(FORMATS):  # every other method reads the JSON topic
            broker.create_topic(TOPIC, args.partitions)
            started = time.perf_counter()
            json_bytes = produce(
                broker.bootstrap, args.events, args.partitions, run.spool if "s3_ingest" in methods else None
            )
            if run.total_bytes and json_bytes != run.total_bytes:
                raise RuntimeError(f"the JSON topic has {json_bytes} bytes, the Avro topic's events {run.total_bytes}")
            run.total_bytes = json_bytes
            print(
                f"produced {args.events:,} events ({run.total_bytes / 1e6:,.0f} MB, "
                f"{run.total_bytes / args.events:.0f} B/event) over {args.partitions} partitions "
                f"in {time.perf_counter() - started:.1f}s",
                flush=True,
            )
        broker.reset_clients()
        for conn_id, conn in connections(broker, s3, registry_url).items():
            env[conn_env(conn_id)] = json.dumps(conn)
        env.update(
            {
                "BENCH_TOPIC": TOPIC,
                "BENCH_EVENTS": str(args.events),
                "BENCH_SPOOL": str(work / "naive-spool.jsonl"),
                "BENCH_BUCKET": s3.bucket,
            }
        )
        if {"dag_run", "dag_run_confluent", "naive_airflow"} & set(methods):
            subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
        for method in methods:
            waited = settle(servers)
            print(f"measuring {LABELS[method]} (servers idle after {waited:.0f}s) ...", flush=True)
            try:
                results[method] = run.measure(method)
            except Exception as err:  # one broken method must not lose the others' figures
                print(f"  {method} failed: {err}", flush=True)
                results[method] = {"error": str(err)}
        scan = None
        if len(run.downloads) == 2:
            print("DuckDB scan of one column over the JSON Lines and the Parquet files ...", flush=True)
            try:
                scan = scan_files(run.downloads)
            except Exception as err:
                print(f"  scan failed: {err}", flush=True)
                scan = {"error": str(err)}
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
        "event_bytes_avg": round(run.total_bytes / args.events, 1),
        "partitions": args.partitions,
        "methods": results,
        **({"avro_value_bytes_avg": round(run.avro_bytes / args.events, 1)} if run.avro_bytes else {}),
        **({"scan": scan} if scan else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog size (default 1,000,000)")
    parser.add_argument("--partitions", type=int, default=PARTITIONS, help="partitions of the topic (default 8)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="results JSON (chart beside it)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, broker data)")
    args = parser.parse_args()
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
