"""AWS S3 and S3-compatible data connectors, on the official Amazon provider and boto3.

Only two permissions are ever used, as the minimal policy in the README grants: ``s3:GetBucketLocation``
on the bucket (to find its region when the connection does not say) and ``s3:PutObject`` below the
exporter's prefix. Multipart uploads (CreateMultipartUpload/UploadPart/Complete) are covered by
``s3:PutObject``; nothing lists, reads, heads or deletes.

What a connection holds is :mod:`strm_provider.connection_settings`; how clients are built,
:mod:`~strm_provider.hooks.s3_client`; what a refusal means, :mod:`~strm_provider.hooks.s3_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from strm_provider.connection_settings import S3CompatibleSettings, S3Settings
from strm_provider.connection_types import DATA_CONNECTORS, PROVIDER_DATA_CONNECTORS
from strm_provider.hooks import s3_errors
from strm_provider.hooks.storage import ProviderConnectionHook, StorageError, StorageHook

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

# The clients (boto3, the Amazon provider's S3Hook: about 0.1 CPU s to import) come from s3_client, imported
# where a client is built: a plan that only checks the connection's type never builds one.


class StrmS3Hook(StorageHook):
    """Data connector for an AWS S3 bucket (connection type ``strm_s3``; its settings: :class:`S3Settings`).

    login/password = access key id/secret access key (or ``credentials_json``: what
    ``aws iam create-access-key`` prints), extra ``bucket``, optional ``region`` (else discovered
    with GetBucketLocation), ``endpoint_url``, ``role_arn``, ``test_prefix``, and server-side
    encryption of every object: ``sse`` (``AES256`` or ``aws:kms``) with ``kms_key_id`` (a KMS key id
    or ARN; without it S3 uses the account's ``aws/s3`` key).
    """

    conn_type = "strm_s3"
    hook_name = DATA_CONNECTORS[conn_type].name
    default_conn_name = f"{conn_type}_default"
    asset_scheme = "s3"
    settings_class = S3Settings

    @property
    def bucket(self) -> str:
        return str(self.settings.bucket)

    # ----- client -------------------------------------------------------------------------------
    def _amazon_hook(self, region: str) -> S3Hook:
        """The Amazon provider's hook whose session (credentials, role assumption) every client comes from."""
        from strm_provider.hooks.s3_client import amazon_hook

        return amazon_hook(self.conn_id, self.settings, region)

    def _client_for(self, region: str | None, service: str = "s3") -> Any:
        from strm_provider.hooks.s3_client import DEFAULT_REGION, session_client

        return session_client(self._amazon_hook(region or DEFAULT_REGION), region, service)

    def identity(self) -> str:
        """Who the connection writes as (STS GetCallerIdentity, which needs no permission): an IAM user's or
        an assumed role's ARN, whether it came from the connection's key, ``role_arn`` or the AWS default
        credential chain (environment, web identity token file, container or instance role)."""
        return str(self._client_for(self.settings.region, "sts").get_caller_identity()["Arn"])

    def discover_region(self) -> str:
        """The bucket's region, via GetBucketLocation (the one non-write permission we need)."""
        from strm_provider.hooks.s3_client import DEFAULT_REGION

        location = self._client_for(None).get_bucket_location(Bucket=self.bucket).get("LocationConstraint")
        return {None: DEFAULT_REGION, "": DEFAULT_REGION, "EU": "eu-west-1"}.get(location, location)

    @cached_property
    def client(self) -> Any:
        region = self.settings.region
        if not region:
            try:
                region = self.discover_region()
            except (ClientError, BotoCoreError) as err:
                cause = s3_errors.location_cause(err, self.bucket, self.settings.kms_key_id)
                raise StorageError(
                    f"data connector '{self.conn_id}' ({self.conn_type}): GetBucketLocation of bucket "
                    f"'{self.bucket}' failed: {cause}"
                ) from None
        return self._client_for(region)

    # ----- StorageHook ----------------------------------------------------------------------------
    def _upload_stream(self, key: str, reader: IO[bytes]) -> None:
        from strm_provider.hooks.s3_client import TRANSFER, upload_args

        self.client.upload_fileobj(reader, self.bucket, key, ExtraArgs=upload_args(self.settings, key), Config=TRANSFER)

    def write_empty(self, key: str, body: bytes = b"") -> None:
        """One PutObject, whose answer must confirm the encryption the connection asks for."""
        from strm_provider.hooks.s3_client import upload_args

        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **upload_args(self.settings, key))
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
        return s3_errors.explain(err, self.settings.kms_key_id)


class StrmS3CompatibleHook(StrmS3Hook):
    """Data connector for any S3 API (SeaweedFS, MinIO, GCS HMAC...): ``strm_s3_compatible``.

    host = service URL, login/password = access/secret key, extra ``bucket``, ``api`` (``s3v4``, or
    ``s3v2`` for services without SigV4), ``path`` (``auto`` | ``path`` | ``virtual``), or a credentials
    JSON (``url``, ``accessKey``, ``secretKey``, ``api``, ``path``) in ``credentials_json``; its settings:
    :class:`S3CompatibleSettings`.
    """

    conn_type = "strm_s3_compatible"
    hook_name = DATA_CONNECTORS[conn_type].name
    default_conn_name = f"{conn_type}_default"
    settings_class = S3CompatibleSettings

    def identity(self) -> str:
        """S3-compatible services have no STS: the access key id (never the secret) names the identity."""
        return f"access key {self.settings.login}"


class AwsS3Hook(ProviderConnectionHook, StrmS3Hook):
    """Data connector on an ``aws`` connection of the Amazon provider, the bucket named by the exporter.

    The connection is read by the provider's own hook (S3Hook), so whatever it supports works
    unchanged: keys, profiles, ``role_arn`` assumption, the default credential chain, ``endpoint_url``,
    ``config_kwargs`` (which override this hook's bounded retries and timeouts), secrets backends.
    """

    conn_type = "aws"
    hook_name = PROVIDER_DATA_CONNECTORS[conn_type].name
    default_conn_name = "aws_default"

    def read_settings(self, conn: Any) -> S3Settings:
        """The exporter's bucket, and what the connection's extra says of the region and encryption; the
        credentials are the provider hook's to read."""
        return S3Settings.parse(conn, bucket=self.bucket, login=None, password=None, credentials_json=None)

    def _amazon_hook(self, region: str) -> S3Hook:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        from strm_provider.hooks.s3_client import botocore_config

        hook = self.provider_hook(S3Hook, aws_conn_id=self.conn_id, region_name=region)
        wrapper = hook.conn_config
        wrapper.botocore_config = botocore_config(self.settings).merge(wrapper.botocore_config or Config())
        return hook
