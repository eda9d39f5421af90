"""The environment of an isolated Airflow: one home, SQLite, the repository's DAG file, its own exporters.

The tests, ``make demo``, ``make up`` and the benchmark each run Airflow in a folder of their own; they
all start from this, and add only what they need on top (ports, log levels, an API server).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS

REPO = Path(__file__).resolve().parent.parent


def airflow_env(home: Path, exporters: Path, dags: Path = REPO / "dags") -> dict[str, str]:
    """Settings that make an Airflow process use ``home`` (SQLite inside it) and nothing of the machine's."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # Airflow 2 refuses the LocalExecutor on SQLite; its SequentialExecutor runs one task at a time
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor" if AIRFLOW_V_3_0_PLUS else "SequentialExecutor",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "STRM_EXPORTERS_DIR": str(exporters),
        "NO_PROXY": "*",
    }


def loopback_hostname() -> str:
    """``[core] hostname_callable`` of an Airflow whose log server listens on 127.0.0.1 only (``make up``'s):
    Airflow fetches a running task's log from ``http://<the task's hostname>:<port>``, and the machine's own
    name may resolve to an address nothing listens on."""
    return "127.0.0.1"


def conn_env(conn_id: str) -> str:
    """The environment variable Airflow reads connection ``conn_id`` from."""
    return f"AIRFLOW_CONN_{conn_id.upper().replace('-', '_').replace('.', '_')}"


@contextmanager
def environ(values: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """``values`` set and ``unset`` removed in this process's environment for the block, then restored."""
    saved = {key: os.environ.get(key) for key in (*values, *unset)}
    for key in unset:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
