"""Each connection type's settings, parsed in one place: one pydantic model per type.

The hooks (and so Airflow's Test button), ``strm create data-connector`` and the UI's connection form
(:func:`strm_provider.get_provider_info.get_provider_info`) all read a connection through these models,
so they accept the same values and refuse the others with the same message, one per invalid field. A
message names the field as the connection holds it (``extra 'sse' ...``, ``field 'host' ...``) and never
quotes a secret.

Imports only pydantic and the provider's constants, so that provider discovery can read it cheaply.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from strm_provider.connection_types import KAFKA
from strm_provider.naming import EXTENSIONS
from strm_provider.readers import READERS

#: what Airflow's REST API shows instead of a secret
MASKED = "***"
#: S3's rule for bucket names
S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: what S3 buckets, GCS buckets and Azure containers have in common (and what S3-compatible services accept)
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
#: Azure's rule for container names
AZURE_CONTAINER_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: server-side encryption of an S3 connection; ``none``: the bucket's default (the form's empty choice)
SSE_CHOICES = ("none", "AES256", "aws:kms")
#: signature versions of an S3-compatible service, as MinIO's ``mc`` config names them (s3v2: botocore's ``s3``)
S3_APIS = ("s3v4", "s3v2")
ADDRESSING = ("auto", "path", "virtual")
#: the connection's own fields; every other setting is a key of its extra
CONNECTION_FIELDS = ("host", "login", "password", "port")


class SettingsError(ValueError):
    """A connection's settings are invalid: ``problems`` maps each invalid field to its one message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(problems.values()))
        self.problems = problems


def parse_extra(extra: str | dict[str, Any] | None) -> dict[str, Any]:
    """A connection's ``extra`` (JSON text or dict) as a dict."""
    if not extra:
        return {}
    if isinstance(extra, dict):
        return dict(extra)
    try:
        value = json.loads(extra)
    except ValueError as err:
        problem = f"the connection's extra is not valid JSON: {err.msg} at position {err.pos}"
        raise SettingsError({"extra": problem}) from None
    if not isinstance(value, dict):
        raise SettingsError({"extra": "the connection's extra must be a JSON object"})
    return value


def parse_json_field(value: Any, field: str) -> dict[str, Any]:
    """A JSON object given as a dict or as JSON text (as pasted in the UI)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            raise SettingsError({field: f"extra field '{field}' is not valid JSON"}) from None
        if isinstance(parsed, dict):
            return parsed
    raise SettingsError({field: f"extra field '{field}' must be a JSON object"})


def _extra(label: str, description: str, *choices: str, secret: bool = False) -> Any:
    """A setting kept in the connection's extra, with how the UI's form shows it."""
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if choices:  # the first choice is the default: the form's select shows it, never an empty 'null'
        schema |= {"enum": list(choices), "default": choices[0]}
    if secret:
        schema["format"] = "password"
    return Field(default=None, title=label, description=description, json_schema_extra={"form": schema})


def _choice(value: Any, field: str, choices: tuple[str, ...], default: str, spelling: Any = str) -> str:
    """``value`` (``default`` when empty) in the ``spelling`` of ``choices`` (e.g. ``str.upper``), if it is one."""
    text = spelling(str(value or default))
    if text not in choices:
        raise ValueError(f"extra '{field}' must be one of {', '.join(choices)}, got {text!r}")
    return text


def _name(value: Any, field: str, pattern: re.Pattern[str], expected: str) -> str:
    text = str(value or "").strip()
    if not text:
        raise ValueError(f"extra '{field}' is required")
    if not pattern.match(text):
        raise ValueError(f"extra '{field}' must be {expected}, got {text!r}")
    return text


def _problems(err: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for error in err.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SettingsError):
            problems |= cause.problems
        else:
            field = str(error["loc"][0]) if error["loc"] else "extra"
            problems[field] = str(cause) if cause is not None else f"extra '{field}': {error['msg']}"
    return problems


class ConnectionSettings(BaseModel):
    """What every connection has; a subclass per connection type adds its extra's keys and its form."""

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True, coerce_numbers_to_str=True)

    #: how the UI's form shows the connection's own fields (Airflow's ``ui-field-behaviour``)
    hidden_fields: ClassVar[tuple[str, ...]] = ("schema", "port", "extra")
    relabeling: ClassVar[dict[str, str]] = {}
    placeholders: ClassVar[dict[str, str]] = {}

    host: str | None = None
    login: str | None = None
    password: str | None = Field(default=None, repr=False)
    port: int | None = None

    @classmethod
    def parse(cls, conn: Any, **given: Any) -> Self:
        """The settings of ``conn`` (an Airflow connection); ``given`` replaces what the connection says."""
        own = {name: getattr(conn, name, None) or None for name in CONNECTION_FIELDS}
        try:
            return cls.model_validate({**parse_extra(conn.extra), **own, **given})
        except ValidationError as err:
            raise SettingsError(_problems(err)) from None

    @classmethod
    def form(cls) -> dict[str, Any]:
        """The connection form's extra fields and field behaviour, as ``get_provider_info`` declares them."""
        # the type's own fields first, then those every data connector has
        names = dict.fromkeys(name for klass in cls.__mro__ for name in vars(klass).get("__annotations__", {}))
        fields = {
            name: {"label": info.title, "description": info.description, "schema": info.json_schema_extra["form"]}
            for name in names
            if (info := cls.model_fields.get(name))
            and isinstance(info.json_schema_extra, dict)
            and "form" in info.json_schema_extra
        }
        behaviour = {
            "hidden-fields": list(cls.hidden_fields),
            "relabeling": cls.relabeling,
            "placeholders": cls.placeholders,
        }
        return {"conn-fields": fields, "ui-field-behaviour": behaviour}


class KafkaSettings(ConnectionSettings):
    """``strm_kafka``: host = bootstrap servers; login/password = SASL credentials.

    The port is shown and read: a connection given as a URI (``strm_kafka://broker:9093``, as in
    ``AIRFLOW_CONN_*`` variables) holds one server's port there; servers written with their ports win.
    """

    hidden_fields = ("schema", "extra")
    relabeling = {"host": "Bootstrap servers", "login": "SASL username", "password": "SASL password"}
    placeholders = {
        "host": "broker1:9092,broker2:9092",
        "port": "(only for one server written without its port)",
        "login": "(only with SASL)",
    }

    security_protocol: str | None = Field(
        default=None,
        title="Security protocol",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (empty: SASL_PLAINTEXT with a username, else "
        "PLAINTEXT)",
        json_schema_extra={"form": {"type": ["string", "null"], "enum": [*SECURITY_PROTOCOLS, None]}},
    )
    sasl_mechanism: str | None = _extra("SASL mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", *SASL_MECHANISMS)
    ssl_cafile: str | None = _extra("SSL CA file", "Path of the CA bundle that signed the brokers' certificates")
    reader: str | None = _extra(
        "Reader",
        "Client the export reads with: kafka-python (default) or confluent (librdkafka, faster; needs the "
        "[confluent] extra)",
        *READERS,
    )
    schema_registry_url: str | None = _extra(
        "Schema Registry URL",
        "Where exporters with value_format avro, protobuf or json_schema fetch the schemas their records name, "
        "e.g. http://registry:8081 (a Confluent-compatible API: Confluent, Apicurio's /apis/ccompat/v7, "
        "Karapace, Redpanda)",
    )
    schema_registry_user: str | None = _extra("Schema Registry user", "With the password: HTTP basic auth")
    schema_registry_password: str | None = _extra(
        "Schema Registry password", "With the user: HTTP basic auth", secret=True
    )
    schema_registry_token: str | None = _extra(
        "Schema Registry bearer token", "Sent as 'Authorization: Bearer …' (instead of a user)", secret=True
    )
    schema_registry_ca: str | None = _extra(
        "Schema Registry CA file",
        "Path of the CA bundle that signed the registry's certificate (default: the system's)",
    )
    schema_registry_cert: str | None = _extra(
        "Schema Registry client certificate", "Path of the client certificate (PEM), for mutual TLS"
    )
    schema_registry_key: str | None = _extra(
        "Schema Registry client key", "Path of the client certificate's private key (PEM), for mutual TLS"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (self.host or "").strip():
            raise SettingsError({"host": "field 'host' must name the bootstrap servers"})
        default = "SASL_PLAINTEXT" if self.login else "PLAINTEXT"
        problems: dict[str, str] = {}
        checks = {
            "security_protocol": (SECURITY_PROTOCOLS, default, str.upper),
            "sasl_mechanism": (SASL_MECHANISMS, "PLAIN", str.upper),
            "reader": (READERS, READERS[0], str.lower),
        }
        for field, (choices, fallback, spelling) in checks.items():
            value = getattr(self, field)
            try:
                value = _choice(value, field, choices, fallback, spelling)
            except ValueError as err:
                problems[field] = str(err)
            object.__setattr__(self, field, value)
        if not str(self.security_protocol).startswith("SASL"):
            problems.pop("sasl_mechanism", None)
        problems |= self._registry_problems()
        if problems:
            raise SettingsError(problems)
        return self

    def _registry_problems(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        url = (self.schema_registry_url or "").strip()
        if url and not re.match(r"^https?://[^/\s]+", url):
            problems["schema_registry_url"] = f"extra 'schema_registry_url' must be an http(s):// URL, got {url!r}"
        if bool(self.schema_registry_user) != bool(self.schema_registry_password):
            problems["schema_registry_user"] = (
                "extras 'schema_registry_user' and 'schema_registry_password' go together"
            )
        if self.schema_registry_token and self.schema_registry_user:
            problems["schema_registry_token"] = (
                "extra 'schema_registry_token': a bearer token or a user and password, not both"
            )
        if bool(self.schema_registry_cert) != bool(self.schema_registry_key):
            problems["schema_registry_cert"] = "extras 'schema_registry_cert' and 'schema_registry_key' go together"
        return problems

    @property
    def bootstrap_servers(self) -> str:
        servers = (self.host or "").strip()
        if self.port and "," not in servers and ":" not in servers:
            return f"{servers}:{self.port}"
        return servers


class StorageSettings(ConnectionSettings):
    """What every data connector's extra may hold: where and how the Test button writes its file."""

    test_prefix: str | None = _extra(
        "Test prefix",
        "Where the Test button writes its .strm_test_<uuid>.jsonl, holding no event: an exporter's path prefix "
        "({date} and {hour} are filled from the current time)",
    )
    test_compression: str | None = _extra(
        "Test file compression",
        "The ending of the Test button's file: that of the exporters writing here (none: .jsonl, gzip: .jsonl.gz, "
        "zstd: .jsonl.zst), as their policy must allow",
        *EXTENSIONS,
    )

    @field_validator("test_prefix")
    @classmethod
    def _prefix(cls, value: Any) -> str:
        return str(value or "").strip("/")

    @field_validator("test_compression")
    @classmethod
    def _compression(cls, value: Any) -> str:
        text = str(value or "none")
        if text not in EXTENSIONS:
            raise ValueError(f"extra field 'test_compression': expected one of {', '.join(EXTENSIONS)}, got {text!r}")
        return text


class S3Settings(StorageSettings):
    """``strm_s3``: an AWS S3 bucket. login/password = access key id/secret (or ``credentials_json``: what
    ``aws iam create-access-key`` prints); neither: the AWS default credential chain."""

    hidden_fields = ("host", "schema", "port", "extra")
    relabeling = {"login": "AWS access key ID", "password": "AWS secret access key"}
    placeholders = {
        "login": "AKIA... (empty: the worker's own AWS identity)",
        "password": "(or Credentials JSON below; both empty: the AWS default credential chain)",
    }

    bucket: str = _extra("Bucket", "Name of the S3 bucket (required)")
    region: str | None = _extra("Region", "Bucket region; found with GetBucketLocation when empty")
    region_name: str | None = None  # the Amazon provider's spelling of ``region``
    endpoint_url: str | None = _extra("Endpoint URL", "Only for private endpoints or local S3 servers")
    role_arn: str | None = _extra(
        "Role ARN", "A role to assume for writing, on top of the key or the worker's identity (empty: none)"
    )
    sse: str | None = _extra(
        "Server-side encryption",
        "AES256 or aws:kms for every object written; none: the bucket's default",
        *SSE_CHOICES,
    )
    kms_key_id: str | None = _extra(
        "KMS key", "With aws:kms: the key id or ARN (grant kms:GenerateDataKey on it); empty: aws/s3"
    )
    credentials_json: Any = _extra(
        "Credentials JSON", "What `aws iam create-access-key` prints (instead of key id and secret)", secret=True
    )
    path: str | None = None  # addressing style: auto | path | virtual

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: dict[str, Any]) -> dict[str, Any]:
        if not data.get("credentials_json") or (data.get("login") and data.get("password")):
            return data
        creds = parse_json_field(data["credentials_json"], "credentials_json")
        key = creds.get("AccessKey", creds)
        access, secret = key.get("AccessKeyId"), key.get("SecretAccessKey")
        if not (isinstance(access, str) and isinstance(secret, str) and access and secret):
            raise SettingsError(
                {
                    "credentials_json": "extra 'credentials_json' must hold AccessKey.AccessKeyId and "
                    "AccessKey.SecretAccessKey (the output of aws iam create-access-key)"
                }
            )
        return {**data, "login": access, "password": secret}

    @field_validator("bucket", mode="before")
    @classmethod
    def _bucket(cls, value: Any) -> str:
        return _name(value, "bucket", S3_BUCKET_RE, "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")

    @field_validator("sse")
    @classmethod
    def _sse(cls, value: Any) -> str | None:
        text = str(value or "").strip()
        if text in ("", "none"):
            return None
        if text not in SSE_CHOICES:
            raise ValueError(f"extra 'sse' must be AES256 or aws:kms, got {text!r}")
        return text

    @model_validator(mode="after")
    def _kms(self) -> Self:
        if self.kms_key_id and self.sse != "aws:kms":
            raise SettingsError({"kms_key_id": "extra 'kms_key_id' needs extra 'sse' set to aws:kms"})
        object.__setattr__(self, "region", self.region or self.region_name)
        return self

    @property
    def addressing(self) -> str:
        return self.path if self.path in ("path", "virtual") else "auto"

    @property
    def signature(self) -> str | None:
        """botocore's signature version (None: its default, SigV4)."""
        return None


class S3CompatibleSettings(StorageSettings):
    """``strm_s3_compatible``: any S3 API. host = service URL, login/password = access/secret key, or
    ``credentials_json`` with ``url``, ``accessKey``, ``secretKey``, ``api``, ``path`` (MinIO's format)."""

    hidden_fields = ("schema", "port", "extra")
    relabeling = {"host": "Service URL", "login": "Access key", "password": "Secret key"}
    placeholders = {"host": "https://storage.googleapis.com", "login": "GOOG1E..."}

    bucket: str = _extra("Bucket", "Name of the bucket (required)")
    api: str | None = _extra("API", "Signature version: s3v4, or s3v2 for services without SigV4", *S3_APIS)
    path: str | None = _extra("Addressing", "auto, path or virtual", *ADDRESSING)
    credentials_json: Any = _extra("Credentials JSON", "JSON with url, accessKey, secretKey, api, path", secret=True)
    region: str | None = None
    #: S3-compatible services are asked for no server-side encryption and no role
    sse: ClassVar[None] = None
    kms_key_id: ClassVar[None] = None
    role_arn: ClassVar[None] = None

    @model_validator(mode="before")
    @classmethod
    def _file(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The credentials JSON fills what the connection's own fields and extra leave empty."""
        if not data.get("credentials_json"):
            return data
        creds = parse_json_field(data["credentials_json"], "credentials_json")
        given = {"host": "url", "login": "accessKey", "password": "secretKey", "api": "api", "path": "path"}
        return {**data, **{field: data.get(field) or creds.get(key) for field, key in given.items()}}

    @field_validator("bucket", mode="before")
    @classmethod
    def _bucket(cls, value: Any) -> str:
        return _name(value, "bucket", BUCKET_RE, "a bucket name (lowercase letters, digits, '.', '_', '-')")

    @field_validator("region")
    @classmethod
    def _region(cls, value: Any) -> str:
        """S3-compatible services take any region; botocore signs with it."""
        return str(value or "us-east-1")

    @field_validator("api")
    @classmethod
    def _api(cls, value: Any) -> str:
        return _choice(value, "api", S3_APIS, S3_APIS[0])

    @field_validator("path")
    @classmethod
    def _path(cls, value: Any) -> str:
        return _choice(value, "path", ADDRESSING, ADDRESSING[0])

    @model_validator(mode="after")
    def _service(self) -> Self:
        problems = {}
        if not self.host:
            problems["host"] = "field 'host' (the service URL) is required"
        if not (self.login and self.password):
            problems["login"] = "an access key and a secret key are required"
        if problems:
            raise SettingsError(problems)
        return self

    @property
    def endpoint_url(self) -> str:
        url = str(self.host)
        return url if "://" in url else f"https://{url}"

    @property
    def addressing(self) -> str:
        return str(self.path)

    @property
    def signature(self) -> str:
        return "s3v4" if self.api == "s3v4" else "s3"


class GcsSettings(StorageSettings):
    """``strm_gcs``: a GCS bucket, written with a service-account key (``keyfile_dict`` or ``key_path``) or,
    with neither, the worker's own identity (Application Default Credentials)."""

    hidden_fields = ("host", "schema", "port", "login", "password", "extra")

    bucket: str = _extra("Bucket", "Name of the GCS bucket (required)")
    keyfile_dict: Any = _extra(
        "Service account key JSON",
        "The JSON key file's content (empty, with no key path: the worker's own identity, from Application "
        "Default Credentials: GKE Workload Identity, a federation config, the VM)",
        secret=True,
    )
    key_path: str | None = _extra("Service account key path", "Path of the JSON key file (instead of pasting it)")
    impersonation_chain: Any = _extra(
        "Impersonation chain", "Service accounts to impersonate, comma-separated, the last one writing (empty: none)"
    )
    iam_endpoint_url: str | None = _extra("IAM Credentials endpoint", "Only for private endpoints or emulators")
    endpoint_url: str | None = _extra("Endpoint URL", "Only for private endpoints or emulators")

    @field_validator("bucket", mode="before")
    @classmethod
    def _bucket(cls, value: Any) -> str:
        return _name(value, "bucket", BUCKET_RE, "a GCS bucket name (lowercase letters, digits, '.', '_', '-')")

    @field_validator("keyfile_dict", mode="before")
    @classmethod
    def _key(cls, value: Any) -> dict[str, Any] | str | None:
        """The key as a JSON object; a remote Airflow shows it as its mask, which is left to the server
        (where the key is read) and still says that a key is set."""
        if value == MASKED:
            return MASKED
        return parse_json_field(value, "keyfile_dict") if value else None

    @field_validator("impersonation_chain", mode="before")
    @classmethod
    def _chain(cls, value: Any) -> list[str]:
        """A list, or a comma-separated string; the last one writes."""
        chain = value or []
        if isinstance(chain, str):
            chain = [part.strip() for part in chain.split(",")]
        return [str(part) for part in chain if part]


class AzureBlobSettings(StorageSettings):
    """``strm_azure_blob``: a blob container. host = storage account URI, login/password = a service
    principal's client id/secret (no secret: the worker's own identity), extra ``container``, ``tenant_id``."""

    relabeling = {"host": "Storage account URI", "login": "Client (application) ID", "password": "Client secret"}
    placeholders = {
        "host": "https://foo.blob.core.windows.net",
        "login": "(empty: the identity's own, e.g. AZURE_CLIENT_ID)",
        "password": "(empty: the worker's own identity: workload identity, managed identity)",
    }

    container: str = _extra("Container", "Name of the blob container (required)")
    tenant_id: str | None = _extra(
        "Tenant ID", "Microsoft Entra tenant of the application (empty without a secret: AZURE_TENANT_ID)"
    )
    authority_host: str | None = _extra("Authority host", "Only for sovereign clouds or private authorities")

    @field_validator("container", mode="before")
    @classmethod
    def _container(cls, value: Any) -> str:
        return _name(value, "container", AZURE_CONTAINER_RE, "a container name (3-63 lowercase letters, digits, '-')")

    @model_validator(mode="after")
    def _account(self) -> Self:
        if not (self.host or "").strip():
            raise SettingsError(
                {"host": "field 'host' must be the storage account URI (https://<account>.blob.core.windows.net)"}
            )
        return self

    @property
    def account_uri(self) -> str:
        """The storage account URI, e.g. ``https://foo.blob.core.windows.net`` (Azurite: ``.../devstoreaccount1``)."""
        host = str(self.host).strip().rstrip("/")
        return host if "://" in host else f"https://{host}"


#: connection type -> the model of its settings
SETTINGS: dict[str, type[ConnectionSettings]] = {
    KAFKA: KafkaSettings,
    "strm_s3": S3Settings,
    "strm_s3_compatible": S3CompatibleSettings,
    "strm_gcs": GcsSettings,
    "strm_azure_blob": AzureBlobSettings,
}
