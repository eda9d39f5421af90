"""The storage hooks against real servers: streaming, all-or-nothing commits, the Test button.

Each case runs for every storage kind (fake-gcs-server, Azurite, SeaweedFS) through the same
:class:`~devstack.StorageTarget` interface; connections reach the hooks the way Airflow
delivers them outside a task, via ``AIRFLOW_CONN_<ID>`` environment variables.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strm_provider.hooks import storage_hook
from strm_provider.hooks.storage import StorageError, StorageHook

KINDS = ["gcs", "azure", "s3-compatible"]
FIXTURES = {"gcs": "gcs_target", "azure": "azure_target", "s3-compatible": "s3_compatible_target"}
#: words the cause of a rejected secret must contain, per kind
WRONG_SECRET_CAUSE = {
    "gcs": "invalid_grant",
    "azure": "AADSTS7000215",
    "s3-compatible": "SignatureDoesNotMatch",
}
MiB = 1024 * 1024


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest) -> Any:
    """Each storage kind's session target."""
    return request.getfixturevalue(FIXTURES[request.param])


@pytest.fixture
def prefix() -> str:
    """A fresh prefix per test, so tests sharing a session server never see each other's objects."""
    return f"t-{uuid.uuid4().hex[:10]}/events"


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``connect(conn_json) -> hook``: register the connection as ``AIRFLOW_CONN_<ID>`` and build its hook."""

    def make(conn: dict[str, Any]) -> StorageHook:
        conn_id = f"strm_test_{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return storage_hook(conn_id)

    return make


def payload(size: int) -> bytes:
    """JSON Lines of about ``size`` bytes, distinct per line so a misplaced chunk shows."""
    line = 0
    parts: list[bytes] = []
    total = 0
    while total < size:
        chunk = b'{"n": %d, "pad": "%s"}\n' % (line, b"x" * (line % 200))
        parts.append(chunk)
        total += len(chunk)
        line += 1
    return b"".join(parts)[:size]


def write_in_pieces(out: Any, data: bytes, piece: int = 64 * 1024) -> None:
    view = memoryview(data)
    for start in range(0, len(data), piece):
        out.write(bytes(view[start : start + piece]))


# ----- every kind -----------------------------------------------------------------------------------


def test_streams_a_multi_chunk_object(target: Any, prefix: str, connect: Any) -> None:
    hook = connect(target.connection(prefix))
    data = payload(20 * MiB + 12345)
    key = f"{prefix}/big.jsonl"
    with hook.open_writer(key) as out:
        write_in_pieces(out, data)
    assert target.objects(prefix) == {key: data}


def test_exact_multiple_of_the_chunk_size(target: Any, prefix: str, connect: Any) -> None:
    """The last chunk is empty: the commit must still carry every byte."""
    hook = connect(target.connection(prefix))
    data = payload(16 * MiB)
    key = f"{prefix}/even.jsonl"
    with hook.open_writer(key) as out:
        write_in_pieces(out, data)
    assert target.objects(prefix) == {key: data}


def test_object_is_invisible_until_the_stream_completes(target: Any, prefix: str, connect: Any) -> None:
    hook = connect(target.connection(prefix))
    first, rest = payload(18 * MiB), b'{"last": true}\n'
    key = f"{prefix}/late.jsonl"
    with hook.open_writer(key) as out:
        write_in_pieces(out, first)
        time.sleep(1.5)  # let whole chunks reach the server
        assert target.objects(prefix) == {}
        out.write(rest)
    assert target.objects(prefix) == {key: first + rest}


@pytest.mark.parametrize("written", [0, 100, 9 * MiB + 7], ids=["nothing", "small", "chunks"])
def test_exception_inside_the_writer_leaves_no_object(target: Any, prefix: str, connect: Any, written: int) -> None:
    hook = connect(target.connection(prefix))
    with pytest.raises(RuntimeError, match="export failed"), hook.open_writer(f"{prefix}/broken.jsonl") as out:
        write_in_pieces(out, payload(written))
        raise RuntimeError("export failed")
    time.sleep(0.3)
    assert target.objects(prefix) == {}


def test_overwrite_replaces_the_object(target: Any, prefix: str, connect: Any) -> None:
    """A re-export after a failure writes the same name again; the second version wins."""
    hook = connect(target.connection(prefix))
    key = f"{prefix}/same.jsonl"
    for body in (b'{"v": 1}\n', b'{"v": 2}\n'):
        with hook.open_writer(key) as out:
            out.write(body)
    assert target.objects(prefix) == {key: b'{"v": 2}\n'}


def test_connection_writes_the_empty_validation_file(target: Any, prefix: str, connect: Any) -> None:
    hook = connect(target.connection(prefix))
    ok, message = hook.test_connection()
    assert ok, message
    objects = target.objects(prefix)
    assert len(objects) == 1
    key, body = objects.popitem()
    assert re.fullmatch(rf"{re.escape(prefix)}/\.strm_test_[0-9a-f-]{{36}}\.jsonl", key)
    assert body == b""
    assert key in message


def test_wrong_secret_fails_fast_and_clearly(target: Any, prefix: str, connect: Any) -> None:
    secret = f"wrong-{uuid.uuid4().hex}"
    hook = connect(target.connection(prefix, secret=secret))
    started = time.monotonic()
    ok, message = hook.test_connection()
    elapsed = time.monotonic() - started
    assert not ok
    assert hook.conn_id in message
    assert WRONG_SECRET_CAUSE[target.kind] in message
    assert secret not in message
    assert "PRIVATE KEY" not in message
    assert elapsed < 10, f"took {elapsed:.1f}s to reject a wrong secret"
    assert target.objects(prefix) == {}


def test_missing_bucket_fails_clearly(target: Any, prefix: str, connect: Any) -> None:
    hook = connect(target.missing_bucket_connection(prefix))
    started = time.monotonic()
    ok, message = hook.test_connection()
    assert not ok
    assert hook.conn_id in message
    assert "no-such-bucket-strm" in message
    assert time.monotonic() - started < 10


def test_describe_has_no_secret(target: Any, prefix: str, connect: Any) -> None:
    conn = target.connection(prefix)
    hook = connect(conn)
    described = json.dumps(hook.describe())
    assert target.bucket in described
    for secret in _secrets(conn):
        assert secret not in described


def _secrets(conn: dict[str, Any]) -> Iterator[str]:
    if conn.get("password"):
        yield conn["password"]
    key = (conn.get("extra") or {}).get("keyfile_dict")
    if isinstance(key, dict):
        yield key["private_key"]


# ----- Google Cloud Storage -------------------------------------------------------------------------


def test_gcs_describe_and_asset(gcs_target: Any, prefix: str, connect: Any) -> None:
    hook = connect(gcs_target.connection(prefix))
    assert hook.describe() == {"googleCloudStorageBucket": {"bucketName": gcs_target.bucket}}
    assert hook.asset_uri("events") == f"gs://{gcs_target.bucket}/events"


def test_gcs_token_asks_only_for_read_write(gcs_target: Any, prefix: str, connect: Any) -> None:
    hook = connect(gcs_target.connection(prefix))
    assert hook.test_connection()[0]
    assert gcs_target.scopes_seen[-1] == "https://www.googleapis.com/auth/devstorage.read_write"


def test_gcs_key_as_string_or_file(gcs_target: Any, prefix: str, connect: Any, tmp_path: Path) -> None:
    conn = gcs_target.connection(prefix)
    key = conn["extra"].pop("keyfile_dict")
    as_string = connect({**conn, "extra": {**conn["extra"], "keyfile_dict": json.dumps(key)}})
    key_file = tmp_path / "gcs.json"
    key_file.write_text(json.dumps(key))
    as_file = connect({**conn, "extra": {**conn["extra"], "key_path": str(key_file)}})
    assert as_string.test_connection()[0]
    assert as_file.test_connection()[0]
    assert len(gcs_target.objects(prefix)) == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"keyfile_dict": None}, "no Google credentials: the connection holds no key, and Application Default"),
        ({"keyfile_dict": "{not json"}, "'keyfile_dict' is not valid JSON"),
        ({"keyfile_dict": None, "key_path": "/nonexistent/gcs.json"}, "cannot read key_path"),
        ({"bucket": None}, "extra 'bucket' is required"),
    ],
    ids=["no-key", "bad-json", "no-file", "no-bucket"],
)
def test_gcs_configuration_errors(
    gcs_target: Any,
    prefix: str,
    connect: Any,
    change: dict[str, Any],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no key: Application Default Credentials, and this machine has none (nor a metadata server to ask)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent-gcloud")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    conn = gcs_target.connection(prefix)
    extra = {k: v for k, v in {**conn["extra"], **change}.items() if v is not None}
    hook = connect({**conn, "extra": extra})
    ok, message = hook.test_connection()
    assert not ok
    assert hook.conn_id in message
    assert expected in message


def test_gcs_broken_private_key_is_not_echoed(gcs_target: Any, prefix: str, connect: Any) -> None:
    garbage = "-----BEGIN PRIVATE KEY-----\nTm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    conn = gcs_target.connection(prefix)
    conn["extra"]["keyfile_dict"]["private_key"] = garbage
    hook = connect(conn)
    ok, message = hook.test_connection()
    assert not ok
    assert "not a valid PEM private key" in message
    assert "Tm90IGEga2V5" not in message


def test_gcs_abandoned_upload_is_cancelled(gcs_target: Any, prefix: str, connect: Any) -> None:
    """After an abort nothing is left, not even after the writer object is garbage collected."""
    import gc

    hook = connect(gcs_target.connection(prefix))
    with pytest.raises(RuntimeError), hook.open_writer(f"{prefix}/gc.jsonl") as out:
        out.write(payload(1000))
        raise RuntimeError("boom")
    gc.collect()
    assert gcs_target.objects(prefix) == {}


def test_gcs_unreachable_token_endpoint_is_bounded(gcs_target: Any, prefix: str, connect: Any) -> None:
    """A dead token endpoint is a transport error: retried, but for a bounded time."""
    from strm_provider.hooks import gcs

    conn = gcs_target.connection(prefix)
    conn["extra"]["keyfile_dict"]["token_uri"] = "http://127.0.0.1:9/token"
    hook = connect(conn)
    original = gcs.RETRY_SECONDS
    gcs.RETRY_SECONDS = 3.0
    try:
        started = time.monotonic()
        ok, message = hook.test_connection()
    finally:
        gcs.RETRY_SECONDS = original
    assert not ok
    assert time.monotonic() - started < 15
    assert "token endpoint" in message or "Connection refused" in message


def test_concurrent_writers_do_not_mix(target: Any, prefix: str, connect: Any) -> None:
    hook = connect(target.connection(prefix))
    bodies = {f"{prefix}/part-{i}.jsonl": payload(3 * MiB + i) for i in range(3)}
    errors: list[BaseException] = []

    def write(key: str, body: bytes) -> None:
        try:
            with hook.open_writer(key) as out:
                write_in_pieces(out, body)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=item) for item in bodies.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert target.objects(prefix) == bodies


def test_storage_error_type(target: Any, prefix: str, connect: Any) -> None:
    """Failures surface as StorageError from the writer, not as an SDK exception."""
    hook = connect(target.missing_bucket_connection(prefix))
    with pytest.raises(StorageError, match=hook.conn_id), hook.open_writer(f"{prefix}/x.jsonl") as out:
        out.write(b"{}\n")


# ----- Azure Blob Storage ---------------------------------------------------------------------------


def test_azure_describe_and_asset(azure_target: Any, prefix: str, connect: Any) -> None:
    hook = connect(azure_target.connection(prefix))
    assert hook.describe() == {
        "azureBlobStorageContainer": {
            "storageAccountUri": azure_target.account_uri,
            "containerName": azure_target.bucket,
        }
    }
    netloc_and_path = azure_target.account_uri.removeprefix("https://")
    assert hook.asset_uri("events") == f"wasbs://{azure_target.bucket}@{netloc_and_path}/events"


def test_azure_asset_for_a_real_account(connect: Any) -> None:
    """No server needed: the URI is rendered from the connection alone."""
    hook = connect(
        {
            "conn_type": "strm_azure_blob",
            "host": "https://foo.blob.core.windows.net/",
            "login": "client",
            "password": "secret-value",
            "extra": {"container": "exports", "tenant_id": "tenant"},
        }
    )
    assert hook.asset_uri("events/raw") == "wasbs://exports@foo.blob.core.windows.net/events/raw"
    assert hook.asset_uri("") == "wasbs://exports@foo.blob.core.windows.net"
    assert hook.describe()["azureBlobStorageContainer"]["storageAccountUri"] == "https://foo.blob.core.windows.net"


def test_azure_uses_one_token_for_many_blocks(azure_target: Any, prefix: str, connect: Any) -> None:
    hook = connect(azure_target.connection(prefix))
    before = azure_target.entra.tokens_issued
    with hook.open_writer(f"{prefix}/blocks.jsonl") as out:
        write_in_pieces(out, payload(17 * MiB))
    assert azure_target.entra.tokens_issued - before == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"extra": {"tenant_id": None}}, "missing extra 'tenant_id'"),
        ({"login": None}, "missing login (client id)"),
        ({"host": None}, "field 'host' must be the storage account URI"),
        ({"extra": {"container": None}}, "extra 'container' is required"),
        ({"extra": {"tenant_id": "not a tenant!"}}, "tenant"),
        ({"extra": {"tenant_id": "00000000-0000-0000-0000-000000000000"}}, "tenant"),
        ({"login": "11111111-1111-1111-1111-111111111111"}, "AADSTS700016"),
    ],
    ids=["no-tenant", "no-client", "no-host", "no-container", "bad-tenant", "unknown-tenant", "unknown-client"],
)
def test_azure_configuration_errors(
    azure_target: Any, prefix: str, connect: Any, change: dict[str, Any], expected: str
) -> None:
    conn = azure_target.connection(prefix)
    extra = {k: v for k, v in {**conn["extra"], **change.pop("extra", {})}.items() if v is not None}
    conn = {k: v for k, v in {**conn, **change, "extra": extra}.items() if v is not None}
    hook = connect(conn)
    started = time.monotonic()
    ok, message = hook.test_connection()
    assert not ok
    assert hook.conn_id in message
    assert expected in message
    assert conn.get("password", "<none>") not in message
    assert time.monotonic() - started < 10


# ----- S3-compatible (SeaweedFS) ----------------------------------------------------------------------


def test_s3_compatible_user_has_only_the_minimal_policy(s3_compatible_target: Any, prefix: str) -> None:
    """The fixture itself: what the exporter's credentials may and may not do on SeaweedFS."""
    from botocore.exceptions import ClientError

    target = s3_compatible_target
    s3 = target.client(creds=target.user_for(prefix))
    s3.put_object(Bucket=target.bucket, Key=f"{prefix}/ok.jsonl", Body=b"{}\n")
    s3.put_object(Bucket=target.bucket, Key=f"{prefix}/_dead_letter/ok.jsonl", Body=b"{}\n")
    assert s3.get_bucket_location(Bucket=target.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    denied = {
        "other prefix": lambda: s3.put_object(Bucket=target.bucket, Key="elsewhere/x.jsonl", Body=b"x"),
        "not jsonl": lambda: s3.put_object(Bucket=target.bucket, Key=f"{prefix}/x.txt", Body=b"x"),
        "read": lambda: s3.get_object(Bucket=target.bucket, Key=f"{prefix}/ok.jsonl"),
        "head": lambda: s3.head_object(Bucket=target.bucket, Key=f"{prefix}/ok.jsonl"),
        "list": lambda: s3.list_objects_v2(Bucket=target.bucket, Prefix=prefix),
        "delete": lambda: s3.delete_object(Bucket=target.bucket, Key=f"{prefix}/ok.jsonl"),
        "create bucket": lambda: s3.create_bucket(Bucket=f"strm-{uuid.uuid4().hex[:8]}"),
    }
    allowed = []
    for name, call in denied.items():
        try:
            call()
            allowed.append(name)
        except ClientError as err:
            assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 403, name
    assert allowed == []
    assert set(target.objects(prefix)) == {f"{prefix}/ok.jsonl", f"{prefix}/_dead_letter/ok.jsonl"}


def test_s3_compatible_describe(s3_compatible_target: Any, prefix: str, connect: Any) -> None:
    hook = connect(s3_compatible_target.connection(prefix))
    assert hook.describe() == {"s3Bucket": {"bucketName": s3_compatible_target.bucket}}
