"""Peak memory of one export task as the backlog grows: 250 MB and 2 GB (figures, not assertions).

``.venv/bin/python bench/memory.py [--sizes 250M,2G] [--value-bytes 1000]`` starts the noida-db
broker and moto_server S3 (IAM enforced, the seed's minimal policy) on 127.0.0.1 in a temp dir,
produces each backlog to its own 5-partition topic, then runs the export task
(``KafkaToStorageOperator.execute`` of the whole backlog, via tests/faults/runner.py) in a fresh
process and reads that process's peak RSS from ``wait4()``. Files rotate at the default 128 MiB.
If memory is bounded, the two peaks are about the same. It takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tests.conftest  # noqa: E402,F401 - isolated AIRFLOW_HOME before Airflow is imported
from tests.servers import free_port  # noqa: E402
from tests.servers.kafka import Broker, start_broker  # noqa: E402
from tests.servers.moto import start_moto  # noqa: E402

UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def produce_backlog(broker: Broker, topic: str, total_bytes: int, value_bytes: int) -> int:
    """Produce ``total_bytes`` of JSON events of about ``value_bytes`` each; return the event count."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, linger_ms=50, batch_size=1 << 20, max_request_size=8 << 20
    )
    pad = "x" * max(value_bytes - 40, 0)
    count = total_bytes // value_bytes
    for seq in range(count):
        producer.send(topic, f'{{"seq":{seq},"pad":"{pad}"}}'.encode(), partition=seq % 5)
    producer.flush()
    producer.close()
    return count


def export_peak_rss(spec: dict) -> tuple[float, int, dict]:
    """Run the export task in a child process; return (seconds, peak RSS bytes, task result)."""
    started = time.monotonic()
    out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read after the child exits
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.runner", json.dumps(spec)],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=out,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    out.seek(0)
    results = [line[7:] for line in out.read().splitlines() if line.startswith("RESULT ")]
    if status != 0 or not results:
        raise SystemExit(f"export failed (status {status})")
    return seconds, usage.ru_maxrss * 1024, json.loads(results[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="250M,2G")
    parser.add_argument("--value-bytes", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strm-memory-"))
    rows = []
    with ExitStack() as stack:
        port = free_port()
        (work / "kafka").mkdir()
        stack.enter_context(start_broker(work / "kafka", port))
        broker = Broker(port, work / "kafka")
        s3 = stack.enter_context(start_moto(work))
        os.environ["AIRFLOW_CONN_STRM_KAFKA_DEFAULT"] = json.dumps(broker.connection())
        os.environ["AIRFLOW_CONN_DC"] = json.dumps(s3.connection("memory"))
        for size in args.sizes.split(","):
            topic = broker.create_topic(f"backlog-{size.lower()}", 5)
            t0 = time.monotonic()
            events = produce_backlog(broker, topic, parse_size(size), args.value_bytes)
            produce_s = time.monotonic() - t0
            spec = {
                "operator": {
                    "stream": topic,
                    "data_connector": "dc",
                    "group_id": f"memory-{topic}",
                    "path_prefix": "memory",
                    "include_existing_events": True,
                }
            }
            seconds, peak, result = export_peak_rss(spec)
            row = {
                "backlog": size,
                "events": events,
                "exported": result["events"],
                "bytes": result["bytes"],
                "files": len(result["files"]),
                "produce_s": round(produce_s, 1),
                "export_s": round(seconds, 1),
                "export_MB_s": round(result["bytes"] / 1e6 / seconds, 1),
                "peak_rss_MiB": round(peak / 2**20, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        broker.reset_clients()
    print("\n| backlog | events | files | export s | MB/s | peak RSS MiB |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backlog']} | {r['exported']} | {r['files']} | {r['export_s']} | {r['export_MB_s']} "
            f"| {r['peak_rss_MiB']} |"
        )


if __name__ == "__main__":
    main()
