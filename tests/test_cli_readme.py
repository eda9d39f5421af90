"""The README's flow from nothing to files in the bucket, run as the README prints it.

It runs in a new, empty folder holding only ``s3.json`` (the flow installs the DAG file with
``strm install-dag``); the only change to the text is the Kafka address (the test's broker instead of
``localhost:9092``). The S3 endpoint comes from ``AWS_ENDPOINT_URL``, as boto3 and the aws CLI read
it, with an admin key for ``aws s3 ls`` (the exporter's own key may only write).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from strm_provider.naming import is_data_file, is_test_object
from tests.exporting import events_in
from tests.readme import readme_flow, run_flow
from tests.test_cli import aws_credentials


def test_readme_flow_from_nothing(tmp_path: Path, s3_target: Any, kafka: Any) -> None:
    script = readme_flow("from-nothing")
    assert "localhost:9092" in script
    shutil.copy(aws_credentials(tmp_path, s3_target, "events"), tmp_path / "s3.json")
    out = run_flow(
        script.replace("localhost:9092", kafka.bootstrap),
        cwd=tmp_path,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "AWS_ENDPOINT_URL": s3_target.endpoint,
            "AWS_ACCESS_KEY_ID": s3_target.admin["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": s3_target.admin["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "eu-west-1",
        },
    )
    objects = s3_target.objects("events/")
    files = [k for k in objects if is_data_file(k)]
    assert files and all(k.startswith("events/") and "-demo-" in k for k in files)
    assert any(is_test_object(k) for k in objects)
    events = events_in({k: objects[k] for k in files})
    assert len(events) == 200 and all(e["strmMeta"]["schemaId"] == "clickstream" for e in events)
    assert all(json.loads(line) for k in files for line in objects[k].splitlines())
    # what `aws s3 ls` printed: the exported files by name
    assert all(Path(k).name in out for k in files)
    connector = {"ref": {"name": "s3"}, "s3Bucket": {"bucketName": "strmprivacy-export-demo"}}
    assert json.dumps({"dataConnectors": [connector]}, indent=2) in out
    assert "Batch Exporter has been deleted: s3-demo\n" in out
    assert out.endswith("Data Connector has been deleted: s3\n")
    assert f"Wrote {tmp_path / 'airflow-home' / 'dags' / 'strm_exporters.py'}; it reads batch exporters" in out
    assert not (tmp_path / "airflow-home" / "dags" / "exporters" / "s3-demo.yaml").exists()
