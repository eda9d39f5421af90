"""Google Cloud Storage data connectors: ``strm_gcs`` on ``google-cloud-storage`` + ``google-auth`` only, and
``google_cloud_platform`` connections read by the Google provider's GCSHook.

``strm_gcs`` does not need the Google Airflow provider, which adds about 1.2 GB (extra ``[google]``).
Both only ever create objects, with this module's resumable upload (bounded memory, the object finalized
only at the end), which the least-privilege role we document (Storage Object Creator or Storage Legacy
Bucket Writer) allows.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import IO, Any

import google.auth
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth import impersonated_credentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from strm_provider.connection_settings import GcsSettings, SettingsError, parse_json_field
from strm_provider.connection_types import DATA_CONNECTORS, PROVIDER_DATA_CONNECTORS
from strm_provider.hooks.storage import ProviderConnectionHook, StorageError, StorageHook, first_line, read_full
from strm_provider.naming import content_type

#: Resumable-upload chunk: a multiple of 256 KiB; bounds the memory one upload holds.
CHUNK_SIZE = 8 * 1024 * 1024
#: Only object writes are needed; read_write is the narrowest storage scope that allows them.
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
#: Transient errors (5xx, connection resets) are retried for at most this long in total; a rejected
#: key or a missing bucket is not retried at all.
RETRY_SECONDS = 60.0
#: (connect, read) timeout of each HTTP request.
TIMEOUT = (10.0, 120.0)


class StrmGcsHook(StorageHook):
    """Writes objects to one GCS bucket with a service-account key, or as the worker's own identity.

    Connection extra: ``bucket`` (required); the key as ``keyfile_dict`` (JSON string or object) or
    ``key_path`` (file), or neither: Application Default Credentials; optional ``impersonation_chain``
    (service accounts to impersonate, the last one writing) with ``iam_endpoint_url`` (a private IAM
    Credentials endpoint), ``endpoint_url`` (emulator or private storage endpoint) and ``test_prefix``.
    """

    conn_type = "strm_gcs"
    hook_name = DATA_CONNECTORS[conn_type].name
    default_conn_name = f"{conn_type}_default"
    asset_scheme = "gs"
    settings_class = GcsSettings

    # ----- connection ---------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        return str(self.settings.bucket)

    def _key_info(self) -> dict[str, Any]:
        """The service-account key as a dict; errors name the connection and never echo the key."""
        settings = self.settings
        where = f"data connector '{self.conn_id}' (strm_gcs)"
        if settings.keyfile_dict:
            info = settings.keyfile_dict
        else:
            path = Path(str(settings.key_path)).expanduser()
            try:
                info = parse_json_field(path.read_text(), "key_path")
            except OSError as err:
                raise StorageError(f"{where}: cannot read key_path '{path}': {err.strerror}") from None
            except SettingsError as err:
                raise StorageError(f"{where}: {err}") from None
        missing = [f for f in ("client_email", "private_key", "token_uri") if not info.get(f)]
        if info.get("type", "service_account") != "service_account" or missing:
            detail = f"missing {', '.join(missing)}" if missing else f"type is '{info.get('type')}'"
            raise StorageError(f"{where}: the key is not a service-account key ({detail})")
        return info

    def _has_key(self) -> bool:
        return bool(self.settings.keyfile_dict or self.settings.key_path)

    @cached_property
    def _credentials(self) -> tuple[Any, str | None]:
        """The credentials and their project: the connection's key, else Application Default Credentials
        (``GOOGLE_APPLICATION_CREDENTIALS`` — a service-account key or a workload identity federation
        ``external_account`` config —, gcloud's, or the metadata server's: GKE Workload Identity, Compute),
        with the impersonation chain on top."""
        project: str | None
        if self._has_key():
            info = self._key_info()
            try:
                credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
            except (ValueError, TypeError):
                # The SDK's message may quote the key; say only what is wrong.
                raise StorageError(
                    f"data connector '{self.conn_id}' (strm_gcs): the service-account key's private_key "
                    "is not a valid PEM private key"
                ) from None
            project = info.get("project_id")
        else:
            try:
                credentials, project = google.auth.default(scopes=SCOPES)
            except auth_exceptions.DefaultCredentialsError as err:
                raise StorageError(
                    f"data connector '{self.conn_id}' (strm_gcs): no Google credentials: the connection holds no "
                    f"key, and Application Default Credentials found none ({first_line(err)})"
                ) from None
        chain = self.settings.impersonation_chain
        if chain:
            iam = str(self.settings.iam_endpoint_url or "").rstrip("/")
            credentials = impersonated_credentials.Credentials(
                source_credentials=credentials,
                target_principal=chain[-1],
                delegates=[f"projects/-/serviceAccounts/{email}" for email in chain[:-1]],
                target_scopes=SCOPES,
                iam_endpoint_override=f"{iam}/v1/projects/-/serviceAccounts/{chain[-1]}:generateAccessToken"
                if iam
                else None,
            )
        return credentials, project

    def identity(self) -> str:
        """The service account that writes (the last of the impersonation chain, the key's, ADC's), or the
        workload identity federation audience when no service account is involved."""
        credentials, _ = self._credentials
        for attribute in ("service_account_email", "_target_principal"):
            email = getattr(credentials, attribute, None)
            if email and email != "default":
                return str(email)
        audience = getattr(credentials, "_audience", None)
        return f"external account {audience}" if audience else type(credentials).__name__

    @cached_property
    def client(self) -> storage.Client:
        """One client per hook: its token is fetched once and shared by every upload (thread-safe)."""
        credentials, project = self._credentials
        options: dict[str, Any] = {}
        if self.settings.endpoint_url:
            options["api_endpoint"] = str(self.settings.endpoint_url).rstrip("/")
        # An explicit project avoids google.auth.default() probing the metadata server.
        return storage.Client(project=project or "-", credentials=credentials, client_options=options or None)

    # ----- StorageHook ----------------------------------------------------------------------------
    def _upload_stream(self, key: str, reader: IO[bytes]) -> None:
        """Resumable upload, one chunk at a time; the object is finalized only by ``close()`` at EOF."""
        bucket = self.bucket
        blob = self.client.bucket(bucket).blob(key)  # bucket(), not get_bucket(): no read needed
        out = blob.open(
            "wb",
            chunk_size=CHUNK_SIZE,
            ignore_flush=True,
            retry=DEFAULT_RETRY.with_timeout(RETRY_SECONDS),
            content_type=content_type(key),
            timeout=TIMEOUT,
        )
        try:
            while chunk := read_full(reader, CHUNK_SIZE):
                out.write(chunk)
                if len(chunk) < CHUNK_SIZE:
                    break
            out.close()  # uploads the last chunk and finalizes the object
        except BaseException:
            _abandon(out)
            raise

    def describe(self) -> dict[str, Any]:
        return {"googleCloudStorageBucket": {"bucketName": self.bucket}}

    def explain(self, err: BaseException) -> str:
        if isinstance(err, auth_exceptions.RefreshError):
            what = "the service-account key" if self._has_key() else "the identity (Application Default Credentials)"
            return f"{what} was rejected by the token endpoint ({first_line(err)})"
        if isinstance(err, auth_exceptions.TransportError):
            return f"cannot reach the token endpoint ({first_line(err)})"
        status = _status(err)
        if status == 404:
            return f"bucket '{self.bucket}' does not exist (404)"
        if status == 403:
            return (
                "permission denied (403): grant the service account 'Storage Object Creator' or "
                f"'Storage Legacy Bucket Writer' on bucket '{self.bucket}'"
            )
        if status == 401:
            return "the access token was rejected (401)"
        if isinstance(err, api_exceptions.GoogleAPICallError):
            return f"{err.code} {err.message}"
        if status is not None:
            return f"HTTP {status} from the storage endpoint"
        return super().explain(err)


def _status(err: BaseException) -> int | None:
    """HTTP status of an API error or of a resumable-upload ``InvalidResponse`` (which has no code)."""
    if isinstance(err, api_exceptions.GoogleAPICallError):
        return err.code
    status = getattr(getattr(err, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _abandon(out: Any) -> None:
    """Cancel the resumable session and make sure nothing can finalize it later.

    ``BlobWriter`` is an ``io`` object: garbage collection calls ``close()``, which would finalize
    whatever was buffered. With its buffer closed that call does nothing, even if the cancel failed.
    """
    try:
        out.terminate()  # DELETE on the session URL; GCS also expires abandoned sessions in a week
    except Exception:
        pass
    finally:
        out._buffer.close()


class GoogleCloudGcsHook(ProviderConnectionHook, StrmGcsHook):
    """Data connector on a ``google_cloud_platform`` connection of the Google provider, the bucket named by
    the exporter.

    The provider's GCSHook reads the connection and builds the client, so whatever it supports works
    unchanged: key files and keys, Secret Manager keys, ``credential_config_file`` (workload identity
    federation), ``impersonation_chain``, Application Default Credentials, ``STORAGE_EMULATOR_HOST``.
    The upload itself is this module's: resumable, chunked, finalized only at the end.
    """

    conn_type = "google_cloud_platform"
    hook_name = PROVIDER_DATA_CONNECTORS[conn_type].name
    default_conn_name = "google_cloud_default"

    @cached_property
    def _google(self) -> Any:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        return self.provider_hook(GCSHook, gcp_conn_id=self.conn_id)

    @cached_property
    def _credentials(self) -> tuple[Any, str | None]:
        return self._google.get_credentials_and_project_id()

    @cached_property
    def client(self) -> storage.Client:
        return self._google.get_conn()

    def _has_key(self) -> bool:
        return bool(self._google._get_field("key_path") or self._google._get_field("keyfile_dict"))
