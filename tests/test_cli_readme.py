"""The README's walk-through, step by step, as a user runs it (subprocesses on a fresh Airflow DB).

The only differences from the README: the broker's address, and ``--endpoint-url`` pointing the
S3 connector at the local moto server instead of AWS.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.exporting import FILE_RE, TEST_FILE_RE, events_in
from tests.test_cli import BIN, Cli, aws_credentials, home, strm  # noqa: F401  (fixtures)


def airflow(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / "airflow"), *args], capture_output=True, text=True, env=cli.env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_readme_walkthrough(strm: Cli, tmp_path: Path, s3_target: Any, kafka: Any) -> None:  # noqa: F811
    prefix = "events"
    # 0. the Kafka cluster the exporters read
    airflow(
        strm, "connections", "add", "strm_kafka_default", "--conn-type", "strm_kafka", "--conn-host", kafka.bootstrap
    )
    # 1. the stream
    assert strm("create", "stream", "demo").json() == {"ref": {"name": "demo"}, "partitions": 5}
    # 2. the data connector (s3.json is what `aws iam create-access-key` printed)
    creds = aws_credentials(tmp_path, s3_target, prefix)
    created = strm(
        "create",
        "data-connector",
        "s3",
        "s3",
        "strmprivacy-export-demo",
        f"--credentials-file={creds}",
        "--test-prefix",
        "events",
        "--endpoint-url",
        s3_target.endpoint,
    )
    connector = {"ref": {"name": "s3"}, "s3Bucket": {"bucketName": "strmprivacy-export-demo"}}
    assert created.json() == connector
    assert strm("list", "data-connectors", "-o", "json").json() == {"dataConnectors": [connector]}
    # 3. the batch exporter
    exporter = strm("create", "batch-exporter", "demo", "--data-connector", "s3", "--path-prefix", "events")
    assert exporter.json() == {
        "ref": {"name": "s3-demo"},
        "streamRef": {"name": "demo"},
        "dataConnectorRef": {"name": "s3"},
        "interval": "60s",
        "pathPrefix": "events",
    }
    # 4. events
    sent = strm("simulate", "random-events", "demo", "--count", "200", "--rate", "1000")
    assert "sent 200 events to stream 'demo'" in sent.err
    # 5. the scheduler runs the DAG every interval; run it once now
    airflow(strm, "dags", "test", "strm_export_s3-demo")
    objects = s3_target.objects("events/")
    files = [k for k in objects if FILE_RE.match(k)]
    assert files and all(k.startswith("events/") and "-demo-" in k for k in files)
    assert any(TEST_FILE_RE.match(k) for k in objects)
    events = events_in({k: objects[k] for k in files})
    assert len(events) == 200 and all(e["strmMeta"]["schemaId"] == "clickstream" for e in events)
    assert all(json.loads(line) for k in files for line in objects[k].splitlines())
    # 6. tear down
    assert strm("delete", "batch-exporter", "s3-demo").out == "Batch Exporter has been deleted\n"
    assert strm("delete", "data-connector", "s3").out == "Data Connector has been deleted\n"
    assert strm("list", "batch-exporters", "-o", "json").json() == {"batchExporters": []}
    assert strm("list", "data-connectors", "-o", "json").json() == {"dataConnectors": []}
