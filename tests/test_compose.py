"""The production-shaped ``docker-compose.yaml``: a compose client accepts it, and every service is runnable.

No Docker engine runs here, so nothing is started: ``docker compose config`` (or Debian's
``docker-compose`` 1.29, which ``make system-deps`` installs) resolves the file as compose would, and
the tests check the resolved services: each has a command (or an image default named below), a
healthcheck (one-shot services are awaited with ``service_completed_successfully`` instead) and the
environment it needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yaml"
#: the secrets compose must refuse to start without (all come from the environment)
SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": "x" * 43 + "=",
    "AIRFLOW_JWT_SECRET": "jwt-test-secret",
    "AIRFLOW_API_SECRET_KEY": "api-test-secret",
    "MINIO_ROOT_PASSWORD": "minio-test-secret",
    "EXPORTER_SECRET_KEY": "exporter-test-secret",
}
#: services that run their image's default command, and what that is
IMAGE_DEFAULT_COMMAND = {
    "postgres": "postgres (the postgres image's CMD)",
    "kafka": "/etc/kafka/docker/run (the apache/kafka image's CMD, configured by KAFKA_* variables)",
}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
    "demo-producer",
}
#: the environment each kind of service cannot run without
REQUIRED_ENV = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    "redis": {"REDIS_PORT"},
    "kafka": {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
    },
    "minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
    "minio-init": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "BUCKET", "EXPORTER_ACCESS_KEY", "EXPORTER_SECRET_KEY"},
    **{
        name: {
            "AIRFLOW__CORE__EXECUTOR",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CELERY__BROKER_URL",
            "AIRFLOW__CELERY__RESULT_BACKEND",
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "STRM_EXPORTERS_DIR",
            "AIRFLOW_CONN_STRM_KAFKA_DEFAULT",
        }
        for name in AIRFLOW_SERVICES
    },
}


def compose_client() -> list[str]:
    """``docker compose`` (v2 plugin) when it works, else ``docker-compose``; fail with the fix when neither."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("no compose client: run `make system-deps` (apt-get install docker-compose)")


def run_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [*compose_client(), "--project-directory", str(REPO), "-f", str(COMPOSE), "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@cache
def resolved() -> dict[str, Any]:
    done = run_config(SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def services() -> dict[str, dict[str, Any]]:
    return resolved()["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> str:
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        parts.append(" ".join(value) if isinstance(value, list) else str(value or ""))
    return " ".join(parts).strip()


def one_shot(name: str) -> bool:
    """A service others wait for to *complete* (init jobs): it exits, so it has no healthcheck."""
    return any(
        (dep.get("condition") if isinstance(dep, dict) else None) == "service_completed_successfully"
        for other in services().values()
        for dep_name, dep in _deps(other).items()
        if dep_name == name
    )


def _deps(service: dict[str, Any]) -> dict[str, Any]:
    deps = service.get("depends_on") or {}
    return {name: {} for name in deps} if isinstance(deps, list) else deps


def test_compose_client_accepts_the_file() -> None:
    names = set(services())
    assert names == {"postgres", "redis", "kafka", "minio", "minio-init"} | AIRFLOW_SERVICES


def test_compose_refuses_to_start_without_the_secrets_from_the_environment() -> None:
    for missing in SECRETS:
        done = run_config({k: v for k, v in SECRETS.items() if k != missing})
        assert done.returncode != 0, f"compose accepted the file without {missing}"
        assert missing in done.stderr
    raw = COMPOSE.read_text()
    for secret in SECRETS.values():
        assert secret not in raw


@pytest.mark.parametrize("name", sorted({"postgres", "redis", "kafka", "minio", "minio-init"} | AIRFLOW_SERVICES))
def test_every_service_has_a_command_a_healthcheck_and_its_env(name: str) -> None:
    service = services()[name]
    assert command_of(service) or name in IMAGE_DEFAULT_COMMAND, f"{name}: no command and no known image default"
    if one_shot(name):
        assert service.get("restart") == "no", f"{name}: a one-shot service must not restart"
        assert not service.get("healthcheck")
    else:
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"] and not service["healthcheck"].get("disable"), f"{name}: no healthcheck"
    missing = REQUIRED_ENV[name] - {k for k, v in env_of(service).items() if v}
    assert not missing, f"{name}: environment lacks {sorted(missing)}"


def test_dependencies_exist_and_are_awaited_by_health_or_completion() -> None:
    for name, service in services().items():
        for dep, spec in _deps(service).items():
            assert dep in services(), f"{name} depends on unknown {dep}"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert services()[dep].get("healthcheck"), f"{name} waits for {dep}'s health, which has no check"
            else:
                assert condition == "service_completed_successfully" and one_shot(dep)


def test_airflow_runs_celery_on_postgres_and_redis_with_two_distinct_workers() -> None:
    for name in AIRFLOW_SERVICES:
        env = env_of(services()[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
        assert env["AIRFLOW__CORE__FERNET_KEY"] == SECRETS["AIRFLOW__CORE__FERNET_KEY"]
        assert services()[name]["build"]["dockerfile"].endswith("docker/Dockerfile")
    workers = [n for n in services() if n.startswith("airflow-worker-")]
    hostnames = {re.search(r"--celery-hostname (\S+)", command_of(services()[n])).group(1) for n in workers}
    assert len(workers) == 2 and len(hostnames) == 2
    assert all(command_of(services()[n]).startswith("celery worker") for n in workers)
    for name, command in {"airflow-scheduler": "scheduler", "airflow-apiserver": "api-server"}.items():
        assert command_of(services()[name]) == command
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.3\.\d+", dockerfile, re.M)
    assert "pip install --no-cache-dir --no-deps /opt/strm-airflow-provider " in dockerfile
    locked = (REPO / "docker" / "requirements.txt").read_text()
    for package in (
        "apache-airflow-providers-celery",
        "psycopg2-binary",
        "boto3",
        "google-cloud-storage",
        "azure-storage-blob",
    ):
        assert f"\n{package}==" in locked, package  # every data connector type, Celery and PostgreSQL


def test_kafka_runs_in_kraft_mode_without_zookeeper() -> None:
    kafka = services()["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env_of(kafka)["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in COMPOSE.read_text().lower()


def test_the_demo_exporter_is_created_with_the_cli_and_fed_by_a_producer() -> None:
    init = command_of(services()["airflow-init"])
    assert "airflow db migrate" in init
    assert "strm create data-connector s3 minio strmprivacy-export-demo" in init
    assert "strm create batch-exporter demo" in init and "--data-connector minio" in init
    assert command_of(services()["demo-producer"]).startswith("strm simulate random-events demo")
    policy = command_of(services()["minio-init"])
    assert "s3:GetBucketLocation" in policy and "s3:PutObject" in policy and "/events/*.jsonl" in policy


def test_the_image_installs_the_locked_versions_and_owns_the_exporters_folder() -> None:
    """The image runs what the tests ran: the lock exported, installed without resolving again."""
    exported = subprocess.run(
        [str(REPO / ".tools" / "bin" / "uv"), "export", "--frozen", "--no-dev", "--group", "deploy",
         "--all-extras", "--no-emit-project", "--no-hashes", "--quiet"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    committed = (REPO / "docker" / "requirements.txt").read_text()
    body = [line for line in committed.splitlines() if not line.startswith("#")]
    assert body == [line for line in exported.splitlines() if not line.startswith("#")], (
        "docker/requirements.txt is stale: re-export it from uv.lock (see its first lines)"
    )
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --no-deps -r /opt/strm-airflow-provider/docker/requirements.txt" in dockerfile
    assert "mkdir -p /opt/airflow/exporters" in dockerfile
    # the DAG file comes from the installed package; the repository's dags/ holds only a symlink to it,
    # which would dangle in a container that mounted the folder
    assert "RUN strm install-dag /opt/airflow/dags" in dockerfile
    assert not any(
        volume.startswith("./dags")
        for service in yaml.safe_load(COMPOSE.read_text())["services"].values()
        for volume in service.get("volumes", [])
    )
    assert "!docker/requirements.txt" in (REPO / "docker" / "Dockerfile.dockerignore").read_text()
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "exporters:/opt/airflow/exporters" in services["airflow-init"]["volumes"]
