"""AWS S3 and IAM from ``moto_server`` on 127.0.0.1, with IAM policies enforced.

Every exporter connection gets its own IAM user holding ONLY the README's minimal policy:
``s3:GetBucketLocation`` on the bucket and ``s3:PutObject`` on ``<prefix>/*.jsonl``. ``make up``
(scripts/stack.py) provisions its own moto_server with :func:`provision` and :func:`enforce_iam` too.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import requests

from devstack import S3Objects, StorageTarget, free_port, running

REGION = "eu-west-1"


def minimal_policy(
    bucket: str, prefix: str, endings: tuple[str, ...] = (".jsonl",), kms_key_arn: str | None = None
) -> dict[str, Any]:
    """The README's policy document, with the bucket, optional prefix, the file endings written (``.jsonl``,
    and ``.jsonl.gz``/``.jsonl.zst`` when compressed) and, with SSE-KMS, the key filled in."""
    folder = f"{bucket}/{prefix}" if prefix else bucket
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": f"arn:aws:s3:::{bucket}"},
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": [f"arn:aws:s3:::{folder}/*{e}" for e in endings]},
    ]
    if kms_key_arn:
        statements.append({"Effect": "Allow", "Action": ["kms:GenerateDataKey"], "Resource": kms_key_arn})
    return {"Version": "2012-10-17", "Statement": statements}


def minimal_user(iam: Any, name: str, bucket: str, prefix: str, **policy: Any) -> dict[str, str]:
    """Create IAM user ``name`` holding only :func:`minimal_policy`; return its key (as create-access-key prints)."""
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="strm-bucket-write-access",
        PolicyDocument=json.dumps(minimal_policy(bucket, prefix, **policy)),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in key.items()}


class MotoS3(S3Objects, StorageTarget):
    kind = "s3"
    conn_type = "strm_s3"
    region = REGION

    def __init__(self, endpoint: str, bucket: str, admin: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.admin = admin
        self._users: dict[tuple[str, str], dict[str, str]] = {}
        self.pid: int | None = None  # the server process (benchmarks wait for it to go idle)

    def user_for(self, prefix: str, **policy: Any) -> dict[str, str]:
        """An IAM user holding only the minimal policy for ``prefix`` (what ``aws iam create-access-key`` gives)."""
        key = (prefix, json.dumps(policy, sort_keys=True))
        if key not in self._users:
            self._users[key] = minimal_user(
                self.client("iam"), f"strm-export-{len(self._users)}", self.bucket, prefix, **policy
            )
        return self._users[key]

    def connection(self, prefix: str = "", *, secret: str | None = None, **policy: Any) -> dict[str, Any]:
        """``policy``: what else :func:`minimal_policy` grants (``endings``, ``kms_key_arn``)."""
        user = self.user_for(prefix, **policy)
        return {
            "conn_type": "strm_s3",
            "login": user["AccessKeyId"],
            "password": secret or user["SecretAccessKey"],
            "extra": {"bucket": self.bucket, "endpoint_url": self.endpoint, "test_prefix": prefix},
        }

    def aws_connection(self, prefix: str = "", **policy: Any) -> dict[str, Any]:
        """The Amazon provider's ``aws`` connection of the same minimal user: credentials, no bucket."""
        user = self.user_for(prefix, **policy)
        return {
            "conn_type": "aws",
            "login": user["AccessKeyId"],
            "password": user["SecretAccessKey"],
            "extra": {"endpoint_url": self.endpoint},
        }


def provision(endpoint: str, bucket: str) -> MotoS3:
    """On a fresh moto_server: an admin user allowed everything, and ``bucket`` in eu-west-1 (so region
    discovery matters). IAM is not enforced until :func:`enforce_iam`."""
    boot = boto3.client(
        "iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="boot", aws_secret_access_key="boot"
    )
    boot.create_user(UserName="admin")
    boot.put_user_policy(
        UserName="admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    admin = boot.create_access_key(UserName="admin")["AccessKey"]
    target = MotoS3(
        endpoint, bucket, {"AccessKeyId": admin["AccessKeyId"], "SecretAccessKey": admin["SecretAccessKey"]}
    )
    target.client().create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return target


def enforce_iam(endpoint: str) -> None:
    """From now on moto_server checks every request against the caller's IAM policies."""
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()


#: moto_server with AWS's permissions for the multipart upload: S3 authorizes CreateMultipartUpload,
#: UploadPart and CompleteMultipartUpload with ``s3:PutObject`` (there is no IAM action of their name), as
#: moto did before 5.2.6, which asks for an action named after the operation
MOTO_SERVER = """
import sys
from moto.iam import access_control
from moto.server import main

AS_PUT_OBJECT = {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
init = access_control.S3IAMRequest.__init__


def authorized_as_aws(self, *args, action, **kwargs):
    init(self, *args, action="PutObject" if action in AS_PUT_OBJECT else action, **kwargs)


access_control.S3IAMRequest.__init__ = authorized_as_aws
sys.exit(main())
"""


def moto_server_command(port: int) -> list[str]:
    """The command line of a moto_server on 127.0.0.1:``port`` that authorizes S3 calls as AWS does."""
    return [sys.executable, "-c", MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def start_moto(workdir: Path) -> Iterator[MotoS3]:
    """moto_server with a bucket and IAM enforced."""
    port = free_port()
    with running(moto_server_command(port), log=workdir / "moto.log", port=port) as proc:
        target = provision(f"http://127.0.0.1:{port}", "strmprivacy-export-demo")
        target.pid = proc.pid
        enforce_iam(target.endpoint)
        yield target
