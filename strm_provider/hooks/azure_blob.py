"""Azure Blob Storage data connector: a service principal's client secret or the worker's own identity,
block-blob uploads.

Blocks are staged one at a time and the blob is created by the final Put Block List, so readers
never see a partial blob and memory holds one block. The SDK's default retry (15 s initial
back-off, several attempts, plus identity's own retries) turns a typo into minutes of waiting;
both are bounded here.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from functools import cached_property
from typing import IO, Any
from urllib.parse import urlparse

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.identity import (
    ChainedTokenCredential,
    ClientSecretCredential,
    EnvironmentCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.storage.blob import BlobServiceClient, ContentSettings, ExponentialRetry

from strm_provider.connection_settings import AzureBlobSettings
from strm_provider.connection_types import DATA_CONNECTORS, PROVIDER_DATA_CONNECTORS
from strm_provider.hooks.connection import quiet_library_log
from strm_provider.hooks.storage import ProviderConnectionHook, StorageError, StorageHook, first_line, read_full
from strm_provider.naming import content_type

#: What a token for Blob Storage is requested for.
STORAGE_SCOPE = "https://storage.azure.com/.default"
#: Size of one staged block: bounds the memory an upload holds (Azure allows up to 50,000 blocks).
BLOCK_SIZE = 8 * 1024 * 1024
#: Storage requests: 3 retries after 1 s, ~3 s, ~5 s; a 4xx (bad secret, no container) is not retried.
RETRY = {"initial_backoff": 1, "increment_base": 2, "retry_total": 3, "random_jitter_range": 1}
#: Token requests to Entra ID: retried on 5xx/429/connection errors only, twice.
IDENTITY_RETRY = {"retry_total": 2, "retry_backoff_factor": 0.5}
TIMEOUTS = {"connection_timeout": 10, "read_timeout": 120}

#: azure-core logs every request and response at INFO: in a task log that buries the export's own lines
#: (8 MiB blocks -> hundreds of entries)
HTTP_LOG = "azure.core.pipeline.policies.http_logging_policy"


class StrmAzureBlobHook(StorageHook):
    """Writes block blobs to one container with client-secret credentials.

    Connection: host = storage account URI without the container (``https://foo.blob.core.windows.net``),
    login = client (application) id, password = client secret; extra ``container`` (required),
    ``tenant_id`` (required), optional ``authority_host`` (sovereign clouds, private authorities) and ``test_prefix``;
    its settings: :class:`~strm_provider.connection_settings.AzureBlobSettings`.
    """

    conn_type = "strm_azure_blob"
    hook_name = DATA_CONNECTORS[conn_type].name
    default_conn_name = f"{conn_type}_default"
    asset_scheme = "wasbs"
    settings_class = AzureBlobSettings

    # ----- connection ---------------------------------------------------------------------------
    def _fail(self, what: str) -> StorageError:
        return StorageError(f"data connector '{self.conn_id}' (strm_azure_blob): {what}")

    @property
    def bucket(self) -> str:
        return str(self.settings.container)

    @property
    def account_uri(self) -> str:
        """The storage account URI, e.g. ``https://foo.blob.core.windows.net`` (Azurite: ``.../devstoreaccount1``)."""
        return str(self.settings.account_uri)

    def asset_uri(self, prefix: str) -> str:
        """``wasbs://<container>@<account host>/<prefix>``; a path-style (emulator) account keeps its path."""
        parsed = urlparse(self.account_uri)
        return f"wasbs://{self.bucket}@{parsed.netloc}{parsed.path}/{prefix}".rstrip("/")

    @cached_property
    def _credential(self) -> TokenCredential:
        """The client secret's service principal; without a secret the worker's own identity, as
        ``DefaultAzureCredential`` finds it on a server: the environment's service principal, a workload
        identity federated token file (AKS: ``AZURE_FEDERATED_TOKEN_FILE``), a managed identity. The
        connection's client id and tenant, when set, choose the identity."""
        settings = self.settings
        tenant = str(settings.tenant_id or "").strip()
        client_id = str(settings.login or "").strip()
        secret = settings.password or ""
        options: dict[str, Any] = dict(IDENTITY_RETRY)
        authority = str(settings.authority_host or "").strip().rstrip("/")
        if authority:
            # A custom authority has no entry in Microsoft's instance-discovery list.
            options.update(authority=authority, disable_instance_discovery=True)
        if not secret:
            return self._own_identity(tenant, client_id, options)
        missing = [n for n, v in (("extra 'tenant_id'", tenant), ("login (client id)", client_id)) if not v]
        if missing:
            raise self._fail(f"missing {', '.join(missing)} (or no client secret either: the worker's own identity)")
        try:
            return ClientSecretCredential(tenant, client_id, secret, **options)
        except ValueError as err:  # e.g. malformed tenant id; the message holds no secret
            raise self._fail(str(err)) from None

    def _own_identity(self, tenant: str, client_id: str, options: dict[str, Any]) -> TokenCredential:
        """``DefaultAzureCredential``'s server identities, in its order, honouring the connection's authority
        (which it does not pass on to the workload identity): environment, federated token file, managed."""
        chain: list[TokenCredential] = [EnvironmentCredential(**options)]
        token_file = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
        if token_file:
            try:
                chain.append(
                    WorkloadIdentityCredential(
                        tenant_id=tenant or os.environ.get("AZURE_TENANT_ID", ""),
                        client_id=client_id or os.environ.get("AZURE_CLIENT_ID", ""),
                        token_file_path=token_file,
                        **options,
                    )
                )
            except ValueError as err:  # no tenant or client id anywhere
                raise self._fail(f"workload identity: {err}") from None
        chain.append(ManagedIdentityCredential(client_id=client_id or None, **IDENTITY_RETRY))
        return ChainedTokenCredential(*chain)

    def identity(self) -> str:
        """The application (client) id and object id of the token's identity, read from the token itself."""
        token = self._credential.get_token(STORAGE_SCOPE).token
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return f"application {claims.get('appid') or claims.get('azp')} (object {claims.get('oid')})"

    @cached_property
    def service(self) -> BlobServiceClient:
        """One client per hook: the credential caches its token across uploads (clients are thread-safe)."""
        quiet_library_log(HTTP_LOG)
        return BlobServiceClient(
            self.account_uri,
            credential=self._credential,
            retry_policy=_Retry(**RETRY),
            **TIMEOUTS,
        )

    # ----- StorageHook ----------------------------------------------------------------------------
    def _upload_stream(self, key: str, reader: IO[bytes]) -> None:
        """Stage ``BLOCK_SIZE`` blocks, then commit the list: the blob exists only after the commit."""
        blob = self.service.get_blob_client(self.bucket, key)
        upload_id = uuid.uuid4().hex  # unique block ids: a retried export never reuses stale blocks
        block_ids: list[str] = []
        while chunk := read_full(reader, BLOCK_SIZE):
            block_id = base64.b64encode(f"{upload_id}-{len(block_ids):06d}".encode()).decode()
            blob.stage_block(block_id, chunk, length=len(chunk))
            block_ids.append(block_id)
            if len(chunk) < BLOCK_SIZE:
                break
        # Uncommitted blocks of an abandoned upload are discarded by the service after a week.
        blob.commit_block_list(block_ids, content_settings=ContentSettings(content_type=content_type(key)))

    def describe(self) -> dict[str, Any]:
        return {"azureBlobStorageContainer": {"storageAccountUri": self.account_uri, "containerName": self.bucket}}

    def explain(self, err: BaseException) -> str:
        if isinstance(err, ClientAuthenticationError) and getattr(err, "response", None) is None:
            # Raised by azure-identity (no storage response): the token request itself failed.
            if "Unable to get authority configuration" in str(err):
                tenant = self.settings.tenant_id
                return (
                    f"Microsoft Entra ID does not know tenant '{tenant}' (or the authority host is wrong): "
                    "check extra 'tenant_id' and 'authority_host'"
                )
            if not self.settings.password:
                return (
                    "no Azure identity: the connection holds no client secret, and neither the environment, a "
                    f"workload identity token file nor a managed identity gave a token ({_aad_reason(err)})"
                )
            return f"Microsoft Entra ID rejected the client credentials ({_aad_reason(err)})"
        if isinstance(err, HttpResponseError):
            code = getattr(err, "error_code", None) or ""
            if code == "ContainerNotFound":
                return f"container '{self.bucket}' does not exist in {self.account_uri}"
            if code in ("AuthorizationPermissionMismatch", "AuthorizationFailure"):
                return (
                    f"permission denied ({code}): assign the service principal the 'Storage Blob Data "
                    f"Contributor' role on container '{self.bucket}'"
                )
            if code in ("InvalidAuthenticationInfo", "AuthenticationFailed"):
                return f"the storage account rejected the access token ({code}): check tenant_id and host"
            if code == "ResourceNotFound" or (err.status_code == 404 and not code):
                return f"storage account {self.account_uri} not found"
            return f"{err.status_code} {code or err.reason}".strip()
        if isinstance(err, ServiceRequestError):
            return f"cannot reach {self.account_uri} or the token endpoint ({first_line(err)})"
        if isinstance(err, ValueError) and "authority" in str(err).lower():
            return f"cannot use the authority / tenant ({first_line(err)})"
        return super().explain(err)


class WasbBlobHook(ProviderConnectionHook, StrmAzureBlobHook):
    """Data connector on a ``wasb`` connection of the Microsoft Azure provider, the container named by the
    exporter.

    The provider's WasbHook reads the connection and builds the client, so whatever it supports works
    unchanged: connection strings, account keys, SAS tokens, service principals, managed and workload
    identities, and client options in its extra (``retry_total``, ``connection_timeout``...).
    """

    conn_type = "wasb"
    hook_name = PROVIDER_DATA_CONNECTORS[conn_type].name
    default_conn_name = "wasb_default"

    @cached_property
    def service(self) -> BlobServiceClient:
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        quiet_library_log(HTTP_LOG)
        return self.provider_hook(WasbHook, wasb_conn_id=self.conn_id).get_conn()

    @property
    def account_uri(self) -> str:
        """The account's URI as the client has it, without a SAS token's query."""
        parsed = urlparse(self.service.url)
        return f"{parsed.scheme}://{parsed.netloc}{parsed.path}".rstrip("/")

    @cached_property
    def _credential(self) -> Any:
        return self.service.credential

    def identity(self) -> str:
        """The token's application for an Entra ID identity, else the account key's account or a SAS."""
        credential = self._credential
        if hasattr(credential, "get_token"):
            return super().identity()
        if hasattr(credential, "account_name"):
            return f"the account key of {credential.account_name}"
        return "a shared access signature"

    def explain(self, err: BaseException) -> str:
        if isinstance(err, ClientAuthenticationError) and getattr(err, "response", None) is None:
            return f"the connection's identity got no token from Microsoft Entra ID ({_aad_reason(err)})"
        return super().explain(err)


class _Retry(ExponentialRetry):
    """Storage's retry policy retries *any* Azure error, including a rejected client secret; not here."""

    def increment(self, settings: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if isinstance(error, ClientAuthenticationError):
            return False
        return super().increment(settings, request, response=response, error=error)


def _aad_reason(err: BaseException) -> str:
    """The ``AADSTSnnnnn: ...`` sentence of an Entra ID error, without trace ids and timestamps."""
    text = str(getattr(err, "message", None) or err)
    start = text.find("AADSTS")
    if start >= 0:
        reason = text[start:].splitlines()[0]
        return reason.split(" Trace ID:")[0].strip()[:300]
    return first_line(err)
