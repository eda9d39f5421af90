"""What a data connector is made of: the fields of its Airflow connection, built from ``strm create
data-connector``'s flags and credentials files, and read back into the JSON ``strm`` prints (never a secret).

A connector *is* an Airflow connection; what its fields may hold is its type's settings model
(:mod:`strm_provider.connection_settings`), which checks them here as the hook, the Test button and the
UI's form do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from strm_provider.connection_settings import SETTINGS, SettingsError, parse_extra
from strm_provider.connection_types import DATA_CONNECTORS

#: the connector types of ``strm create data-connector TYPE``
KINDS = ("s3", "gcs", "azure-blob-storage")
#: the provider's connection types that are data connectors
CONN_TYPES = tuple(DATA_CONNECTORS)
CREDS = "'--credentials-file'"
#: setting -> the argument or option of ``strm create data-connector`` it comes from
HINTS = {
    "bucket": "'BUCKET'",
    "container": "'CONTAINER'",
    "region": "'--region'",
    "role_arn": "'--assume-role-arn'",
    "endpoint_url": "'--endpoint-url'",
    "sse": "'--sse'",
    "kms_key_id": "'--kms-key-id'",
    "test_prefix": "'--test-prefix'",
    "test_compression": "'--test-compression'",
    "tenant_id": "'--tenant-id'",
}
#: a connection field -> the option it comes from, per connection type (else the credentials file)
HOST_HINTS = {"strm_azure_blob": "'--storage-account-uri'"}


@dataclass
class ConnectorSpec:
    """The fields of one Airflow connection (secrets included: never print).

    ``invalid_extra`` is a stored extra that is not a JSON object, kept as found: the hook reading it
    says what is wrong with it, as it would in a task.
    """

    name: str
    conn_type: str
    host: str | None = None
    login: str | None = None
    password: str | None = None
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    invalid_extra: str | None = None

    def fields(self) -> dict[str, Any]:
        """The connection's fields as Airflow's ``Connection`` takes them (the extra as JSON text)."""
        extra = json.dumps(self.extra) if self.invalid_extra is None else self.invalid_extra
        return {
            "conn_id": self.name,
            "conn_type": self.conn_type,
            "host": self.host,
            "login": self.login,
            "password": self.password,
            "port": self.port,
            "extra": extra,
        }

    def to_connection(self) -> Any:
        """An in-memory Airflow ``Connection`` (for hooks, before or without storing it)."""
        from airflow.providers.common.compat.sdk import Connection

        return Connection(**self.fields())

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

    @classmethod
    def from_fields(
        cls, name: str, conn_type: str, host: Any, login: Any, password: Any, port: Any, extra: Any
    ) -> ConnectorSpec:
        try:
            parsed, invalid = parse_extra(extra), None
        except SettingsError:
            parsed, invalid = {}, extra if isinstance(extra, str) else json.dumps(extra)
        return cls(name, conn_type or "", host or None, login or None, password or None, port or None, parsed, invalid)

    def checked(self) -> ConnectorSpec:
        """This spec, if its type's settings model accepts it; else the model's message for each invalid
        field, given to the argument or option the field came from."""
        try:
            SETTINGS[self.conn_type].parse(self)
        except SettingsError as err:
            first = next(iter(err.problems))
            hint = HOST_HINTS.get(self.conn_type) if first == "host" else HINTS.get(first)
            raise click.BadParameter(str(err), param_hint=hint or CREDS) from None
        return self


# ----- credentials files ------------------------------------------------------------------------
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


def _given(**values: str | None) -> dict[str, str]:
    return {key: value for key, value in values.items() if value}


def s3_spec(name: str, bucket: str, creds: dict[str, Any] | None, **options: str | None) -> ConnectorSpec:
    """AWS (``aws iam create-access-key`` output) or S3-compatible (url/accessKey/secretKey) credentials;
    ``None``: AWS S3 as the worker's own identity (the default credential chain, then ``role_arn``).
    ``options``: ``role_arn``, ``endpoint_url``, ``region``, ``sse``, ``kms_key_id``."""
    if creds is not None and _is_gcs_key(creds):
        raise click.BadParameter(
            "this is a Google service-account key; use `strm create data-connector gcs` for it", param_hint=CREDS
        )
    keys = _aws_keys(creds) if creds is not None else (None, None)
    if keys is None:
        assert creds is not None
        return _s3_compatible_spec(name, bucket, creds, options)
    extra = {"bucket": bucket, **_given(**options)}
    return ConnectorSpec(name, "strm_s3", login=keys[0], password=keys[1], extra=extra)


def _aws_keys(creds: dict[str, Any]) -> tuple[str, str] | None:
    """The access key of ``aws iam create-access-key``'s output, or None for another kind of file."""
    key = creds.get("AccessKey") if isinstance(creds.get("AccessKey"), dict) else creds
    if not (key.get("AccessKeyId") or key.get("SecretAccessKey")):
        return None
    if not (isinstance(key.get("AccessKeyId"), str) and isinstance(key.get("SecretAccessKey"), str)):
        raise click.BadParameter(
            "AccessKey.AccessKeyId and AccessKey.SecretAccessKey are both required "
            "(the output of `aws iam create-access-key`)",
            param_hint=CREDS,
        )
    return key["AccessKeyId"], key["SecretAccessKey"]


def _s3_compatible_spec(name: str, bucket: str, creds: dict[str, Any], options: dict[str, Any]) -> ConnectorSpec:
    if not ("accessKey" in creds or "secretKey" in creds or "url" in creds):
        raise click.BadParameter(
            'expected the output of `aws iam create-access-key` ({"AccessKey": {"AccessKeyId", '
            '"SecretAccessKey"}}) or an S3-compatible file with url, accessKey, secretKey, api, path',
            param_hint=CREDS,
        )
    missing = [k for k in ("url", "accessKey", "secretKey") if not isinstance(creds.get(k), str) or not creds[k]]
    if missing:
        raise click.BadParameter(
            f"an S3-compatible credentials file needs url, accessKey and secretKey (missing {', '.join(missing)})",
            param_hint=CREDS,
        )
    for option in ("role_arn", "sse", "kms_key_id"):
        if options.get(option):
            raise click.BadParameter("only applies to AWS S3 credentials", param_hint=HINTS[option])
    url = creds["url"] if "://" in creds["url"] else f"https://{creds['url']}"
    extra = {"bucket": bucket, "api": str(creds.get("api") or "s3v4"), "path": str(creds.get("path") or "auto")}
    return ConnectorSpec(
        name,
        "strm_s3_compatible",
        host=url,
        login=creds["accessKey"],
        password=creds["secretKey"],
        extra=extra | _given(region=options.get("region")),
    )


def gcs_spec(name: str, bucket: str, creds: dict[str, Any] | None, *, endpoint_url: str | None) -> ConnectorSpec:
    """A service-account key file, stored whole as the extra's ``keyfile_dict``; ``None``: the worker's own
    identity (Application Default Credentials)."""
    extra: dict[str, Any] = {"bucket": bucket, **_given(endpoint_url=endpoint_url)}
    if creds is None:
        return ConnectorSpec(name, "strm_gcs", extra=extra)
    if not _is_gcs_key(creds):
        raise click.BadParameter(
            'expected a Google service-account key file ("type": "service_account", client_email, private_key)',
            param_hint=CREDS,
        )
    missing = [k for k in ("client_email", "private_key", "token_uri") if not creds.get(k)]
    if missing:
        raise click.BadParameter(f"the service-account key lacks {', '.join(missing)}", param_hint=CREDS)
    return ConnectorSpec(name, "strm_gcs", extra={**extra, "keyfile_dict": json.dumps(creds)})


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
    return ConnectorSpec(
        name,
        "strm_azure_blob",
        host=account_uri.rstrip("/"),
        login=client_id or None,
        password=client_secret or None,
        extra={"container": container, **_given(tenant_id=tenant_id)},
    )
