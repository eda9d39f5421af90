"""A Schema Registry client: the schemas that framed records name, fetched once per id and kept.

Speaks the REST API of Confluent Schema Registry, which Apicurio (``/apis/ccompat/v7``), Karapace and
Redpanda serve as well. The Kafka connection names the registry (:class:`~strm_provider.connection_settings.
KafkaSettings`: ``schema_registry_url`` with basic auth, a bearer token or a client certificate).

A registry that cannot be reached, or refuses the credentials, fails the export before anything is
committed (:class:`RegistryUnavailable`); a schema id the registry does not know is the record's fault,
and makes it a dead letter (:class:`UnknownSchema`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx

#: how long one request may take; a registry slower than this is as good as down for an export
TIMEOUT_SECONDS = 30.0
ACCEPT = "application/vnd.schemaregistry.v1+json, application/json"


class RegistryUnavailable(RuntimeError):
    """The registry could not answer: the message names its URL and why, never a credential."""


class UnknownSchema(LookupError):
    """The registry answered that it holds no such schema (or subject version)."""


@dataclass(frozen=True)
class Reference:
    name: str
    subject: str
    version: int


@dataclass(frozen=True)
class Schema:
    """A registered schema: its type (``AVRO``, ``PROTOBUF``, ``JSON``), text and references."""

    schema_type: str
    text: str
    references: tuple[Reference, ...] = ()


@dataclass
class RegistryClient:
    """Schemas by id (and the versions their references name), each fetched once.

    :param url: the registry's base URL (``https://registry:8081``, or Apicurio's ``…/apis/ccompat/v7``).
    :param user: with ``password``: HTTP basic auth.
    :param token: a bearer token (instead of basic auth).
    :param ca_file: the CA bundle that signed the registry's certificate (default: the system's).
    :param cert_file: with ``key_file``: the client certificate of mutual TLS.
    """

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    _by_id: dict[int, Schema] = field(default_factory=dict, repr=False)
    _versions: dict[tuple[str, int], Schema] = field(default_factory=dict, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)

    def schema(self, schema_id: int) -> Schema:
        """The schema of ``schema_id``; Protobuf as the serialized ``FileDescriptorProto`` (base64)."""
        if schema_id not in self._by_id:
            body = self._get(f"/schemas/ids/{schema_id}", {"format": "serialized"}, f"schema id {schema_id}")
            self._by_id[schema_id] = _schema(body)
        return self._by_id[schema_id]

    def version(self, subject: str, version: int) -> Schema:
        """Version ``version`` of ``subject``: what a reference names."""
        key = (subject, version)
        if key not in self._versions:
            path = f"/subjects/{httpx.URL(subject).raw_path.decode()}/versions/{version}"
            self._versions[key] = _schema(self._get(path, {"format": "serialized"}, f"{subject} version {version}"))
        return self._versions[key]

    def check(self) -> None:
        """Fail in one line, naming the URL, unless the registry answers with these credentials."""
        self._get("/config", {}, "its configuration", holding=None)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _client(self) -> httpx.Client:
        if self._http is None:
            headers = {"Accept": ACCEPT}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            auth = httpx.BasicAuth(self.user, self.password or "") if self.user and not self.token else None
            try:
                tls = ssl.create_default_context(cafile=self.ca_file)
                if self.cert_file:
                    tls.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as err:
                raise RegistryUnavailable(
                    f"Schema Registry {self.url}: cannot read the CA file or client certificate "
                    f"({type(err).__name__}: {getattr(err, 'strerror', None) or err})"
                ) from None
            self._http = httpx.Client(
                base_url=self.url.rstrip("/"), headers=headers, auth=auth, verify=tls, timeout=TIMEOUT_SECONDS
            )
        return self._http

    def _get(self, path: str, params: dict[str, str], what: str, holding: str | None = "schema") -> dict[str, Any]:
        try:
            response = self._client().get(path, params=params)
        except httpx.HTTPError as err:
            raise RegistryUnavailable(f"Schema Registry {self.url}: unreachable ({type(err).__name__})") from None
        if response.status_code == 404 and holding:
            raise UnknownSchema(f"the Schema Registry has no {what}")
        if response.status_code in (401, 403):
            raise RegistryUnavailable(
                f"Schema Registry {self.url}: credentials refused (HTTP {response.status_code}); check the Kafka "
                "connection's schema_registry_* extras"
            )
        if response.status_code >= 400:
            raise RegistryUnavailable(f"Schema Registry {self.url}: HTTP {response.status_code} for {what}")
        try:
            body = response.json()
        except ValueError:
            raise RegistryUnavailable(f"Schema Registry {self.url}: the answer for {what} is not JSON") from None
        if not isinstance(body, dict) or (holding and not isinstance(body.get(holding), str)):
            raise RegistryUnavailable(f"Schema Registry {self.url}: the answer for {what} holds no {holding}")
        return body


def _schema(body: dict[str, Any]) -> Schema:
    references = tuple(
        Reference(str(ref["name"]), str(ref["subject"]), int(ref["version"])) for ref in body.get("references") or ()
    )
    return Schema(str(body.get("schemaType") or "AVRO").upper(), body["schema"], references)
