"""The development stack: real servers on 127.0.0.1 (a module per server) and an isolated Airflow.

The tests, ``make demo``, ``make up`` and the benchmarks start what they need from here; nothing of it
ships in the wheel. Every storage server yields a :class:`StorageTarget`, so the end-to-end tests run
the same scenario on each storage kind.
"""

from __future__ import annotations

import abc
import contextlib
import gzip
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A local endpoint's request handler (token endpoints, credential servers): :meth:`reply` answers, and
    nothing is logged, so pytest's output stays clean."""

    #: the Content-Type of a JSON :meth:`reply`
    json_type = "application/json"

    def reply(self, status: int, body: dict[str, Any] | bytes, content_type: str | None = None) -> None:
        """Answer ``status`` with ``body``: bytes as given, a dict as JSON."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type or self.json_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before opening port {port}")
        with contextlib.closing(socket.socket()) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def running(cmd: list[str], *, log: Path, port: int, timeout: float = 30.0, **popen: Any) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` (output to ``log``), wait for ``port``, and stop it at the end."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    try:
        wait_for_port(port, timeout, proc)
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a server and everything it started (some launchers hand off to a child and exit).

    SIGINT first, as Ctrl-C would: some servers ignore SIGTERM but stop cleanly on SIGINT.
    """
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; give the rest of its group a moment, then make sure
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


@contextlib.contextmanager
def serving(server: socketserver.BaseServer, name: str) -> Iterator[Any]:
    """Serve ``server`` (a local token endpoint) from a daemon thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class StorageTarget(abc.ABC):
    """One bucket/container on a real server, seen two ways.

    The exporter sees it through an Airflow connection holding *least-privilege* credentials
    (:meth:`connection`); the test sees it with admin credentials (:meth:`objects`).
    """

    #: "s3", "s3-compatible", "gcs" or "azure"
    kind: str
    #: the provider's connection type, e.g. "strm_s3"
    conn_type: str
    bucket: str

    @abc.abstractmethod
    def connection(self, prefix: str = "", *, secret: str | None = None) -> dict[str, Any]:
        """Airflow connection (JSON form: conn_type, host, login, password, extra) writing below ``prefix``.

        ``secret`` replaces the real secret (to test a wrong one); the result goes into
        ``AIRFLOW_CONN_<ID>`` or ``airflow connections add --conn-json``.
        """

    @abc.abstractmethod
    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object below ``prefix`` (admin view): key -> content."""

    @abc.abstractmethod
    def content_types(self, prefix: str = "") -> dict[str, str]:
        """Every object below ``prefix`` (admin view): key -> its content type, as a download gets it."""

    def missing_bucket_connection(self, prefix: str = "") -> dict[str, Any]:
        """Like :meth:`connection` but naming a bucket/container that does not exist."""
        conn = self.connection(prefix)
        extra = dict(conn.get("extra") or {})
        extra["container" if self.kind == "azure" else "bucket"] = "no-such-bucket-strm"
        return {**conn, "extra": extra}


#: storage kind -> (module, context manager that starts its server and yields a :class:`StorageTarget`)
SERVERS = {
    "s3": ("devstack.moto", "start_moto"),
    "s3-compatible": ("devstack.seaweedfs", "start_seaweedfs"),
    "gcs": ("devstack.gcs", "start_gcs"),
    "azure": ("devstack.azurite", "start_azurite"),
}


def start_storage(kind: str, workdir: Path) -> contextlib.AbstractContextManager[StorageTarget]:
    """Start the server of a storage kind (for the demo and the benchmarks, outside pytest)."""
    import importlib

    module, func = SERVERS[kind]
    return getattr(importlib.import_module(module), func)(workdir)


class S3Objects:
    """The admin view of an S3 server's bucket (moto and SeaweedFS): ``client()`` holds admin credentials."""

    bucket: str
    endpoint: str
    region: str
    admin: dict[str, str]
    #: botocore ``Config`` arguments the server needs (SeaweedFS: path-style addressing)
    client_config: dict[str, Any] | None = None

    def client(self, service: str = "s3", creds: dict[str, str] | None = None) -> Any:
        """A boto3 client for ``service`` with ``creds`` (default: the admin's)."""
        import boto3
        from botocore.config import Config

        creds = creds or self.admin
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            config=Config(**self.client_config) if self.client_config else None,
        )

    def _keys(self, prefix: str) -> Iterator[str]:
        s3 = self.client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from (item["Key"] for item in page.get("Contents", []))

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        s3 = self.client()
        return {key: s3.get_object(Bucket=self.bucket, Key=key)["Body"].read() for key in self._keys(prefix)}

    def content_types(self, prefix: str = "") -> dict[str, str]:
        s3 = self.client()
        return {key: s3.head_object(Bucket=self.bucket, Key=key)["ContentType"] for key in self._keys(prefix)}


def opened(key: str, body: bytes) -> bytes:
    """A file's JSON Lines, as a downstream reader gets them: Python's gzip and zstandard open compressed ones."""
    if key.endswith(".gz"):
        return gzip.decompress(body)
    if key.endswith(".zst"):
        with zstandard.ZstdDecompressor().stream_reader(body) as reader:
            return reader.read()
    return body
