"""``make demo``'s default path, on the embedded broker that needs nothing but Python (every other test
runs on Apache Kafka)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.readme import REPO


def test_demo_exports_every_event_on_the_embedded_broker(tmp_path: Path) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "*"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--events", "500"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "starting the embedded Kafka-compatible broker" in done.stdout
    assert "500 events exported in 1 file(s); 500 produced." in done.stdout
    first = done.stdout.split(" | head -1\n", 1)[1].splitlines()[0]
    assert first.startswith('{"strmMeta":') and "\n" not in first  # the line as it is in the file
    assert "broker and storage server stopped" in done.stdout


def test_demo_avro_parquet_exports_registry_records_that_duckdb_reads(tmp_path: Path) -> None:
    """``make demo FORMAT=avro-parquet``: Avro records of a Schema Registry, exported as Parquet, read by DuckDB."""
    make = subprocess.run(
        ["make", "-n", "demo", "FORMAT=avro-parquet"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert "scripts/demo.py --storage s3 --broker embedded --format avro-parquet" in make.stdout, make.stdout
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "*"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--events", "500", "--format", "avro-parquet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "producing 500 random events as Avro records (subject demo-value)" in out
    assert "value_format: avro" in out and "file_format: parquet" in out
    listing = out.split("$ aws s3 ls strmprivacy-export-demo/events/\n", 1)[1].split("\n\n", 1)[0].splitlines()
    keys = [line.split()[-1] for line in listing]
    assert keys and all(key.endswith(".parquet") for key in keys), listing
    assert any(not key.startswith(".strm_test_") for key in keys)  # an exported file beside the validation file
    # DuckDB over the downloaded files: the count is what was produced, the Avro timestamp a timestamp column
    counted = out.split("""$ duckdb -c "SELECT count(*) AS events FROM""", 1)[1].split("\n\n", 1)[0]
    assert [line.strip("│ ") for line in counted.splitlines() if line.strip("│ ").isdigit()] == ["500"], counted
    types = out.split("DESCRIBE SELECT", 1)[1]
    assert '"timestamp" TIMESTAMP WITH TIME ZONE' in types and "abTests           │ VARCHAR[]" in types
    assert "500 events exported in 1 file(s); 500 produced." in out
    assert "broker, Schema Registry and storage server stopped" in out
