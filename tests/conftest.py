"""Test session set-up: an isolated Airflow home (SQLite), and the real servers as fixtures.

Airflow reads its configuration when first imported, so the environment is set here, at import
time of this conftest, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="strm-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "STRM_EXPORTERS_DIR": str(_HOME / "exporters"),
        "NO_PROXY": "*",
    }
)
(_HOME / "exporters").mkdir()

pytest_plugins = [
    f"tests.servers.{name}"
    for name in ("kafka", "moto", "gcs", "azurite", "seaweedfs", "postgres", "redis")
    if (REPO / "tests" / "servers" / f"{name}.py").exists()
]


def pytest_sessionstart(session: object) -> None:
    """Create the Airflow metadata database once for the whole session."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
