"""Redis on a free loopback port, in memory only (``make system-deps`` installs it)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from devstack import free_port, running


@contextlib.contextmanager
def start_redis(workdir: Path) -> Iterator[str]:
    """A Redis server for the block; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run `make system-deps` (Debian package redis-server)")
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
