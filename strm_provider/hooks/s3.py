"""AWS S3 and S3-compatible data connectors, on the official Amazon provider and boto3.

Only two permissions are ever used, as the minimal policy in the README grants: ``s3:GetBucketLocation``
on the bucket (to find its region when the connection does not say) and ``s3:PutObject`` below the
exporter's prefix. Multipart uploads (CreateMultipartUpload/UploadPart/Complete) are covered by
``s3:PutObject``; nothing lists, reads, heads or deletes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import IO, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
from airflow.sdk.log import mask_secret
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
)

from strm_provider.hooks.storage import (
    ProviderConnectionHook,
    StorageError,
    StorageHook,
    extra_json,
    parse_json_field,
)
from strm_provider.naming import content_type

#: 8 MiB parts, at most 2 in memory per file (s3transfer's default is 10): a file being uploaded holds
#: 16 MiB, and the confluent reader's export stayed as fast as with 3 x 16 MiB (bench/run.py).
PART_SIZE = 8 * 1024 * 1024
#: A pipe is not seekable, so s3transfer buffers parts in memory: cap them.
TRANSFER = TransferConfig(
    multipart_threshold=PART_SIZE,
    multipart_chunksize=PART_SIZE,
    max_concurrency=4,
    use_threads=True,
)
TRANSFER.max_in_memory_upload_chunks = 2  # an s3transfer setting boto3's constructor does not take
#: Bounded retries: a wrong key or a dead endpoint fails in seconds, not minutes.
RETRIES = {"max_attempts": 4, "mode": "standard"}
#: Seconds to open a connection / to wait on a silent socket, per attempt (a hung endpoint fails in
#: about RETRIES x READ_TIMEOUT plus backoff instead of hanging the task).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60

CAUSES = {
    "AccessDenied": "access denied (does the policy allow s3:PutObject on this prefix and this file ending: *.jsonl, "
    "or *.jsonl.gz / *.jsonl.zst when compressed?)",
    "InvalidAccessKeyId": "the access key id is not known to the storage (wrong or revoked key)",
    "SignatureDoesNotMatch": "the secret access key is wrong",
    "NoSuchBucket": "the bucket does not exist",
    "AllAccessDisabled": "all access to this bucket is disabled",
    "ExpiredToken": "the credentials have expired",
}


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to build a client, read from one connection (secret included: never log)."""

    bucket: str
    access_key: str | None
    secret_key: str | None
    region: str | None
    endpoint_url: str | None
    role_arn: str | None
    addressing: str  # auto | path | virtual
    signature: str | None
    sse: str | None = None  # AES256 | aws:kms
    kms_key_id: str | None = None

    def upload_args(self, key: str) -> dict[str, str]:
        """What every PutObject/CreateMultipartUpload carries: the content type and the encryption."""
        args = {"ContentType": content_type(key)}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


class _DataConnectorWrapper(AwsConnectionWrapper):
    """The provider's view of a connection, built from a data connector's settings: it logs where the
    credentials came from, and names the data connector there, not an ``aws`` connection there is none of."""

    @property
    def conn_repr(self) -> str:
        return f"data connector '{self.conn_id}'"


class _ConnectionS3Hook(S3Hook):
    """The Amazon provider's S3Hook, fed our connection's settings instead of an ``aws`` connection.

    Reusing it gives us the provider's session factory (role assumption, endpoint handling).
    """

    def __init__(self, wrapper: AwsConnectionWrapper, **kwargs: Any) -> None:
        super().__init__(aws_conn_id=None, **kwargs)
        self._wrapper = wrapper

    @cached_property
    def conn_config(self) -> AwsConnectionWrapper:
        return self._wrapper


class StrmS3Hook(StorageHook):
    """Data connector for an AWS S3 bucket (connection type ``strm_s3``).

    login/password = access key id/secret access key (or ``credentials_json``: what
    ``aws iam create-access-key`` prints), extra ``bucket``, optional ``region`` (else discovered
    with GetBucketLocation), ``endpoint_url``, ``role_arn``, ``test_prefix``, and server-side
    encryption of every object: ``sse`` (``AES256`` or ``aws:kms``) with ``kms_key_id`` (a KMS key id
    or ARN; without it S3 uses the account's ``aws/s3`` key).
    """

    conn_type = "strm_s3"
    hook_name = "STRM AWS S3"
    default_conn_name = "strm_s3_default"
    asset_scheme = "s3"

    # ----- settings ---------------------------------------------------------------------------
    @cached_property
    def settings(self) -> S3Settings:
        conn = self.get_connection(self.conn_id)
        extra = extra_json(conn.extra)
        return self._settings(conn, extra)

    def _settings(self, conn: Any, extra: dict[str, Any]) -> S3Settings:
        access, secret = conn.login, conn.password
        if extra.get("credentials_json") and not (access and secret):
            creds = parse_json_field(extra["credentials_json"], "credentials_json")
            key = creds.get("AccessKey", creds)
            access, secret = key.get("AccessKeyId"), key.get("SecretAccessKey")
            if not (access and secret):
                raise StorageError(
                    f"data connector '{self.conn_id}': extra 'credentials_json' must hold "
                    "AccessKey.AccessKeyId and AccessKey.SecretAccessKey (the output of aws iam create-access-key)"
                )
        sse = str(extra.get("sse") or "").strip() or None
        kms_key_id = str(extra.get("kms_key_id") or "").strip() or None
        if sse not in (None, "AES256", "aws:kms"):
            raise StorageError(f"data connector '{self.conn_id}': extra 'sse' must be AES256 or aws:kms, got {sse!r}")
        if kms_key_id and sse != "aws:kms":
            raise StorageError(f"data connector '{self.conn_id}': extra 'kms_key_id' needs extra 'sse' set to aws:kms")
        return S3Settings(
            bucket=self._require_bucket(extra),
            access_key=access,
            secret_key=secret,
            region=extra.get("region") or extra.get("region_name"),
            endpoint_url=extra.get("endpoint_url"),
            role_arn=extra.get("role_arn"),
            addressing=str(extra.get("path") or "auto"),
            signature=None,
            sse=sse,
            kms_key_id=kms_key_id,
        )

    def _require_bucket(self, extra: dict[str, Any]) -> str:
        bucket = str(extra.get("bucket") or "").strip()
        if not bucket:
            raise StorageError(f"data connector '{self.conn_id}': extra field 'bucket' is required")
        return bucket

    @property
    def bucket(self) -> str:
        return self.settings.bucket

    # ----- client -------------------------------------------------------------------------------
    def _config(self) -> Config:
        """Bounded retries and timeouts, and the connection's addressing style."""
        s = self.settings
        return Config(
            retries=RETRIES,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            signature_version=s.signature,
            s3={"addressing_style": s.addressing if s.addressing in ("path", "virtual") else "auto"},
        )

    def _amazon_hook(self, region: str) -> S3Hook:
        """The Amazon provider's hook whose session (credentials, role assumption) every client comes from."""
        s = self.settings
        if s.secret_key:
            mask_secret(s.secret_key)
        extra: dict[str, Any] = {"region_name": region}
        if s.endpoint_url:
            extra["endpoint_url"] = s.endpoint_url
        if s.role_arn:
            extra["role_arn"] = s.role_arn
        wrapper = _DataConnectorWrapper.from_connection_metadata(
            conn_id=self.conn_id, login=s.access_key, password=s.secret_key, extra=extra
        )
        # The hook reads its botocore Config from the wrapper it is given (``conn_config``), not from
        # its ``config`` argument: without this the retries, timeouts and addressing style were ignored.
        wrapper.botocore_config = self._config()
        return _ConnectionS3Hook(wrapper, region_name=region, config=wrapper.botocore_config)

    def _client_for(self, region: str | None, service: str = "s3") -> Any:
        hook = self._amazon_hook(region or "us-east-1")
        wrapper = hook.conn_config
        # The provider's session (credentials, role assumption), but not its ``get_conn()``: that builds a
        # user-agent string from ``inspect.stack()``, which took seconds per client in a deep call stack.
        return hook.get_session(region_name=region or "us-east-1").client(
            service,
            endpoint_url=wrapper.get_service_endpoint_url(service),
            config=wrapper.botocore_config,
            verify=hook.verify,
        )

    def identity(self) -> str:
        """Who the connection writes as (STS GetCallerIdentity, which needs no permission): an IAM user's or
        an assumed role's ARN, whether it came from the connection's key, ``role_arn`` or the AWS default
        credential chain (environment, web identity token file, container or instance role)."""
        return str(self._client_for(self.settings.region, "sts").get_caller_identity()["Arn"])

    def discover_region(self) -> str:
        """The bucket's region, via GetBucketLocation (the one non-write permission we need)."""
        location = self._client_for(None).get_bucket_location(Bucket=self.bucket).get("LocationConstraint")
        return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)

    @cached_property
    def client(self) -> Any:
        region = self.settings.region
        if not region:
            try:
                region = self.discover_region()
            except (ClientError, BotoCoreError) as err:
                raise self._location_error(err) from None
        return self._client_for(region)

    def _location_error(self, err: BaseException) -> StorageError:
        """GetBucketLocation refused: under the minimal policy a wrong bucket name is refused the same way."""
        cause = self.explain(err)
        if isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") == "AccessDenied":
            cause = (
                f"AccessDenied: the key may not call s3:GetBucketLocation on arn:aws:s3:::{self.bucket}. Under the "
                "minimal policy a misspelled or missing bucket is refused the same way: check the bucket name and "
                "the policy (or set the connection's region, which skips this call)"
            )
        return StorageError(
            f"data connector '{self.conn_id}' ({self.conn_type}): GetBucketLocation of bucket '{self.bucket}' "
            f"failed: {cause}"
        )

    # ----- StorageHook ----------------------------------------------------------------------------
    def _upload_stream(self, key: str, reader: IO[bytes]) -> None:
        self.client.upload_fileobj(reader, self.bucket, key, ExtraArgs=self.settings.upload_args(key), Config=TRANSFER)

    def write_empty(self, key: str, body: bytes = b"") -> None:
        """One PutObject, whose answer must confirm the encryption the connection asks for."""
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **self.settings.upload_args(key))
        except Exception as err:
            raise self._as_storage_error(err, key) from err
        sse = self.settings.sse
        if sse and answer.get("ServerSideEncryption") != sse:
            raise StorageError(
                f"data connector '{self.conn_id}' ({self.conn_type}): the storage did not confirm server-side "
                f"encryption {sse} of {self.asset_uri(key)} (it answered {answer.get('ServerSideEncryption')!r})"
            )

    def test_details(self) -> Iterator[str]:
        s = self.settings
        if s.sse:
            yield f"encrypted with {s.sse}" + (f" (key {s.kms_key_id})" if s.kms_key_id else "")
        try:
            yield f"as {self.identity()}"
        except (ClientError, BotoCoreError) as err:  # the write proved the credentials; the name is extra
            self.log.info("GetCallerIdentity failed: %s", self.explain(err))

    def describe(self) -> dict[str, Any]:
        return {"s3Bucket": {"bucketName": self.bucket}}

    def explain(self, err: BaseException) -> str:
        if isinstance(err, ClientError):
            code = err.response.get("Error", {}).get("Code", "")
            message = err.response.get("Error", {}).get("Message", "request refused")
            if "kms" in f"{code} {message}".lower():
                key = self.settings.kms_key_id or "the account's aws/s3 key"
                return f"{code}: KMS refused ({message}); the policy must allow kms:GenerateDataKey on {key}"
            return f"{code}: {CAUSES.get(code, message)}"
        if isinstance(err, EndpointConnectionError):
            return f"the storage endpoint is unreachable ({err.kwargs.get('endpoint_url', '')})"
        if isinstance(err, NoCredentialsError | CredentialRetrievalError):
            return (
                f"no AWS credentials: the connection holds no key, and the default credential chain (environment, "
                f"web identity token file, container or instance role) found none ({type(err).__name__}: {err})"
            )
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ClientError | EndpointConnectionError):
            return self.explain(cause)
        return f"{type(err).__name__}: {err}"


class StrmS3CompatibleHook(StrmS3Hook):
    """Data connector for any S3 API (SeaweedFS, MinIO, GCS HMAC...): ``strm_s3_compatible``.

    host = service URL, login/password = access/secret key, extra ``bucket``, ``api`` (``s3v4``),
    ``path`` (``auto`` | ``path`` | ``virtual``), or a credentials JSON (``url``, ``accessKey``,
    ``secretKey``, ``api``, ``path``) in ``credentials_json``.
    """

    conn_type = "strm_s3_compatible"
    hook_name = "STRM S3-compatible storage"
    default_conn_name = "strm_s3_compatible_default"

    def identity(self) -> str:
        """S3-compatible services have no STS: the access key id (never the secret) names the identity."""
        return f"access key {self.settings.access_key}"

    def _settings(self, conn: Any, extra: dict[str, Any]) -> S3Settings:
        creds: dict[str, Any] = {}
        if extra.get("credentials_json"):
            creds = parse_json_field(extra["credentials_json"], "credentials_json")
        url = conn.host or creds.get("url")
        if url and "://" not in url:
            url = f"https://{url}"
        if not url:
            raise StorageError(f"data connector '{self.conn_id}': field 'host' (the service URL) is required")
        access = conn.login or creds.get("accessKey")
        secret = conn.password or creds.get("secretKey")
        if not (access and secret):
            raise StorageError(f"data connector '{self.conn_id}': an access key and a secret key are required")
        api = str(extra.get("api") or creds.get("api") or "s3v4")
        if api not in ("s3v4", "s3v2"):
            raise StorageError(f"data connector '{self.conn_id}': extra 'api' must be 's3v4', got {api!r}")
        path = str(extra.get("path") or creds.get("path") or "auto")
        if path not in ("auto", "path", "virtual"):
            raise StorageError(
                f"data connector '{self.conn_id}': extra 'path' must be auto, path or virtual, got {path!r}"
            )
        return S3Settings(
            bucket=self._require_bucket(extra),
            access_key=access,
            secret_key=secret,
            region=extra.get("region") or "us-east-1",
            endpoint_url=url,
            role_arn=None,
            addressing=path,
            signature="s3v4" if api == "s3v4" else "s3",
        )


class AwsS3Hook(ProviderConnectionHook, StrmS3Hook):
    """Data connector on an ``aws`` connection of the Amazon provider, the bucket named by the exporter.

    The connection is read by the provider's own hook (S3Hook), so whatever it supports works
    unchanged: keys, profiles, ``role_arn`` assumption, the default credential chain, ``endpoint_url``,
    ``config_kwargs`` (which override this hook's bounded retries and timeouts), secrets backends.
    """

    conn_type = "aws"
    hook_name = "Amazon Web Services (bucket named by the exporter)"
    default_conn_name = "aws_default"

    def _settings(self, conn: Any, extra: dict[str, Any]) -> S3Settings:
        return S3Settings(
            bucket=self.bucket,
            access_key=None,
            secret_key=None,
            region=extra.get("region_name"),
            endpoint_url=None,
            role_arn=None,
            addressing="auto",
            signature=None,
        )

    def _amazon_hook(self, region: str) -> S3Hook:
        hook = self.provider_hook(S3Hook, aws_conn_id=self.conn_id, region_name=region)
        wrapper = hook.conn_config
        wrapper.botocore_config = self._config().merge(wrapper.botocore_config or Config())
        return hook
