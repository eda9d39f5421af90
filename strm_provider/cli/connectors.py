"""Data connectors as ``strm`` shows them, mapped onto the provider's Airflow connection types.

A connector *is* an Airflow connection; this module only translates: credentials files into the
connection fields the hooks read, and connections back into the JSON ``strm`` prints (never a secret).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from strm_provider.connection_types import DATA_CONNECTORS

#: the connector types of ``strm create data-connector TYPE``
KINDS = ("s3", "gcs", "azure-blob-storage")
#: the provider's connection types that are data connectors
CONN_TYPES = tuple(DATA_CONNECTORS)

S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
GCS_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
AZURE_CONTAINER_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass
class ConnectorSpec:
    """The fields of one data connector's Airflow connection (secrets included: never print)."""

    name: str
    conn_type: str
    host: str | None = None
    login: str | None = None
    password: str | None = None
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The JSON ``strm`` prints: the reference and where the data goes (as the connector's hook
        describes it); no credential field at all. A connection the hook cannot read says why."""
        from strm_provider.hooks import StorageError

        try:
            return {"ref": {"name": self.name}, **self.hook().describe()}
        except StorageError as err:
            return {"ref": {"name": self.name}, "error": str(err)}

    def hook(self, bucket: str | None = None) -> Any:
        """The storage hook of this connector, over its fields (stored or not); ``bucket`` for the official
        providers' connection types, which hold only credentials."""
        from strm_provider.hooks import storage_hook_class

        kwargs = {"bucket": bucket} if bucket else {}
        return storage_hook_class(self.conn_type).from_connection(self.to_connection(), **kwargs)

    def asset_uri(self, prefix: str, bucket: str | None = None) -> str:
        """The Airflow Asset URI of ``prefix`` in this connector's bucket (``s3://bucket/prefix``, ...)."""
        return self.hook(bucket).asset_uri(prefix)

    def to_connection(self) -> Any:
        """An in-memory ``airflow.sdk.Connection`` (for hooks, before or without storing it)."""
        from airflow.sdk import Connection

        return Connection(
            conn_id=self.name,
            conn_type=self.conn_type,
            host=self.host,
            login=self.login,
            password=self.password,
            port=self.port,
            extra=json.dumps(self.extra),
        )

    @classmethod
    def from_fields(
        cls, name: str, conn_type: str, host: Any, login: Any, password: Any, port: Any, extra: Any
    ) -> ConnectorSpec:
        parsed: dict[str, Any] = {}
        if isinstance(extra, dict):
            parsed = extra
        elif extra:
            try:
                value = json.loads(extra)
            except ValueError:
                value = {}
            parsed = value if isinstance(value, dict) else {}
        return cls(name, conn_type or "", host or None, login or None, password or None, port or None, parsed)


# ----- credentials files ------------------------------------------------------------------------
CREDS = "'--credentials-file'"


def read_credentials(path: str | None) -> dict[str, Any]:
    """The credentials file as a JSON object; errors name the option, never the content."""
    if not path:
        raise click.BadParameter("required for this connector type (a JSON credentials file)", param_hint=CREDS)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise click.BadParameter(f"cannot read {path}: {reason}", param_hint=CREDS) from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise click.BadParameter(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno})", param_hint=CREDS
        ) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a JSON object", param_hint=CREDS)
    return data


def _is_gcs_key(data: dict[str, Any]) -> bool:
    return data.get("type") == "service_account" or ("private_key" in data and "client_email" in data)


def check_name(name: str) -> str:
    from strm_provider.config import NAME_RE

    if not NAME_RE.match(name):
        raise click.BadParameter(
            f"{name!r} is not a valid name: expected letters, digits, '.', '_' or '-' (at most 200, "
            "starting with a letter or digit)",
            param_hint="'NAME'",
        )
    return name


def s3_spec(
    name: str,
    bucket: str,
    creds: dict[str, Any] | None,
    *,
    role_arn: str | None,
    endpoint_url: str | None,
    region: str | None,
) -> ConnectorSpec:
    """AWS (``aws iam create-access-key`` output) or S3-compatible (url/accessKey/secretKey) credentials;
    ``None``: AWS S3 as the worker's own identity (the default credential chain, then ``role_arn``)."""

    def aws(access_key: str | None, secret_key: str | None) -> ConnectorSpec:
        _bucket(bucket, S3_BUCKET_RE, "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        extra: dict[str, Any] = {"bucket": bucket}
        for k, v in (("role_arn", role_arn), ("endpoint_url", endpoint_url), ("region", region)):
            if v:
                extra[k] = v
        return ConnectorSpec(name, "strm_s3", login=access_key, password=secret_key, extra=extra)

    if creds is None:
        return aws(None, None)
    if _is_gcs_key(creds):
        raise click.BadParameter(
            "this is a Google service-account key; use `strm create data-connector gcs` for it", param_hint=CREDS
        )
    key = creds.get("AccessKey") if isinstance(creds.get("AccessKey"), dict) else creds
    if key.get("AccessKeyId") or key.get("SecretAccessKey"):
        if not (isinstance(key.get("AccessKeyId"), str) and isinstance(key.get("SecretAccessKey"), str)):
            raise click.BadParameter(
                "AccessKey.AccessKeyId and AccessKey.SecretAccessKey are both required "
                "(the output of `aws iam create-access-key`)",
                param_hint=CREDS,
            )
        return aws(key["AccessKeyId"], key["SecretAccessKey"])
    if "accessKey" in creds or "secretKey" in creds or "url" in creds:
        missing = [k for k in ("url", "accessKey", "secretKey") if not isinstance(creds.get(k), str) or not creds[k]]
        if missing:
            raise click.BadParameter(
                f"an S3-compatible credentials file needs url, accessKey and secretKey (missing {', '.join(missing)})",
                param_hint=CREDS,
            )
        if role_arn:
            raise click.BadParameter("only applies to AWS S3 credentials", param_hint="'--assume-role-arn'")
        api, path = str(creds.get("api") or "s3v4"), str(creds.get("path") or "auto")
        if api != "s3v4":
            raise click.BadParameter(f"field 'api' must be 's3v4', got {api!r}", param_hint=CREDS)
        if path not in ("auto", "path", "virtual"):
            raise click.BadParameter(f"field 'path' must be auto, path or virtual, got {path!r}", param_hint=CREDS)
        url = creds["url"] if "://" in creds["url"] else f"https://{creds['url']}"
        _bucket(bucket, GCS_BUCKET_RE, "a bucket name (lowercase letters, digits, '.', '_', '-')")
        extra = {"bucket": bucket, "api": api, "path": path}
        if region:
            extra["region"] = region
        return ConnectorSpec(
            name, "strm_s3_compatible", host=url, login=creds["accessKey"], password=creds["secretKey"], extra=extra
        )
    raise click.BadParameter(
        'expected the output of `aws iam create-access-key` ({"AccessKey": {"AccessKeyId", '
        '"SecretAccessKey"}}) or an S3-compatible file with url, accessKey, secretKey, api, path',
        param_hint=CREDS,
    )


def gcs_spec(name: str, bucket: str, creds: dict[str, Any] | None, *, endpoint_url: str | None) -> ConnectorSpec:
    """A service-account key file, stored whole as the extra's ``keyfile_dict``; ``None``: the worker's own
    identity (Application Default Credentials)."""
    if creds is None:
        _bucket(bucket, GCS_BUCKET_RE, "a GCS bucket name (lowercase letters, digits, '.', '_', '-')")
        return ConnectorSpec(
            name, "strm_gcs", extra={"bucket": bucket, **({"endpoint_url": endpoint_url} if endpoint_url else {})}
        )
    if not _is_gcs_key(creds):
        raise click.BadParameter(
            'expected a Google service-account key file ("type": "service_account", client_email, private_key)',
            param_hint=CREDS,
        )
    missing = [k for k in ("client_email", "private_key", "token_uri") if not creds.get(k)]
    if missing:
        raise click.BadParameter(f"the service-account key lacks {', '.join(missing)}", param_hint=CREDS)
    _bucket(bucket, GCS_BUCKET_RE, "a GCS bucket name (lowercase letters, digits, '.', '_', '-')")
    extra: dict[str, Any] = {"bucket": bucket, "keyfile_dict": json.dumps(creds)}
    if endpoint_url:
        extra["endpoint_url"] = endpoint_url
    return ConnectorSpec(name, "strm_gcs", extra=extra)


def azure_spec(
    name: str,
    container: str,
    *,
    account_uri: str | None,
    tenant_id: str | None,
    client_id: str | None,
    client_secret: str | None,
) -> ConnectorSpec:
    """Client-secret credentials of a service principal (``--tenant-id``, ``--client-id``, ``--client-secret``);
    without a secret the worker's own identity (tenant and client id, when given, choose it)."""
    required = [(account_uri, "--storage-account-uri")]
    if client_secret:
        required += [(tenant_id, "--tenant-id"), (client_id, "--client-id")]
    for value, opt in required:
        if not value:
            raise click.BadParameter(
                "required for azure-blob-storage" + (" with --client-secret" if opt != "--storage-account-uri" else ""),
                param_hint=f"'{opt}'",
            )
    assert account_uri
    if not re.match(r"^https?://[^/\s]+/?$", account_uri):
        raise click.BadParameter(
            f"expected the storage account's URI without a container, like https://foo.blob.core.windows.net, "
            f"got {account_uri!r}",
            param_hint="'--storage-account-uri'",
        )
    _bucket(container, AZURE_CONTAINER_RE, "a container name (3-63 lowercase letters, digits, '-')", "'CONTAINER'")
    return ConnectorSpec(
        name,
        "strm_azure_blob",
        host=account_uri.rstrip("/"),
        login=client_id or None,
        password=client_secret or None,
        extra={"container": container, **({"tenant_id": tenant_id} if tenant_id else {})},
    )


def _bucket(value: str, pattern: re.Pattern[str], expected: str, hint: str = "'BUCKET'") -> None:
    if not pattern.match(value):
        raise click.BadParameter(f"expected {expected}, got {value!r}", param_hint=hint)
