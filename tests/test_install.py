"""Installing the provider into an Airflow a user already runs leaves their Airflow as it is.

A fresh environment gets ``apache-airflow==<line's patch>`` first (with the line's resolved requirements as its
constraints file, as a deployment installs Airflow), then the built wheel with the ``s3`` extra and no pin: the
installer must keep that Airflow, and Airflow must discover the provider, its connection types and its DAG file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.compat import LINES, requirements

REPO = Path(__file__).resolve().parent.parent
UV = str(REPO / ".tools" / "bin" / "uv")


def run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--wheel", "--out-dir", str(out), str(REPO))
    (built,) = out.glob("strm_airflow_provider-*.whl")
    return built


def installed_versions(env: Path) -> dict[str, str]:
    listed = run(UV, "pip", "list", "--format", "json", "--python", str(env / "bin" / "python"))
    return {item["name"]: item["version"] for item in json.loads(listed)}


@pytest.mark.parametrize("line", ["2.11", "3.0"])
def test_installing_the_wheel_keeps_the_users_airflow(tmp_path: Path, wheel: Path, line: str) -> None:
    version = LINES[line]
    env = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, str(env))
    python = str(env / "bin" / "python")
    run(
        UV, "pip", "install", "--quiet", "--python", python, f"apache-airflow=={version}", "-c", str(requirements(line))
    )
    before = installed_versions(env)
    assert before["apache-airflow"] == version

    run(UV, "pip", "install", "--quiet", "--python", python, f"{wheel}[s3]")
    after = installed_versions(env)
    assert after["apache-airflow"] == version
    assert after.get("apache-airflow-core") == before.get("apache-airflow-core")  # 3.x's core, absent on 2.x
    assert after["strm-airflow-provider"] == "0.1.0"
    assert "apache-airflow-providers-amazon" in after

    home = tmp_path / "home"
    airflow_env = {
        "PATH": f"{env / 'bin'}:{os.environ['PATH']}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    providers = run(
        str(env / "bin" / "airflow"), "providers", "get", "strm-airflow-provider", "-o", "json", env=airflow_env
    )
    assert '"strm-airflow-provider"' in providers
    hooks = run(str(env / "bin" / "airflow"), "providers", "hooks", "-o", "json", env=airflow_env)
    for conn_type in ("strm_s3", "strm_s3_compatible", "strm_gcs", "strm_azure_blob", "strm_kafka"):
        assert f'"{conn_type}"' in hooks, conn_type
    written = run(str(env / "bin" / "strm"), "install-dag", str(home / "dags"), env=airflow_env)
    assert written.startswith(f"Wrote {home / 'dags' / 'strm_exporters.py'}")
