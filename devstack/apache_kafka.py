"""Apache Kafka from Maven Central: fetched once into ``.cache/``, run as a single KRaft node on loopback.

``python -m devstack.apache_kafka fetch`` (the Makefile's ``kafka`` target) copies the pinned
``org.apache.kafka:kafka_2.13`` and its runtime dependencies with Maven, plus the slf4j binding that
the POM leaves out; afterwards nothing is downloaded. :func:`start_kafka` formats a data directory
(once: a restart reuses its log dirs, ports and cluster id) and runs ``kafka.Kafka`` on it.

``STRM_TEST_KAFKA_VERSION`` picks another 4.x release (fetched into its own folder).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERSION = os.environ.get("STRM_TEST_KAFKA_VERSION", "4.1.1")
HOME = REPO / ".cache" / f"kafka-{VERSION}"
LIBS = HOME / "libs"
HEAP = "-Xmx512m"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>strm.test</groupId><artifactId>kafka-dist</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>{binding}
  </dependencies>
</project>
"""
BINDING = """
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>{slf4j}</version>
    </dependency>"""


class KafkaDistUnavailable(RuntimeError):
    """Java or Maven is missing, or Maven Central is unreachable: one line saying what to do."""


def java() -> str:
    """A Java 17+ ``java`` (``JAVA_HOME`` first)."""
    candidates = [Path(os.environ["JAVA_HOME"]) / "bin" / "java"] if os.environ.get("JAVA_HOME") else []
    candidates.append(Path(shutil.which("java") or "/nonexistent"))
    for path in candidates:
        if path.exists():
            out = subprocess.run([str(path), "-version"], capture_output=True, text=True).stderr
            match = re.search(r'version "(\d+)', out)
            if match and int(match.group(1)) >= 17:
                return str(path)
    raise KafkaDistUnavailable(
        "Apache Kafka 4 needs Java 17 or newer: run `make system-deps` (openjdk-17-jre-headless)"
    )


def _maven(pom: str, workdir: Path, target: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaDistUnavailable("fetching Apache Kafka needs Maven: run `make system-deps` (Debian package maven)")
    (workdir / "pom.xml").write_text(pom)
    cmd = [mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={target}"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line] or ["(no output)"]
        raise KafkaDistUnavailable(
            f"Maven could not fetch Apache Kafka {VERSION} from Maven Central: {lines[0].strip()}"
        )


def fetch() -> Path:
    """The broker's jars, fetched once (``.cache/kafka-<version>/libs``); offline afterwards."""
    if (LIBS / ".complete").exists():
        return LIBS
    java()
    with tempfile.TemporaryDirectory(prefix="kafka-fetch-") as tmp:
        staging = Path(tmp) / "libs"
        _maven(POM.format(kafka=VERSION, binding=""), Path(tmp), staging)
        api = next(staging.glob("slf4j-api-*.jar"), None)
        if api is not None:  # the POM has no logging binding: without one the broker runs silently
            slf4j = api.name.removeprefix("slf4j-api-").removesuffix(".jar")
            _maven(POM.format(kafka=VERSION, binding=BINDING.format(slf4j=slf4j)), Path(tmp), staging)
        (staging / ".complete").write_text(VERSION + "\n")
        HOME.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(LIBS, ignore_errors=True)
        shutil.move(str(staging), LIBS)
    return LIBS


def _run_class(main: str, *args: str) -> list[str]:
    return [java(), HEAP, "-cp", f"{LIBS}/*", main, *args]


@dataclass
class Listeners:
    """Ports of one node: the clients' PLAINTEXT listener, the controller, and the optional secured ones."""

    plaintext: int
    controller: int
    sasl_plaintext: int | None = None
    sasl_ssl: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def server_properties(data_dir: Path, ports: Listeners) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{ports.plaintext}", f"CONTROLLER://127.0.0.1:{ports.controller}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if ports.sasl_plaintext:
        listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{ports.sasl_plaintext}")
        protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
    if ports.sasl_ssl:
        listeners.append(f"SASL_SSL://127.0.0.1:{ports.sasl_ssl}")
        protocols.append("SASL_SSL:SASL_SSL")
    advertised = [entry for entry in listeners if not entry.startswith("CONTROLLER")]
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{ports.controller}",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        # a test's retention gap: segments roll and are deleted within seconds when a topic asks for it; a topic
        # that does not ask keeps its records, whatever their timestamps (tests produce fixed past dates)
        "log.retention.ms": "-1",
        "log.retention.check.interval.ms": "1000",
        "log.segment.delete.delay.ms": "0",
        **ports.extra,
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def controller_port(data_dir: Path) -> int:
    """The node's controller port, kept with its data so a restart on the same log dirs finds its quorum."""
    from devstack import free_port

    saved = data_dir / "controller.port"
    if not saved.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(str(free_port()))
    return int(saved.read_text())


def cluster_id() -> str:
    """A random KRaft cluster id; like Kafka's own Uuid.randomUuid, never one starting with "-",
    which the storage tool's argument parser would take for an option."""
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


def prepare(data_dir: Path, ports: Listeners, format_args: tuple[str, ...] = ()) -> list[str]:
    """Write the node's config, format its log dirs unless they hold a node, and return the command to run it."""
    fetch()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "server.properties"
    config.write_text(server_properties(data_dir, ports))
    if not (data_dir / "logs" / "meta.properties").exists():
        done = subprocess.run(
            _run_class("kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config), *format_args),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed: {done.stdout}{done.stderr}")
    return _run_class("kafka.Kafka", str(config))


@contextlib.contextmanager
def start_kafka(
    data_dir: Path,
    ports: Listeners,
    *,
    format_args: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen]:
    """Run one KRaft node with data in ``data_dir``; format it first unless it holds a formatted node."""
    from devstack import stop_group, wait_for_port

    cmd = prepare(data_dir, ports, format_args)
    log = data_dir / "broker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(ports.plaintext, timeout, proc)
        wait_ready(f"127.0.0.1:{ports.plaintext}", timeout, lambda: proc.poll() is None, log)
        yield proc
    finally:
        stop_group(proc)


def wait_ready(bootstrap: str, timeout: float, alive: Callable[[], bool], log: Path) -> None:
    """The port opens before the node serves metadata: wait until an admin client sees the broker."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                if admin.describe_cluster().get("brokers"):
                    return
            finally:
                admin.close()
        except Exception as err:
            if not alive() or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Apache Kafka not ready on {bootstrap} ({err!r}):\n{tail}") from None
        time.sleep(0.2)


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        raise SystemExit("usage: python -m devstack.apache_kafka fetch")
    try:
        print(f"Apache Kafka {VERSION}: {fetch()}")
    except KafkaDistUnavailable as err:
        raise SystemExit(f"error: {err}") from None
