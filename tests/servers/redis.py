"""Redis on a free loopback port, in memory only, started by the tests (``make system-deps`` installs it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port, running


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run `make system-deps` (Debian package redis-server)")
    workdir: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    with running(cmd, log=workdir / "redis.log", port=port):
        yield f"redis://127.0.0.1:{port}/0"
