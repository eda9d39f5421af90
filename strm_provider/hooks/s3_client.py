"""How the S3 hooks build their boto3 clients: the Amazon provider's session, bounded retries and
timeouts, and uploads whose memory is bounded."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
from airflow.providers.common.compat.sdk import mask_secret
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.loaders import create_loader

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
#: where a client goes when nothing names the bucket's region yet
DEFAULT_REGION = "us-east-1"
#: botocore's data (service models, endpoint rules), parsed once per process: each session the provider's hook
#: makes would load its own from JSON, about 0.1 to 0.2 CPU s per client, and a task makes two or three
_DATA_LOADER = create_loader()


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


def botocore_config(settings: Any) -> Config:
    """Bounded retries and timeouts, and the connection's signature version and addressing style."""
    return Config(
        retries=RETRIES,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        signature_version=settings.signature,
        s3={"addressing_style": settings.addressing},
    )


def amazon_hook(conn_id: str, settings: Any, region: str) -> S3Hook:
    """The Amazon provider's hook over a data connector's settings: every client's session (credentials,
    role assumption) comes from it."""
    if settings.password:
        mask_secret(settings.password)
    extra: dict[str, Any] = {"region_name": region}
    if settings.endpoint_url:
        extra["endpoint_url"] = settings.endpoint_url
    if settings.role_arn:
        extra["role_arn"] = settings.role_arn
    wrapper = _DataConnectorWrapper.from_connection_metadata(
        conn_id=conn_id, login=settings.login, password=settings.password, extra=extra
    )
    # The hook reads its botocore Config from the wrapper it is given (``conn_config``), not from its
    # ``config`` argument: the wrapper carries it so the bounded retries, timeouts and addressing apply.
    wrapper.botocore_config = botocore_config(settings)
    return _ConnectionS3Hook(wrapper, region_name=region, config=wrapper.botocore_config)


def session_client(hook: S3Hook, region: str | None, service: str) -> Any:
    """A ``service`` client from the provider hook's session (credentials, role assumption), but not from its
    ``get_conn()``: that builds a user-agent string from ``inspect.stack()``, which took seconds per client in a
    deep call stack."""
    wrapper = hook.conn_config
    session = hook.get_session(region_name=region or DEFAULT_REGION)
    session._session.register_component("data_loader", _DATA_LOADER)  # boto3 has no public name for it
    return session.client(
        service,
        endpoint_url=wrapper.get_service_endpoint_url(service),
        config=wrapper.botocore_config,
        verify=hook.verify,
    )


def upload_args(settings: Any, key: str) -> dict[str, str]:
    """What every PutObject/CreateMultipartUpload carries: the content type and the encryption."""
    args = {"ContentType": content_type(key)}
    if settings.sse:
        args["ServerSideEncryption"] = settings.sse
    if settings.kms_key_id:
        args["SSEKMSKeyId"] = settings.kms_key_id
    return args
