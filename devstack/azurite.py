"""Azurite (blob service, HTTPS, ``--oauth basic``) plus a local Entra ID token endpoint: ``azure_target``.

Azurite checks a bearer token's shape only (``iss`` under ``https://sts.windows.net/``, ``aud``
``https://storage.azure.com``, ``nbf``/``exp``) and enforces no RBAC, so the credential check lives
in the token endpoint: it implements the client-credentials grant of
``https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`` for one application and answers a
wrong secret with the same ``AADSTS7000215`` error Entra ID gives.

Both servers use a certificate from a throw-away CA. The hook finds it through
``REQUESTS_CA_BUNDLE`` (azure-core and MSAL use ``requests``), which the fixture sets for the whole
session to a bundle of certifi's roots plus that CA, so subprocesses (Airflow tasks) inherit it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import shutil
import ssl
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack import QuietHandler, StorageTarget, free_port, running, serving
from devstack.airflow import environ

NODE_DIR = Path(__file__).resolve().parent / "node"
AZURITE = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
#: Azurite's well-known development account key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "strm-azure-container"
STORAGE_AUDIENCE = "https://storage.azure.com"


def ensure_azurite() -> Path:
    """Install Azurite from the committed lock file on first use (``npm ci``: exact versions)."""
    if not AZURITE.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found: Azurite needs Node.js >= 20 (`make system-deps`)")
        subprocess.run(
            [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
            timeout=600,
        )
    return AZURITE


class _EntraHandler(QuietHandler):
    """OIDC discovery and the client-credentials grant, v2.0 endpoints, one tenant and application."""

    server: _EntraServer
    json_type = "application/json; charset=utf-8"

    def do_GET(self) -> None:
        tenant, _, rest = self.path.lstrip("/").partition("/")
        if rest != "v2.0/.well-known/openid-configuration":
            return self.reply(404, {"error": "not_found"})
        if tenant != self.server.tenant_id:
            return self._error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{self.server.url}/{tenant}"
        self.reply(
            200,
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": "EU",
            },
        )

    def do_POST(self) -> None:
        tenant, _, rest = self.path.lstrip("/").partition("/")
        if rest != "oauth2/v2.0/token":
            return self.reply(404, {"error": "not_found"})
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
        server = self.server
        if tenant != server.tenant_id:
            return self._error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return self._error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if form.get("client_id") != server.client_id:
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the directory.",
            )
        federated = form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        if federated and form.get("client_assertion") not in server.federated_tokens:
            return self._error(
                400,
                "invalid_client",
                700213,
                "No matching federated identity record found for presented assertion subject.",
            )
        if federated:
            server.assertions.append(str(form.get("client_assertion")))
        elif form.get("client_secret") != server.client_secret:
            return self._error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the "
                f"client secret value, not the client secret ID, for a secret added to app '{server.client_id}'.",
            )
        scope = form.get("scope", "")
        if scope != f"{STORAGE_AUDIENCE}/.default":
            return self._error(400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid.")
        server.tokens_issued += 1
        self.reply(
            200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": server.token()}
        )

    def _error(self, status: int, error: str, code: int, text: str) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace = uuid.uuid4()
        self.reply(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {uuid.uuid4()} "
                f"Timestamp: {now}",
                "error_codes": [code],
                "timestamp": now,
                "trace_id": str(trace),
            },
        )


class _EntraServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, ssl_context: ssl.SSLContext, tenant_id: str, client_id: str, client_secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _EntraHandler)
        self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server_address[1]}"
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens_issued = 0
        #: tokens a federated identity credential trusts (what AKS projects into a pod), and those presented
        self.federated_tokens: set[str] = set()
        self.assertions: list[str] = []
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self) -> str:
        """A v1.0 access token for Azure Storage, as Entra ID issues for an app-only grant."""
        now = int(time.time())
        claims = {
            "aud": STORAGE_AUDIENCE,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3599,
            "appid": self.client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_OID, self.client_id)),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_OID, self.client_id)),
            "tid": self.tenant_id,
            "ver": "1.0",
        }
        return jwt.encode(claims, self._signing_key, algorithm="RS256", headers={"kid": "strm-test"})


@contextlib.contextmanager
def entra_server(ssl_context: ssl.SSLContext, tenant: str, client_id: str, secret: str) -> Iterator[_EntraServer]:
    with serving(_EntraServer(ssl_context, tenant, client_id, secret), "entra-token-endpoint") as server:
        yield server


class AzureTarget(StorageTarget):
    """One container in Azurite's ``devstoreaccount1``; the exporter logs in as a service principal."""

    kind = "azure"
    conn_type = "strm_azure_blob"

    def __init__(self, account_uri: str, entra: _EntraServer, ca_bundle: Path) -> None:
        self.account_uri = account_uri
        self.bucket = CONTAINER
        self.entra = entra
        self.ca_bundle = ca_bundle
        self.tenant_id = entra.tenant_id
        self.client_id = entra.client_id
        self._secret = entra.client_secret

    def connection(self, prefix: str = "", *, secret: str | None = None) -> dict[str, Any]:
        return {
            "conn_type": self.conn_type,
            "host": self.account_uri,
            "login": self.client_id,
            "password": self._secret if secret is None else secret,
            "extra": {
                "container": self.bucket,
                "tenant_id": self.tenant_id,
                "authority_host": self.entra.url,
                "test_prefix": prefix,
            },
        }

    def wasb_connection(self, auth: str = "connection-string") -> dict[str, Any]:
        """The Microsoft Azure provider's ``wasb`` connection to this account: credentials, no container.

        ``auth``: ``connection-string`` (with the account key) or ``sas-token`` (an account SAS allowed to
        create and write blobs, nothing else)."""
        if auth == "connection-string":
            return {
                "conn_type": "wasb",
                "extra": {
                    "connection_string": f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};"
                    f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.account_uri};"
                },
            }
        from datetime import UTC, datetime, timedelta

        from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

        sas = generate_account_sas(
            ACCOUNT,
            ACCOUNT_KEY,
            resource_types=ResourceTypes(object=True),
            permission=AccountSasPermissions(write=True, create=True),
            expiry=datetime.now(UTC) + timedelta(hours=2),
        )
        return {"conn_type": "wasb", "host": self.account_uri, "extra": {"sas_token": sas}}

    def admin(self) -> Any:
        """A client with the account key (full access), bypassing OAuth."""
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        return BlobServiceClient(
            self.account_uri,
            credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
            connection_verify=str(self.ca_bundle),
            retry_policy=ExponentialRetry(initial_backoff=0, increment_base=1, retry_total=2),
        )

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        container = self.admin().get_container_client(self.bucket)
        return {
            blob.name: container.download_blob(blob.name).readall()
            for blob in container.list_blobs(name_starts_with=prefix or None)
        }

    def content_types(self, prefix: str = "") -> dict[str, str]:
        container = self.admin().get_container_client(self.bucket)
        return {
            blob.name: blob.content_settings.content_type
            for blob in container.list_blobs(name_starts_with=prefix or None)
        }


@contextlib.contextmanager
def start_azurite(root: Path) -> Iterator[AzureTarget]:
    """Azurite over HTTPS with ``--oauth basic`` and the token endpoint, for the whole session.

    Sets ``REQUESTS_CA_BUNDLE`` (session-wide, restored afterwards) so the hook trusts both.
    """
    azurite = ensure_azurite()
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, bundle = root / "server.pem", root / "server.key", root / "ca-bundle.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca.cert_pem.bytes())
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)

    port = free_port()
    cmd = [
        str(azurite),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--location", str(root / "data"),
        "--debug", str(root / "debug.log"),
        "--cert", str(cert_file),
        "--key", str(key_file),
        "--oauth", "basic",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--disableProductStyleUrl",
    ]  # fmt: skip
    tenant, client_id, secret = str(uuid.uuid4()), str(uuid.uuid4()), f"s3cr3t~{uuid.uuid4().hex}"
    with (
        entra_server(server_ctx, tenant, client_id, secret) as entra,
        running(cmd, log=root / "azurite.log", port=port, timeout=60, cwd=str(root)),
        environ({"REQUESTS_CA_BUNDLE": str(bundle)}),
    ):
        target = AzureTarget(f"https://127.0.0.1:{port}/{ACCOUNT}", entra, bundle)
        _create_container(target)
        yield target


def _create_container(target: AzureTarget, timeout: float = 30.0) -> None:
    """The port opens before Azurite's metadata store is ready; retry briefly."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            target.admin().create_container(target.bucket)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
