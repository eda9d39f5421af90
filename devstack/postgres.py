"""PostgreSQL on a free loopback port with a throw-away data directory, started by the tests.

The server refuses to run as root, and CI runs as root: then it runs as the ``postgres`` account that
Debian's package creates (``make system-deps`` installs it), in a data directory that account owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import free_port, running


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} not found: run `make system-deps` (Debian package postgresql)")
    return found[-1]


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str

    def url(self, dbname: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg2

        conn = psycopg2.connect(dbname=dbname, host=self.host, port=self.port, user=self.user)
        conn.autocommit = True
        return conn


@contextlib.contextmanager
def start_postgres() -> Iterator[Postgres]:
    as_root = os.geteuid() == 0
    account: dict[str, Any] = {}
    if as_root:
        entry = pwd.getpwnam("postgres")  # KeyError: the Debian package is missing (make system-deps)
        account = {"user": entry.pw_uid, "group": entry.pw_gid}
    # not below pytest's tmp_path: that is private to root, and the server's account must reach it
    top = Path(tempfile.mkdtemp(prefix="strm-pg-"))
    top.chmod(0o755)
    data = top / "data"
    data.mkdir()
    if as_root:
        os.chown(data, account["user"], account["group"])
    try:
        subprocess.run(
            [pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, **account,
        )  # fmt: skip
        port = free_port()
        cmd = [pg_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)]
        cmd += ["-c", "fsync=off", "-c", "max_connections=200"]
        with running(cmd, log=top / "postgres.log", port=port, **account):
            yield Postgres("127.0.0.1", port, "postgres")
    finally:
        shutil.rmtree(top, ignore_errors=True)
