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

from devstack.airflow import airflow_env

REPO = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="strm-airflow-"))
os.environ.update({**airflow_env(_HOME, _HOME / "exporters"), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"})
(_HOME / "exporters").mkdir()

pytest_plugins = ["tests.fixtures"]


def pytest_sessionstart(session: object) -> None:
    """Create the Airflow metadata database once for the whole session."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
