"""``make up`` / ``make down``: a live local stack on 127.0.0.1, as users run Airflow.

``up`` starts, each as a detached process with a PID file under ``.stack/pids/``:

- ``broker``: Apache Kafka (one KRaft node, fetched by ``make kafka``), data in ``.stack/kafka``;
- ``s3``: moto_server (S3 + IAM, policies enforced), a bucket and an IAM user holding only the
  minimal policy of the README, its key in ``.stack/s3.json`` (what ``aws iam create-access-key`` prints);
- ``registry``: a Schema Registry with Confluent's REST API (:mod:`devstack.schema_registry`), its schemas in
  ``.stack/schema-registry.json``, so the ids in the broker's records still resolve after ``down`` and ``up``;
- ``airflow``: ``airflow standalone`` (API server + UI, scheduler, DAG processor, triggerer; on Airflow 2 the
  webserver + UI, the scheduler with its own DAG file processor, the triggerer) of the Airflow line whose
  Python runs this script, with ``AIRFLOW_HOME=.stack/airflow``, the repo's ``dags/`` and
  ``STRM_EXPORTERS_DIR=.stack/exporters``, and one task log server (what the UI and ``strm logs`` read a
  running task's log from);
- ``producer``: ``strm simulate random-events demo``, continuously;

and creates the Kafka connection (with the registry as ``schema_registry_url``), the data connector ``s3``
and the batch exporter ``s3-demo`` (JSON events, every 30 s). ``stack.json``'s
``airflow`` tells clients the Airflow version, URL, login and REST API (``/api/v2`` with a JWT from
``/auth/token`` on Airflow 3, ``/api/v1`` with basic auth on Airflow 2). Files then
appear in the bucket every interval with nobody touching anything. Every listening socket is on
127.0.0.1; ``.stack/env`` gives a shell the ``strm`` CLI on the stack and nothing else.

``down`` stops exactly the processes ``up`` started (the PID files, and their descendants), and
keeps the state (Airflow's database, the broker's data) for the next ``up``. S3 lives in memory:
each ``up`` starts with an empty bucket and a fresh key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from packaging.version import Version

from devstack import free_port
from devstack.airflow import airflow_env
from strm_provider.naming import EXTENSIONS, is_data_file
from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS, AIRFLOW_VERSION

REPO = Path(__file__).resolve().parent.parent

VENV_BIN = Path(sys.executable).parent
BUCKET = "strmprivacy-export-demo"
REGION = "eu-west-1"
STREAM = "demo"
CONNECTOR = "s3"
PREFIX = "events"
#: what the exporters' key may write under PREFIX: the files of any ``compression``
ENDINGS = tuple(EXTENSIONS.values())
INTERVAL = "30s"
PARTITIONS = 5
USER = "admin"
#: the most Celery workers ``up --workers`` starts
MAX_WORKERS = 4
WORKER_NAMES = tuple(f"worker-{n}" for n in range(1, MAX_WORKERS + 1))
#: stop order: what feeds others stops first; the Celery workers before the scheduler, PostgreSQL and Redis
#: (the Celery stack's metadata database and broker) after everything of Airflow's
PROCESSES = ("producer", *WORKER_NAMES, "airflow", "postgres", "redis", "registry", "s3", "broker")
#: the Celery stack's metadata database (on PostgreSQL, which the CeleryExecutor needs; SQLite takes one
#: writer at a time) and the tasks' concurrency on each worker (the LocalExecutor's parallelism, shared)
CELERY_DATABASE = "airflow"
WORKER_CONCURRENCY = 2
#: environment variable holding the token that marks a process (and its children) as started by ``up``
TOKEN_VAR = "STRM_STACK_TOKEN"
#: ``logs``: the task log server, for the worker's and the triggerer's logs (Airflow's 8793 and 8794 in one);
#: ``registry``: the Schema Registry, on Confluent's port
DEFAULT_PORTS = {"ui": 8080, "kafka": 9092, "s3": 9000, "logs": 8793, "registry": 8081}
#: Airflow settings of the caller that the stack's processes keep
PASSED_SETTINGS = ("AIRFLOW__METRICS__", "AIRFLOW__OPENLINEAGE__")
#: settings of :meth:`Stack.env` a shell needs for ``strm`` on the stack: its Airflow (home, with the
#: Fernet key of the connections, database and DAGs folder), the exporters folder, and the log server's
#: port, where ``strm logs`` reads a running task's log
CLI_SETTINGS = (
    "AIRFLOW_HOME",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "STRM_EXPORTERS_DIR",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
)
#: ``airflow standalone``'s components that start a log server of their own; Airflow binds it to every
#: interface (0.0.0.0/[::], 8793 and 8794) and has no setting for its host, so they skip it
SKIP_SERVE_LOGS = ("scheduler", "triggerer")
#: Airflow signs its JWTs with HS512 when given a secret (``[api_auth] jwt_algorithm`` unset), and PyJWT
#: warns (``InsecureKeyLengthWarning``) below the hash's size, 64 bytes; Airflow's generated secrets have 24
MIN_SECRET_BYTES = 64
#: ``[section] option`` of Airflow's secrets: the task JWTs and the log server's tokens (Airflow 3), the
#: webserver's sessions and the log server's tokens (Airflow 2)
AIRFLOW_SECRETS = (
    (("api_auth", "jwt_secret"), ("api", "secret_key")) if AIRFLOW_V_3_0_PLUS else (("webserver", "secret_key"),)
)
#: the REST API: Airflow 3's takes a JWT from ``/auth/token``, Airflow 2's (with the FAB auth manager) basic auth
API = "/api/v2" if AIRFLOW_V_3_0_PLUS else "/api/v1"
#: where the API server (Airflow 3) or the webserver (Airflow 2) reports its components' health
HEALTH = f"{API}/monitor/health" if AIRFLOW_V_3_0_PLUS else "/health"
#: the components that must report ``healthy``; Airflow 2's scheduler parses the DAG files itself (its
#: ``dag_processor`` entry has no status unless a standalone DAG processor runs), so its health covers that
COMPONENTS = ("metadatabase", "scheduler", "triggerer", *(("dag_processor",) if AIRFLOW_V_3_0_PLUS else ()))


# ----- small helpers ------------------------------------------------------------------------------
def say(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def port_open(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(what: str, check: Any, timeout: float, proc: psutil.Process | None = None) -> Any:
    """Poll ``check()`` until it returns something truthy; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if proc is not None and not proc.is_running():
            raise SystemExit(f"[stack] {what}: the process exited; see its log under .stack/logs/")
        time.sleep(0.5)
    raise SystemExit(f"[stack] {what}: not ready after {timeout:.0f}s; see the logs under .stack/logs/")


class Stack:
    """Paths, ports and processes of one stack directory (``.stack/`` for ``make up``)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.home = self.root / "airflow"
        self.exporters = self.root / "exporters"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.state_file = self.root / "stack.json"

    # ----- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {}

    @property
    def ports(self) -> dict[str, int]:
        return self.state().get("ports", {})

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ui']}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['registry']}"

    @property
    def password_file(self) -> Path:
        """``{"admin": password}``: Airflow 3's simple auth manager reads it; on Airflow 2 (FAB auth manager)
        it is the stack's own, and ``airflow-standalone`` gives the FAB user ``admin`` its password (not
        ``standalone_admin_password.txt``, whose password ``airflow standalone`` prints into its log)."""
        if AIRFLOW_V_3_0_PLUS:
            return self.home / "simple_auth_manager_passwords.json.generated"
        return self.home / "stack_admin_password.json"

    @property
    def password(self) -> str:
        return json.loads(self.password_file.read_text())[USER]

    def airflow_info(self) -> dict[str, str]:
        """``stack.json``'s ``airflow``: what a client of the stack (``strm``, a browser, a test) needs on every
        Airflow line: the UI's URL, the login and the REST API's path with how it authenticates."""
        return {
            "version": str(AIRFLOW_VERSION),
            "url": self.ui_url,
            "user": USER,
            "password": self.password,
            "api": API,
            "auth": "jwt" if AIRFLOW_V_3_0_PLUS else "basic",
        }

    def env(self) -> dict[str, str]:
        """The environment of every Airflow and ``strm`` process of the stack (:data:`CLI_SETTINGS` of it
        also go to ``.stack/env``)."""
        ui = self.ports["ui"]
        logs = str(self.ports["logs"])
        if AIRFLOW_V_3_0_PLUS:
            server = {
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(ui),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{ui}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ui}/execution/",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            }
        else:
            server = {
                "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(ui),
                "AIRFLOW__WEBSERVER__BASE_URL": f"http://127.0.0.1:{ui}",
                "AIRFLOW__WEBSERVER__WORKERS": "2",  # gunicorn's; each holds the whole Flask app
                # the REST API with the login's basic auth (clients of the stack), and the UI's session
                "AIRFLOW__API__AUTH_BACKENDS": ",".join(
                    f"airflow.providers.fab.auth_manager.api.auth.backend.{backend}"
                    for backend in ("basic_auth", "session")
                ),
                # the scheduler's own DAG file processor
                "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "30",
            }
        return {
            **airflow_env(self.home, self.exporters),
            "AIRFLOW__CORE__PARALLELISM": "4",  # LocalExecutor forks this many workers
            **self.celery_env(),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            # backport of apache/airflow#73298: the UI's Test button on connections without a port
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "docker" / "airflow_plugins"),
            **server,
            # one log server on 127.0.0.1 (see airflow_standalone), at the address Airflow builds from a
            # task's hostname: 127.0.0.1, not the machine's name, which may resolve to another interface
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": logs,
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": logs,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.airflow.loopback_hostname",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def celery_env(self) -> dict[str, str]:
        """The CeleryExecutor's settings when ``up --workers`` chose it (``stack.json``'s ``celery``); the metadata
        database on PostgreSQL when ``up --database postgres`` chose it; else none."""
        celery, postgres = self.state().get("celery"), self.state().get("postgres")
        if not celery:
            if not postgres:
                return {}
            url = f"postgresql+psycopg2://postgres@127.0.0.1:{postgres}/{CELERY_DATABASE}"
            return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
        database = f"postgresql+psycopg2://postgres@127.0.0.1:{celery['postgres']}/{CELERY_DATABASE}"
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{celery['redis']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": database.replace("postgresql+psycopg2", "db+postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        }

    @property
    def workers(self) -> int:
        return int((self.state().get("celery") or {}).get("workers", 0))

    def shell_env(self) -> str:
        """``.stack/env``: :data:`CLI_SETTINGS`, added to a user's shell by ``source``; the rest of it stays.

        The venv goes before ``PATH`` (as ``source .venv/bin/activate`` does: ``strm`` and ``python``, which the
        README's commands call by name, are the venv's), and loopback is added to the shell's ``NO_PROXY``: a
        proxy of the user's must not get the CLI's requests to the stack's S3. ``NO_PROXY="*"`` stays with the
        stack's processes (:func:`devstack.airflow.airflow_env`).
        """
        env = self.env()
        loopback = "127.0.0.1,localhost"
        lines = [
            f"# Written by `make up`: `source {shown(self.root / 'env')}` gives a shell the `strm` CLI on the stack.",
            "# It sets the stack's Airflow (AIRFLOW_HOME, its database, DAGs folder and log server port) and",
            f"# exporters folder (STRM_EXPORTERS_DIR), puts {VENV_BIN} before your PATH and adds {loopback}",
            "# to your NO_PROXY/no_proxy; nothing else of your shell changes.",
            *(f"export {key}={shlex.quote(env[key])}" for key in CLI_SETTINGS),
            f'export PATH={shlex.quote(str(VENV_BIN))}:"$PATH"',
            *(f'export {var}="${{{var}:+${var},}}{loopback}"' for var in ("NO_PROXY", "no_proxy")),
        ]
        return "\n".join(lines) + "\n"

    def full_env(self) -> dict[str, str]:
        """The caller's environment without its Airflow/STRM settings (another AIRFLOW_HOME, database or
        ``AIRFLOW_CONN_*`` would leak into the stack), plus the stack's own. Metrics and lineage settings
        pass (``AIRFLOW__METRICS__*``, ``AIRFLOW__OPENLINEAGE__*``): point the stack at your StatsD or
        OpenLineage backend with them."""
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "STRM_")) or k.startswith(PASSED_SETTINGS)
        }
        return {**inherited, **self.env()}

    # ----- processes --------------------------------------------------------------------------
    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def process(self, name: str) -> psutil.Process | None:
        """The live process ``name`` recorded in its PID file, if it is still the one we started.

        Ours carry the token of their PID file in their environment (:data:`TOKEN_VAR`): unlike a start
        time, which psutil gives in wall-clock seconds and which moves when the clock is stepped (NTP,
        suspend/resume), a token cannot match a process that merely reuses the PID.
        """
        path = self.pid_file(name)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        try:
            proc = psutil.Process(record["pid"])
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if proc.environ().get(TOKEN_VAR) != record["token"]:
                return None  # the PID was reused by something else: not ours
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or another user's: not ours
            return None

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None, **popen: Any) -> psutil.Process:
        """Start ``cmd`` detached (own session, output to ``.stack/logs/<name>.log``) and record its PID;
        ``popen``: more of :class:`subprocess.Popen`'s arguments (``user``, ``group``)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        with (self.logs / f"{name}.log").open("ab") as log:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
                env={**(env or self.full_env()), TOKEN_VAR: token},
                **popen,
            )
        self.pid_file(name).write_text(json.dumps({"pid": popen.pid, "token": token, "cmd": cmd}) + "\n")
        return psutil.Process(popen.pid)

    def stop(self, name: str, timeout: float = 20.0) -> bool:
        """Stop process ``name`` and every process it started (SIGTERM, then SIGKILL).

        The PID file goes only once none of them is left: a ``down`` that could not stop everything
        can be run again.
        """
        proc = self.process(name)
        if proc is None:
            self.pid_file(name).unlink(missing_ok=True)
            return False
        try:
            family = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGTERM)
        _gone, alive = psutil.wait_procs(family, timeout=timeout)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        _gone, alive = psutil.wait_procs(alive, timeout=10)
        if alive:
            say(f"{name}: pid(s) {', '.join(str(p.pid) for p in alive)} still running after SIGKILL; run down again")
        else:
            self.pid_file(name).unlink(missing_ok=True)
        return True

    def running(self) -> dict[str, psutil.Process]:
        return {name: proc for name in PROCESSES if (proc := self.process(name)) is not None}

    def memory(self) -> tuple[int, int, int]:
        """(processes, RSS sum, PSS sum) in bytes over the stack's processes and their descendants.

        RSS counts pages shared by forked workers once per process; PSS splits them, so it is what
        the stack really takes.
        """
        seen: dict[int, tuple[int, int]] = {}
        for proc in self.running().values():
            with contextlib.suppress(psutil.NoSuchProcess):
                for member in [proc, *proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        info = member.memory_full_info()
                        seen[member.pid] = (info.rss, info.pss)
        return len(seen), sum(r for r, _ in seen.values()), sum(p for _, p in seen.values())


# ----- the services -------------------------------------------------------------------------------
def choose_ports(requested: str) -> dict[str, int]:
    """Fixed defaults (:data:`DEFAULT_PORTS`, each overridable by ``STACK_<NAME>_PORT``) or, with ``--ports
    auto``, free ones."""
    if requested == "auto":
        ports: dict[str, int] = {}
        while len(set(ports.values())) < len(DEFAULT_PORTS):  # free_port may hand out one twice
            ports = {name: free_port() for name in DEFAULT_PORTS}
        return ports
    ports = {name: int(os.environ.get(f"STACK_{name.upper()}_PORT", port)) for name, port in DEFAULT_PORTS.items()}
    busy = [f"{name} port {port}" for name, port in ports.items() if port_open(port)]
    shared = sorted({port for port in ports.values() if list(ports.values()).count(port) > 1})
    busy += [f"{' and '.join(n for n, p in ports.items() if p == port)} port {port}" for port in shared]
    if busy:
        names = " / ".join(f"STACK_{name.upper()}_PORT" for name in DEFAULT_PORTS)
        raise SystemExit(
            f"[stack] {', '.join(busy)} already in use on 127.0.0.1 or chosen twice; stop what uses it, or choose "
            f"others with {names} (or: scripts/stack.py up --ports auto)"
        )
    return ports


def start_broker(stack: Stack) -> None:
    """Apache Kafka, one KRaft node; a later ``up`` restarts it on the same log dirs."""
    from devstack.apache_kafka import VERSION, Listeners, controller_port, prepare, wait_ready

    port = stack.ports["kafka"]
    data = stack.root / "kafka"
    proc = stack.spawn("broker", prepare(data, Listeners(port, controller_port(data))))
    wait_until("Kafka broker", lambda: port_open(port), 60, proc)
    wait_ready(f"127.0.0.1:{port}", 60, proc.is_running, stack.logs / "broker.log")
    say(f"Apache Kafka {VERSION} on 127.0.0.1:{port} (data in {data})")


def start_s3(stack: Stack) -> None:
    """moto_server, a bucket in eu-west-1, an admin key (for ``ls``) and a least-privilege exporter key."""
    from devstack.moto import enforce_iam, provision

    port = stack.ports["s3"]
    proc = stack.spawn("s3", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])
    wait_until("S3 server", lambda: port_open(port), 30, proc)
    target = provision(stack.s3_url, BUCKET)
    # the README's minimal policy with every ending an exporter may write, so compression can be tried here
    write_secret(stack.root / "s3.json", {"AccessKey": target.user_for(PREFIX, endings=ENDINGS)})
    write_secret(stack.root / "s3-admin.json", target.admin)
    enforce_iam(stack.s3_url)
    say(f"S3 (moto_server, IAM enforced) on {stack.s3_url}, bucket {BUCKET}")


def start_registry(stack: Stack) -> None:
    """The Schema Registry (standard library, fastavro, protobuf and jsonschema: it runs on every Airflow line's
    Python), its schemas in ``schema-registry.json``: the broker keeps records framed with their ids."""
    port = stack.ports["registry"]
    data = stack.root / "schema-registry.json"
    cmd = [sys.executable, "-m", "devstack.schema_registry", "--port", str(port), "--data", str(data)]
    proc = stack.spawn("registry", cmd)
    wait_until("Schema Registry", lambda: port_open(port), 30, proc)
    write_state(stack, schema_registry={"url": stack.registry_url, "data": str(data)})
    say(f"Schema Registry on {stack.registry_url} (schemas in {data})")


def start_postgres(stack: Stack, port: int) -> None:
    """PostgreSQL for the Celery stack's metadata database and results, data in ``.stack/postgres`` (kept
    across ``up``s). The server refuses to run as root: then as the ``postgres`` account of Debian's package
    (``make system-deps``), which owns the data folder."""
    from devstack.postgres import pg_bin

    account: dict[str, Any] = {}
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        account = {"user": entry.pw_uid, "group": entry.pw_gid}
    data = stack.root / "postgres"
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if account:
            os.chown(data, account["user"], account["group"])
        subprocess.run(
            [pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, cwd=data, **account,
        )  # fmt: skip
    cmd = [pg_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)]
    proc = stack.spawn("postgres", [*cmd, "-c", "max_connections=200"], **account)
    wait_until("PostgreSQL", lambda: port_open(port), 60, proc)
    import psycopg2

    conn = wait_until("PostgreSQL", lambda: _pg_connect(port), 60, proc)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (CELERY_DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{CELERY_DATABASE}"')
    finally:
        conn.close()
    say(f"PostgreSQL on 127.0.0.1:{port} (data in {data}), psycopg2 {psycopg2.__version__.split()[0]}")


def _pg_connect(port: int) -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=port, user="postgres")
    except psycopg2.OperationalError:  # still starting
        return None
    conn.autocommit = True
    return conn


def start_redis(stack: Stack, port: int) -> None:
    """Redis, the Celery broker: in memory only (queued tasks do not outlive ``down``)."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("[stack] redis-server not found: run `make system-deps` (Debian package redis-server)")
    folder = stack.root / "redis"
    folder.mkdir(exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = stack.spawn("redis", under_shell(cmd))
    wait_until("Redis", lambda: port_open(port), 30, proc)
    say(f"Redis on 127.0.0.1:{port} (the Celery broker)")


def under_shell(cmd: list[str]) -> list[str]:
    """``cmd`` as the child of a shell that stays. Redis and Celery write their process titles over their
    environment, where :meth:`Stack.process` looks for the PID file's token; the shell's stays readable, and
    ``down`` stops the shell with its descendants."""
    return ["sh", "-c", '"$@"; exit $?', cmd[0], *cmd]


def start_workers(stack: Stack, count: int) -> None:
    """``airflow celery worker``, ``count`` times with distinct names (``worker-1@host`` …). Their tasks' logs
    land in the stack's log folder, which its one log server serves, so they serve none themselves."""
    for name in WORKER_NAMES[:count]:
        cmd = [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
        stack.spawn(name, under_shell(cmd))
    say(f"{count} Celery worker(s), {WORKER_CONCURRENCY} tasks at a time each: {', '.join(WORKER_NAMES[:count])}")


def worker_tasks(stack: Stack) -> dict[str, int]:
    """Tasks each Celery worker received so far (its log's ``received`` lines): how the load spreads."""
    counts: dict[str, int] = {}
    for name in WORKER_NAMES[: stack.workers]:
        log = stack.logs / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        counts[name] = len(re.findall(r"Task \S+\[[0-9a-f-]+\] received", text))
    return counts


def write_state(stack: Stack, **values: Any) -> None:
    """Add ``values`` to ``stack.json`` (readable only by its owner: its ``airflow`` holds the login)."""
    write_secret(stack.state_file, {**stack.state(), **values})


def write_secret(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` as JSON into ``path``, readable only by its owner from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(value, indent=2, default=str) + "\n")


def airflow(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "airflow"), *args], env=stack.full_env(), capture_output=True, text=True, check=check
    )


def strm_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "strm"), *args]


def launch(stack: Stack, cmd: list[str]) -> subprocess.Popen[str]:
    """Start a CLI command in the background (each one imports Airflow: seconds of CPU, so overlap them)."""
    return subprocess.Popen(cmd, env=stack.full_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], what: str, check: bool = True) -> tuple[int, str]:
    out, _ = proc.communicate()
    if proc.returncode == 0:
        say(what)
    elif check:
        raise SystemExit(f"[stack] {what} failed:\n{out.strip()}")
    return proc.returncode, out


def prepare(stack: Stack) -> None:
    """Airflow's database, the Kafka connection and, as a user would create it, the data connector
    (``strm create data-connector`` with ``s3.json``)."""
    stack.home.mkdir(parents=True, exist_ok=True)
    stack.exporters.mkdir(parents=True, exist_ok=True)
    if not stack.password_file.exists():  # our own, so standalone never prints a password into its log
        write_secret(stack.password_file, {USER: secrets.token_urlsafe(12)})
    airflow(stack, "db", "migrate")  # also writes airflow.cfg, the first time
    strengthen_secrets(stack.home / "airflow.cfg")
    kafka = {"conn_type": "strm_kafka", "host": f"127.0.0.1:{stack.ports['kafka']}"}
    extra = {"security_protocol": "PLAINTEXT", "schema_registry_url": stack.registry_url}
    conns = stack.root / "connections.json"
    write_secret(conns, {"strm_kafka_default": {**kafka, "extra": json.dumps(extra)}})
    create = strm_cmd(
        "create", "data-connector", "s3", CONNECTOR, BUCKET, f"--credentials-file={stack.root / 's3.json'}",
        f"--endpoint-url={stack.s3_url}", f"--test-prefix={PREFIX}",
    )  # fmt: skip
    shown_create = "$ " + " ".join(["strm", *create[1:]]).replace(
        str(stack.root / "s3.json"), shown(stack.root / "s3.json")
    )
    try:
        # one after the other: two CLIs writing the SQLite database at once can trip each other up
        importing = launch(stack, [str(VENV_BIN / "airflow"), "connections", "import", "--overwrite", str(conns)])
        finish(
            importing,
            f"connection strm_kafka_default: the broker on {kafka['host']}, the registry on {stack.registry_url}",
        )
        code, out = finish(launch(stack, create), shown_create, check=False)
    finally:
        conns.unlink()
    if code and "already exists" in out:
        # made by a previous ``up``; S3 lives in memory, so this one has a new key: replace it (and its exporter)
        finish(launch(stack, strm_cmd("delete", "data-connector", CONNECTOR, "--recursive")), "(replacing the old one)")
        finish(launch(stack, create), shown_create)
    elif code:
        raise SystemExit(f"[stack] {shown_create} failed:\n{out.strip()}")


def create_stream(stack: Stack) -> None:
    """``strm create stream``: the Kafka topic the demo exports (kept by the broker across ``up``s)."""
    shown = f"$ strm create stream {STREAM} --partitions {PARTITIONS}"
    code, out = finish(
        launch(stack, strm_cmd("create", "stream", STREAM, "--partitions", str(PARTITIONS))), shown, False
    )
    if code and "exists" not in out:
        raise SystemExit(f"[stack] {shown} failed:\n{out.strip()}")


def create_exporter(stack: Stack, interval: str) -> None:
    """``strm create batch-exporter``: the YAML file the DAG processor turns into a DAG (unpaused)."""
    args = ("--data-connector", CONNECTOR, "--path-prefix", PREFIX, "--interval", interval)
    shown = f"$ strm create batch-exporter {STREAM} {' '.join(args)}"
    code, out = finish(launch(stack, strm_cmd("create", "batch-exporter", STREAM, *args)), shown, check=False)
    if code and "exists" not in out:
        raise SystemExit(f"[stack] {shown} failed:\n{out.strip()}")


def strengthen_secrets(config: Path) -> None:
    """Give Airflow's config file secrets of :data:`MIN_SECRET_BYTES`, where it has shorter ones.

    Airflow writes its secrets into ``airflow.cfg`` when it creates the file, 24 bytes long; a ``.stack/``
    of an earlier ``make up`` has those, so each ``up`` checks. In the file, not in the stack's
    environment: an ``airflow`` command run with the stack's ``AIRFLOW_HOME`` signs with the same keys.
    """
    lines = config.read_text().splitlines(keepends=True)
    section = ""
    headers: dict[str, int] = {}  # section -> the line of its header
    found: set[tuple[str, str]] = set()
    for index, line in enumerate(lines):
        if header := re.fullmatch(r"\[(\w+)\]\s*", line):
            section = header[1]
            headers[section] = index
        elif (option := re.fullmatch(r"(\w+) = (.*?)\s*", line)) and (section, option[1]) in AIRFLOW_SECRETS:
            found.add((section, option[1]))
            if len(option[2].encode()) < MIN_SECRET_BYTES:
                lines[index] = f"{option[1]} = {secrets.token_urlsafe(MIN_SECRET_BYTES)}\n"
    # an option missing from the file would make each Airflow process generate a short one of its own
    missing = [pair for pair in AIRFLOW_SECRETS if pair not in found]
    for section, option in sorted(missing, key=lambda pair: headers.get(pair[0], -1), reverse=True):  # last first
        new = f"{option} = {secrets.token_urlsafe(MIN_SECRET_BYTES)}\n"
        if section in headers:
            lines.insert(headers[section] + 1, new)
        else:
            lines += [f"\n[{section}]\n", new]
    config.write_text("".join(lines))


def log_server_cmd(port: str) -> list[str]:
    """The task log server of Airflow's own (the app the scheduler and triggerer would serve), on 127.0.0.1:
    an ASGI app under uvicorn from Airflow 3.1, a Flask app under gunicorn before."""
    if AIRFLOW_V_3_1_PLUS:
        return [sys.executable, "-m", "uvicorn", "--factory", "airflow.utils.serve_logs.log_server:get_app",
                "--host", "127.0.0.1", "--port", port, "--no-access-log"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "airflow.utils.serve_logs:create_app()"]  # fmt: skip


def fab_admin(password: str) -> None:
    """Airflow 2: the FAB user ``admin`` with the stack's password, created or reset before ``airflow
    standalone`` looks for it. It then finds the user and no ``standalone_admin_password.txt``, so it
    neither makes a password of its own nor prints one into its log; the password is never on a command line."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        security = appbuilder.sm
        user = security.find_user(USER)
        if user is None:
            role = security.find_role("Admin")
            if not security.add_user(USER, "Admin", "User", "admin@example.com", role, password):
                raise SystemExit(f"[stack] could not create the Airflow user {USER}")
        else:
            security.reset_password(user.id, password)


def airflow_standalone(password_file: Path) -> None:
    """``airflow standalone``, with one task log server on 127.0.0.1 instead of its components' own.

    Its scheduler and triggerer would each start one on every interface (:data:`SKIP_SERVE_LOGS`), so
    they start with ``--skip-serve-logs``; the log server of Airflow's own (the app they would serve)
    runs beside them on the stack's ``logs`` port, for both, as they read the same folder.
    """
    from airflow.__main__ import main as airflow_main
    from airflow.cli.commands import standalone_command

    class SubCommand(standalone_command.SubCommand):
        def __init__(self, parent: Any, name: str, command: list[str], env: dict[str, str]) -> None:
            skip = ["--skip-serve-logs"] if name in SKIP_SERVE_LOGS else []
            super().__init__(parent, name=name, command=[*command, *skip], env=env)

    standalone_command.SubCommand = SubCommand
    if os.environ.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor":

        class Standalone(standalone_command.StandaloneCommand):
            """``airflow standalone`` forces the LocalExecutor on its components; the Celery stack keeps its own
            (its workers run beside it)."""

            def calculate_env(self) -> dict[str, str]:
                return {**super().calculate_env(), "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}

            def print_output(self, name: str, output: Any) -> None:
                if "Forcing executor" not in str(output):
                    super().print_output(name, output)

        standalone_command.StandaloneCommand = Standalone  # type: ignore[misc]
    if not AIRFLOW_V_3_0_PLUS:
        fab_admin(json.loads(password_file.read_text())[USER])
    log_server = subprocess.Popen(log_server_cmd(os.environ["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]))
    sys.argv = ["airflow", "standalone"]
    try:
        airflow_main()
    finally:
        log_server.terminate()


def start_airflow(stack: Stack) -> psutil.Process:
    return stack.spawn(
        "airflow",
        [sys.executable, str(Path(__file__).resolve()), "airflow-standalone", "--root", str(stack.root)],
    )


def airflow_health(stack: Stack) -> bool:
    """All of :data:`COMPONENTS` report ``healthy`` (parsed, not grepped)."""
    try:
        health = httpx.get(f"{stack.ui_url}{HEALTH}", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return all((health.get(part) or {}).get("status") == "healthy" for part in COMPONENTS)


def start_producer(stack: Stack, rate: float) -> None:
    stack.spawn("producer", [str(VENV_BIN / "strm"), "simulate", "random-events", STREAM, "--rate", f"{rate:g}"])
    say(f"$ strm simulate random-events {STREAM} --rate {rate:g}  (continuously)")


def admin_s3(stack: Stack) -> Any:
    """An S3 client with the stack's admin key (the exporter's key may only write)."""
    from devstack.moto import MotoS3

    return MotoS3(stack.s3_url, BUCKET, json.loads((stack.root / "s3-admin.json").read_text())).client()


def bucket_objects(stack: Stack) -> dict[str, int]:
    """Key -> size of every object in the demo bucket (admin view)."""
    s3 = admin_s3(stack)
    out: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            out[item["Key"]] = item["Size"]
    return out


def data_files(stack: Stack) -> list[str]:
    return sorted(k for k in bucket_objects(stack) if is_data_file(k))


# ----- commands -----------------------------------------------------------------------------------
def up(
    stack: Stack,
    ports: str,
    rate: float,
    wait_files: int,
    interval: str,
    demo: bool = True,
    workers: int = 0,
    database: str = "sqlite",
) -> None:
    started = time.monotonic()
    if stack.running():
        say(f"already running: {', '.join(stack.running())} (make down first)")
        banner(stack, None)
        return
    stack.root.mkdir(parents=True, exist_ok=True)
    kept = stack.state().get("airflow", {}).get("version")
    if kept and Version(kept) > AIRFLOW_VERSION:
        raise SystemExit(
            f"[stack] {shown(stack.root)} holds the database of Airflow {kept}, which Airflow {AIRFLOW_VERSION} "
            f"cannot use; remove {shown(stack.root)} (or choose another with STACK_ROOT) to start afresh"
        )
    if workers and not AIRFLOW_V_3_0_PLUS:
        raise SystemExit("[stack] --workers: the Celery stack runs on Airflow 3 only")
    if not 0 <= workers <= MAX_WORKERS:
        raise SystemExit(f"[stack] --workers: 0 (the LocalExecutor) to {MAX_WORKERS}")
    celery = {"workers": workers, "postgres": free_port(), "redis": free_port()} if workers else None
    # the LocalExecutor on PostgreSQL: SQLite's one writer makes a scheduler of a few hundred DAGs exit on
    # "database is locked"
    postgres = free_port() if database == "postgres" and not celery else None
    write_state(stack, ports=choose_ports(ports), repo=str(REPO), celery=celery, postgres=postgres)
    (stack.root / "env").write_text(stack.shell_env())
    try:
        start_broker(stack)
        start_s3(stack)
        start_registry(stack)
        if celery:
            start_postgres(stack, celery["postgres"])
            start_redis(stack, celery["redis"])
        elif postgres:
            start_postgres(stack, postgres)
        prepare(stack)
        write_state(stack, airflow=stack.airflow_info())
        proc = start_airflow(stack)
        say(f"airflow standalone starting (log: {stack.logs / 'airflow.log'})")
        if workers:
            start_workers(stack, workers)
        if demo:
            create_stream(stack)  # while Airflow boots
            start_producer(stack, rate)
            create_exporter(stack, interval)
        wait_until("Airflow", lambda: airflow_health(stack), 240, proc)
    except BaseException:
        say("start-up failed; stopping what was started")
        down(stack, quiet=True)
        raise
    elapsed = time.monotonic() - started
    write_state(stack, startup_seconds=round(elapsed, 1))
    banner(stack, elapsed)
    if wait_files:
        say(f"waiting for {wait_files} exported file(s) in s3://{BUCKET}/{PREFIX}/ ...")
        wait_until("exported files", lambda: len(data_files(stack)) >= wait_files, 120 + 40 * wait_files)
        say(f"{len(data_files(stack))} file(s) in the bucket after {time.monotonic() - started:.0f}s")


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it is below it (what a user types)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def banner(stack: Stack, elapsed: float | None) -> None:
    count, rss, pss = stack.memory()
    lines = [
        "",
        f"Airflow UI:   {stack.ui_url} (Airflow {AIRFLOW_VERSION}; REST API {stack.ui_url}{API})",
        f"Log in as:    {USER}, password: cat {shown(stack.password_file)}",
        f"Exporter DAG: {stack.ui_url}/dags/strm_export_{CONNECTOR}-{STREAM}",
        f"Bucket:       s3://{BUCKET}/{PREFIX}/ on {stack.s3_url}; list it: "
        f"{shown(VENV_BIN / 'python')} scripts/stack.py ls",
        f"Exporter key: {shown(stack.root / 's3.json')} may only write s3://{BUCKET}/{PREFIX}/"
        + ", ".join(f"*{e}" for e in ENDINGS),
        f"Registry:     {stack.registry_url} (Schema Registry; the Kafka connection's schema_registry_url)",
        f"CLI:          source {shown(stack.root / 'env')} && strm list batch-exporters",
        f"Logs:         {stack.logs}/",
        f"Executor:     {executor(stack)}",
        f"Processes:    {count}, {rss / 2**20:.0f} MiB RSS sum, {pss / 2**20:.0f} MiB PSS sum"
        + (f"; ready in {elapsed:.0f}s" if elapsed else ""),
        "Stop:         make down",
        "",
    ]
    print("\n".join(lines), flush=True)


def executor(stack: Stack) -> str:
    celery = stack.state().get("celery")
    if not celery:
        return "LocalExecutor (in airflow standalone's scheduler); `make up WORKERS=2` for Celery workers"
    return (
        f"CeleryExecutor, workers {', '.join(WORKER_NAMES[: celery['workers']])} (logs/worker-N.log), "
        f"PostgreSQL on 127.0.0.1:{celery['postgres']}, Redis on 127.0.0.1:{celery['redis']}"
    )


def down(stack: Stack, quiet: bool = False) -> None:
    stopped = [name for name in PROCESSES if stack.stop(name)]
    if not quiet:
        say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def status(stack: Stack) -> None:
    running = stack.running()
    for name in PROCESSES:
        proc = running.get(name)
        print(f"{name:9} {'running, pid ' + str(proc.pid) if proc else 'stopped'}")
    count, rss, pss = stack.memory()
    print(f"{count} processes, {rss / 2**20:.0f} MiB RSS sum, {pss / 2**20:.0f} MiB PSS sum")
    if "airflow" in running:
        print(f"healthy: {airflow_health(stack)}")
    if stack.workers:
        print("tasks received: " + ", ".join(f"{name} {n}" for name, n in worker_tasks(stack).items()))


def ls(stack: Stack) -> None:
    for key, size in sorted(bucket_objects(stack).items()):
        print(f"{size:10d}  s3://{BUCKET}/{key}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", choices=["up", "down", "status", "ls", "airflow-standalone"],
        help="airflow-standalone: what up starts as the stack's Airflow (in the stack's environment)",
    )  # fmt: skip
    parser.add_argument(
        "--root", type=Path, default=Path(os.environ.get("STACK_ROOT") or REPO / ".stack"),
        help="stack directory (default: $STACK_ROOT, else .stack/)",
    )  # fmt: skip
    parser.add_argument(
        "--ports", default=os.environ.get("STACK_PORTS", "fixed"),
        help="'fixed' (8080/9092/9000, or STACK_*_PORT) or 'auto' (default: $STACK_PORTS, else fixed)",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=10.0, help="events per second the producer sends")
    parser.add_argument(
        "--interval", default=INTERVAL,
        help=f"how often the demo exporter runs, when up creates it (default: {INTERVAL})",
    )  # fmt: skip
    parser.add_argument("--wait-files", type=int, default=0, help="after start-up, wait for N exported files")
    parser.add_argument(
        "--no-demo-exporter", dest="demo", action="store_false",
        help="start without the demo stream, its producer and exporter (a benchmark brings its own)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("STACK_WORKERS") or 0),
        help="0: the LocalExecutor (default); N: the CeleryExecutor with N Celery workers, PostgreSQL and Redis "
        "(default: $STACK_WORKERS, else 0)",
    )  # fmt: skip
    parser.add_argument(
        "--database", choices=["sqlite", "postgres"], default=os.environ.get("STACK_DATABASE") or "sqlite",
        help="Airflow's metadata database: sqlite (default) or postgres (the LocalExecutor on PostgreSQL, for a few "
        "hundred exporters; --workers always uses PostgreSQL)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    stack = Stack(args.root)
    if args.command == "airflow-standalone":
        airflow_standalone(stack.password_file)
        return
    if args.command == "up":
        up(stack, args.ports, args.rate, args.wait_files, args.interval, args.demo, args.workers, args.database)
    elif args.command == "down":
        down(stack)
    elif args.command == "status":
        status(stack)
    else:
        ls(stack)


if __name__ == "__main__":
    main()
