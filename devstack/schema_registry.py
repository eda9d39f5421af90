"""A Schema Registry on 127.0.0.1 speaking Confluent's REST API, for the tests, ``make demo`` and ``make up``.

Apicurio Registry (the open-source registry with a Confluent-compatible API) is published on Maven Central
only as its plain module jar: a Quarkus application without the build step's output (no runner jar, no
``quarkus-app`` layout) and compiled for Java 21, so it cannot run from ``.cache/`` the way Apache Kafka
does. This module serves instead what confluent-kafka's ``SchemaRegistryClient``, its Avro, Protobuf and
JSON Schema serializers and deserializers, and the exporter call:

- ``POST /subjects/{subject}/versions`` registers: ids are global, and the same schema (type, text, references)
  gets the same id under every subject; registering it again under a subject returns its version there;
- ``POST /subjects/{subject}`` looks a schema up (40401 no such subject, 40403 not under it);
- ``GET /schemas/ids/{id}`` (``subject``, ``format`` accepted), ``/schemas/ids/{id}/schema``, ``/subjects``,
  ``/versions``, ``/schemas/guids/{guid}``;
- ``GET /subjects``, ``/subjects/{s}/versions``, ``/subjects/{s}/versions/{v|latest|-1}`` (``format``,
  ``deleted``), ``.../schema``, ``.../referencedby``, ``GET /schemas/types``;
- ``GET/PUT/DELETE /config`` and ``/config/{subject}``, ``GET/PUT /mode``, ``GET /contexts``;
- ``POST /compatibility/subjects/{s}/versions[/{v}]``;
- ``DELETE /subjects/{s}`` (soft, or ``?permanent=true``) and ``/subjects/{s}/versions/{v}``.

Schemas are stored and returned as given: the Python Protobuf serializer sends a base64 serialized
``FileDescriptorProto``, and ``format=serialized`` returns exactly that. A schema is checked when registered
(42201 otherwise): Avro with fastavro (named types of its references included), JSON Schema as JSON (and with
``jsonschema``'s meta-schema check), Protobuf as a base64 ``FileDescriptorProto`` or as ``.proto`` text with
at least one declaration. Compatibility levels are stored and reported but not enforced.

Options chosen at start: basic authentication (``--user``/``--password``) and/or a bearer token (``--token``),
answered 401 as Confluent's registry does otherwise; TLS with a required client certificate (``--tls-cert``,
``--tls-key``, ``--client-ca``); ``--data PATH`` keeps everything in a JSON file rewritten on each change, so a
restarted stack keeps the schema ids its Kafka records carry (in memory without it).

``python -m devstack.schema_registry --port N [...]`` runs it; :class:`SchemaRegistry` starts it as a
subprocess and waits until it accepts connections.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import http.server
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack import QuietHandler, free_port, stop_group, wait_for_port

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA_TYPES = ("AVRO", "JSON", "PROTOBUF")
LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
MODES = ("READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT")
#: the logical cluster a static bearer token names (the client requires one; this registry has one cluster)
LOGICAL_CLUSTER = "lsrc-local"
_GUID_NAMESPACE = uuid.UUID("6f0b6a51-4c1e-4d0b-9f5a-5a7e0c1d2e3f")


class RegistryError(Exception):
    """An answer other than 200: HTTP status, Confluent's ``error_code`` and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(subject: str, version: Any) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def _schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


def _invalid_schema(detail: str) -> RegistryError:
    return RegistryError(422, 42201, f"Invalid schema: {detail}")


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "false").lower() == "true"


class Store:
    """The registry's state, behind one lock; written to ``data`` (when given) after each change."""

    def __init__(self, data: Path | None = None) -> None:
        self.data = data
        self.lock = threading.RLock()
        #: id -> {"schema", "schemaType", "references"}
        self.schemas: dict[int, dict[str, Any]] = {}
        #: subject -> [{"version", "id", "deleted"}], in version order
        self.subjects: dict[str, list[dict[str, Any]]] = {}
        self.compatibility = "BACKWARD"
        self.subject_compatibility: dict[str, str] = {}
        self.mode = "READWRITE"
        if data is not None and data.exists():
            saved = json.loads(data.read_text())
            self.schemas = {int(k): v for k, v in saved["schemas"].items()}
            self.subjects = saved["subjects"]
            self.compatibility = saved.get("compatibility", self.compatibility)
            self.subject_compatibility = saved.get("subject_compatibility", {})
            self.mode = saved.get("mode", self.mode)
        self._ids = {self._key(rec): sid for sid, rec in self.schemas.items()}

    def save(self) -> None:
        if self.data is None:
            return
        state = {
            "schemas": {str(k): v for k, v in self.schemas.items()},
            "subjects": self.subjects,
            "compatibility": self.compatibility,
            "subject_compatibility": self.subject_compatibility,
            "mode": self.mode,
        }
        self.data.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.data.with_name(self.data.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.data)

    # -- identity and validation

    @staticmethod
    def _key(rec: dict[str, Any]) -> str:
        """What makes two schemas the same: type, text (JSON texts compared without layout), references."""
        text = rec["schema"]
        if rec["schemaType"] in ("AVRO", "JSON"):
            with contextlib.suppress(ValueError):
                text = json.dumps(json.loads(text), separators=(",", ":"))
        refs = [[r.get("name"), r.get("subject"), r.get("version")] for r in rec["references"]]
        return json.dumps([rec["schemaType"], text, refs])

    @staticmethod
    def guid(schema_id: int, rec: dict[str, Any]) -> str:
        return str(uuid.uuid5(_GUID_NAMESPACE, Store._key(rec)))

    def _request_schema(self, body: dict[str, Any]) -> dict[str, Any]:
        schema = body.get("schema")
        if not isinstance(schema, str) or not schema.strip():
            raise RegistryError(422, 42201, "Invalid schema: empty schema")
        schema_type = (body.get("schemaType") or "AVRO").upper()
        if schema_type not in SCHEMA_TYPES:
            raise RegistryError(422, 42201, f"Invalid schema: unknown schema type {schema_type}")
        refs = []
        for ref in body.get("references") or []:
            if not isinstance(ref, dict) or not ref.get("name") or not ref.get("subject"):
                raise _invalid_schema(f"bad reference {ref!r}")
            refs.append({"name": ref["name"], "subject": ref["subject"], "version": int(ref.get("version") or -1)})
        return {"schema": schema, "schemaType": schema_type, "references": refs}

    def _resolve_ref(self, ref: dict[str, Any]) -> dict[str, Any]:
        try:
            entry = self._version_entry(ref["subject"], str(ref["version"]), deleted=False)
        except RegistryError as exc:
            raise _invalid_schema(
                f"reference {ref['name']!r} to {ref['subject']} v{ref['version']}: {exc.message}"
            ) from None
        return self.schemas[entry["id"]]

    def validate(self, rec: dict[str, Any]) -> None:
        """42201 unless ``rec`` parses as its type (references resolved, as the registry they name has them)."""
        kind, text = rec["schemaType"], rec["schema"]
        if kind == "AVRO":
            import fastavro

            named: dict[str, Any] = {}

            def load(r: dict[str, Any]) -> None:
                for ref in r["references"]:
                    target = self._resolve_ref(ref)
                    load(target)
                    fastavro.parse_schema(json.loads(target["schema"]), named_schemas=named)

            try:
                load(rec)
                fastavro.parse_schema(json.loads(text), named_schemas=named)
            except RegistryError:
                raise
            except Exception as exc:
                raise _invalid_schema(str(exc)) from None
        elif kind == "JSON":
            for ref in rec["references"]:
                self._resolve_ref(ref)
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise _invalid_schema(str(exc)) from None
            if not isinstance(parsed, (dict, bool)):
                raise _invalid_schema("a JSON Schema is an object or a boolean")
            try:
                import jsonschema
            except ImportError:
                return
            try:
                jsonschema.validators.validator_for(parsed).check_schema(parsed)
            except jsonschema.SchemaError as exc:
                raise _invalid_schema(exc.message) from None
        else:
            for ref in rec["references"]:
                self._resolve_ref(ref)
            if _protobuf_descriptor(text) is None and not _looks_like_proto(text):
                raise _invalid_schema("neither a base64 FileDescriptorProto nor .proto text")

    # -- reads

    def _versions(self, subject: str, deleted: bool) -> list[dict[str, Any]]:
        entries = [e for e in self.subjects.get(subject, []) if deleted or not e["deleted"]]
        if not entries:
            raise _subject_not_found(subject)
        return entries

    def _version_entry(self, subject: str, version: str, deleted: bool) -> dict[str, Any]:
        entries = self._versions(subject, deleted)
        if version in ("latest", "-1"):
            return entries[-1]
        try:
            number = int(version)
        except ValueError:
            raise RegistryError(
                422,
                42202,
                f"The specified version '{version}' is not a valid version id. "
                'Allowed values are between [1, 2^31-1] and the string "latest"',
            ) from None
        if number < 1:
            raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version id.")
        for entry in entries:
            if entry["version"] == number:
                return entry
        raise _version_not_found(subject, number)

    def schema_body(self, schema_id: int, *, subject: str | None = None, version: int | None = None) -> dict[str, Any]:
        rec = self.schemas[schema_id]
        body: dict[str, Any] = {}
        if subject is not None:
            body["subject"] = subject
        if version is not None:
            body["version"] = version
        body["id"] = schema_id
        body["guid"] = self.guid(schema_id, rec)
        if rec["schemaType"] != "AVRO":
            body["schemaType"] = rec["schemaType"]
        if rec["references"]:
            body["references"] = rec["references"]
        body["schema"] = rec["schema"]
        return body

    def get_schema(self, schema_id: str) -> dict[str, Any]:
        try:
            sid = int(schema_id)
        except ValueError:
            raise _schema_not_found() from None
        with self.lock:
            if sid not in self.schemas:
                raise _schema_not_found(f"Schema {sid} not found")
            body = self.schema_body(sid)
            del body["id"]
            return body

    def schema_versions(self, schema_id: str, deleted: bool) -> list[dict[str, Any]]:
        sid = int(schema_id) if schema_id.isdigit() else -1
        with self.lock:
            if sid not in self.schemas:
                raise _schema_not_found(f"Schema {schema_id} not found")
            return [
                {"subject": subject, "version": e["version"]}
                for subject, entries in sorted(self.subjects.items())
                for e in entries
                if e["id"] == sid and (deleted or not e["deleted"])
            ]

    def by_guid(self, guid: str) -> dict[str, Any]:
        with self.lock:
            for sid, rec in self.schemas.items():
                if self.guid(sid, rec) == guid:
                    return self.schema_body(sid)
        raise _schema_not_found(f"Schema {guid} not found")

    def subject_names(self, deleted: bool, prefix: str) -> list[str]:
        with self.lock:
            return sorted(
                s
                for s, entries in self.subjects.items()
                if s.startswith(prefix) and any(deleted or not e["deleted"] for e in entries)
            )

    def versions(self, subject: str, deleted: bool) -> list[int]:
        with self.lock:
            return [e["version"] for e in self._versions(subject, deleted)]

    def version(self, subject: str, version: str, deleted: bool) -> dict[str, Any]:
        with self.lock:
            entry = self._version_entry(subject, version, deleted)
            return self.schema_body(entry["id"], subject=subject, version=entry["version"])

    def referenced_by(self, subject: str, version: str) -> list[int]:
        with self.lock:
            entry = self._version_entry(subject, version, deleted=False)
            return sorted(
                sid
                for sid, rec in self.schemas.items()
                if any(r["subject"] == subject and r["version"] == entry["version"] for r in rec["references"])
            )

    # -- writes

    def register(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._request_schema(body)
        with self.lock:
            if self.mode.startswith("READONLY"):
                raise RegistryError(422, 42205, "Subject is in read-only mode")
            self.validate(rec)
            key = self._key(rec)
            sid = self._ids.get(key)
            if sid is None:
                sid = max(self.schemas, default=0) + 1
                self.schemas[sid] = rec
                self._ids[key] = sid
            entries = self.subjects.setdefault(subject, [])
            for entry in entries:
                if entry["id"] == sid and not entry["deleted"]:
                    return self.schema_body(sid, subject=subject, version=entry["version"])
            number = max((e["version"] for e in entries), default=0) + 1
            entries.append({"version": number, "id": sid, "deleted": False})
            self.save()
            return self.schema_body(sid, subject=subject, version=number)

    def lookup(self, subject: str, body: dict[str, Any], deleted: bool) -> dict[str, Any]:
        rec = self._request_schema(body)
        with self.lock:
            entries = self._versions(subject, deleted)
            sid = self._ids.get(self._key(rec))
            for entry in reversed(entries):
                if entry["id"] == sid:
                    return self.schema_body(sid, subject=subject, version=entry["version"])
            raise _schema_not_found()

    def compatible(self, subject: str, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Always compatible once the schema parses as its type: levels are not enforced here."""
        rec = self._request_schema(body)
        with self.lock:
            if version is not None and version not in ("latest", "-1"):
                self._version_entry(subject, version, deleted=False)
            self.validate(rec)
        return {"is_compatible": True}

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        with self.lock:
            entries = self.subjects.get(subject)
            if not entries:
                raise _subject_not_found(subject)
            if permanent:
                if any(not e["deleted"] for e in entries):
                    raise RegistryError(
                        404, 40405, f"Subject '{subject}' was not deleted first before being permanently deleted"
                    )
                del self.subjects[subject]
                self.subject_compatibility.pop(subject, None)
                self.save()
                return [e["version"] for e in entries]
            live = [e for e in entries if not e["deleted"]]
            if not live:
                raise RegistryError(404, 40404, f"Subject '{subject}' was soft deleted.")
            for entry in live:
                entry["deleted"] = True
            self.save()
            return [e["version"] for e in live]

    def delete_version(self, subject: str, version: str, permanent: bool) -> int:
        with self.lock:
            entry = self._version_entry(subject, version, deleted=permanent)
            if permanent:
                if not entry["deleted"]:
                    raise RegistryError(
                        404, 40407, f"Subject '{subject}' Version {entry['version']} was not deleted first"
                    )
                self.subjects[subject].remove(entry)
                if not self.subjects[subject]:
                    del self.subjects[subject]
            else:
                entry["deleted"] = True
            self.save()
            return entry["version"]

    def get_config(self, subject: str | None, default_to_global: bool) -> dict[str, str]:
        with self.lock:
            if subject is None:
                return {"compatibilityLevel": self.compatibility}
            if subject in self.subject_compatibility:
                return {"compatibilityLevel": self.subject_compatibility[subject]}
            if default_to_global:
                return {"compatibilityLevel": self.compatibility}
            raise RegistryError(404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured")

    def set_config(self, subject: str | None, body: dict[str, Any]) -> dict[str, str]:
        level = str(body.get("compatibility") or body.get("compatibilityLevel") or "").upper()
        if level not in LEVELS:
            raise RegistryError(
                422,
                42203,
                "Invalid compatibility level. Valid values are none, backward, "
                "forward, full, backward_transitive, forward_transitive, and full_transitive",
            )
        with self.lock:
            if subject is None:
                self.compatibility = level
            else:
                self.subject_compatibility[subject] = level
            self.save()
        return {"compatibility": level}

    def delete_config(self, subject: str | None) -> dict[str, str]:
        with self.lock:
            if subject is None:
                old, self.compatibility = self.compatibility, "BACKWARD"
            else:
                if subject not in self.subject_compatibility:
                    raise _subject_not_found(subject)
                old = self.subject_compatibility.pop(subject)
            self.save()
        return {"compatibilityLevel": old}

    def set_mode(self, body: dict[str, Any]) -> dict[str, str]:
        mode = str(body.get("mode") or "").upper()
        if mode not in MODES:
            raise RegistryError(
                422, 42204, "Invalid mode. Valid values are READWRITE, READONLY, READONLY_OVERRIDE and IMPORT"
            )
        with self.lock:
            self.mode = mode
            self.save()
        return {"mode": mode}


def _protobuf_descriptor(text: str) -> Any:
    """The ``FileDescriptorProto`` a base64 schema holds, or None when ``text`` is not one."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        return descriptor_pb2.FileDescriptorProto.FromString(raw)
    except DecodeError:
        return None


def _looks_like_proto(text: str) -> bool:
    """``.proto`` text with a declaration and balanced braces (no protoc here to parse it fully)."""
    return bool(re.search(r"\b(message|enum|service)\s+\w+\s*\{", text)) and text.count("{") == text.count("}")


class RegistryServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        *,
        basic: tuple[str, str] | None = None,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(address, RegistryHandler)
        self.store, self.basic, self.token, self.tls = store, basic, token, tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS, the handshake (client certificate checked) happens here, in the request's own thread,
        so a client that stalls or has no certificate holds up no one else."""
        if self.tls is None:
            return super().finish_request(request, client_address)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except OSError:
            return None
        try:
            wrapped.settimeout(30)
            wrapped.do_handshake()
            wrapped.settimeout(None)
            super().finish_request(wrapped, client_address)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                wrapped.close()
        return None


class RegistryHandler(QuietHandler):
    server: RegistryServer
    json_type = CONTENT_TYPE
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _authorized(self) -> bool:
        basic, token = self.server.basic, self.server.token
        if basic is None and token is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if basic is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return hmac.compare_digest(user, basic[0]) and hmac.compare_digest(password, basic[1])
        if token is not None and scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip(), token)
        return False

    def _answer(self, status: int, body: Any, content_type: str | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type or CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if status == 401 and self.server.basic is not None:
            self.send_header("WWW-Authenticate", 'Basic realm="SchemaRegistry"')
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorized():
            return self._answer(401, {"error_code": 401, "message": "Unauthorized"})
        try:
            body: dict[str, Any] = {}
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise RegistryError(400, 400, "Unrecognized field or malformed JSON") from None
                if not isinstance(body, dict):
                    raise RegistryError(400, 400, "Expected a JSON object")
            result = self._route(method, parts, query, body)
        except RegistryError as exc:
            return self._answer(exc.status, {"error_code": exc.code, "message": exc.message})
        except Exception as exc:  # the client retries 500s: say what failed rather than drop the connection
            return self._answer(500, {"error_code": 50001, "message": f"Error in the backend data store: {exc}"})
        if isinstance(result, str):
            return self._answer(200, result.encode(), "text/plain")
        self._answer(200, result)

    def _route(self, method: str, parts: list[str], query: dict[str, str], body: dict[str, Any]) -> Any:
        store = self.server.store
        deleted = _flag(query, "deleted")
        match method, parts:
            case "GET", []:
                return {}
            case "GET", ["schemas", "types"]:
                return list(SCHEMA_TYPES)
            case "GET", ["schemas", "ids", sid]:
                return store.get_schema(sid)
            case "GET", ["schemas", "ids", sid, "schema"]:
                return store.get_schema(sid)["schema"]
            case "GET", ["schemas", "ids", sid, "versions"]:
                return store.schema_versions(sid, deleted)
            case "GET", ["schemas", "ids", sid, "subjects"]:
                return sorted({v["subject"] for v in store.schema_versions(sid, deleted)})
            case "GET", ["schemas", "guids", guid]:
                found = store.by_guid(guid)
                return {k: v for k, v in found.items() if k not in ("id", "subject", "version")}
            case "GET", ["subjects"]:
                return store.subject_names(deleted, query.get("subjectPrefix", ""))
            case "GET", ["subjects", subject, "versions"]:
                return store.versions(subject, deleted)
            case "GET", ["subjects", subject, "versions", version]:
                return store.version(subject, version, deleted)
            case "GET", ["subjects", subject, "versions", version, "schema"]:
                return store.version(subject, version, deleted)["schema"]
            case "GET", ["subjects", subject, "versions", version, "referencedby"]:
                return store.referenced_by(subject, version)
            case "POST", ["subjects", subject, "versions"]:
                return store.register(subject, body)
            case "POST", ["subjects", subject]:
                return store.lookup(subject, body, deleted)
            case "DELETE", ["subjects", subject]:
                return store.delete_subject(subject, _flag(query, "permanent"))
            case "DELETE", ["subjects", subject, "versions", version]:
                return store.delete_version(subject, version, _flag(query, "permanent"))
            case "POST", ["compatibility", "subjects", subject, "versions"]:
                return store.compatible(subject, None, body)
            case "POST", ["compatibility", "subjects", subject, "versions", version]:
                return store.compatible(subject, version, body)
            case "GET", ["config"]:
                return store.get_config(None, True)
            case "GET", ["config", subject]:
                return store.get_config(subject, _flag(query, "defaultToGlobal"))
            case "PUT", ["config"]:
                return store.set_config(None, body)
            case "PUT", ["config", subject]:
                return store.set_config(subject, body)
            case "DELETE", ["config"]:
                return store.delete_config(None)
            case "DELETE", ["config", subject]:
                return store.delete_config(subject)
            case "GET", ["mode"] | ["mode", _]:
                return {"mode": store.mode}
            case "PUT", ["mode"] | ["mode", _]:
                return store.set_mode(body)
            case "GET", ["contexts"]:
                return ["."]
        raise RegistryError(404, 404, "HTTP 404 Not Found")


def server_tls(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS that requires a client certificate signed by ``client_ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.schema_registry", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", help="basic authentication: the one user")
    parser.add_argument("--password", help="basic authentication: its password")
    parser.add_argument("--token", help="a bearer token accepted (with or instead of basic authentication)")
    parser.add_argument("--tls-cert", type=Path, help="the server's certificate chain (PEM)")
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument("--client-ca", type=Path, help="the CA client certificates must chain to (mTLS)")
    parser.add_argument("--data", type=Path, help="a JSON file holding the registry across restarts")
    args = parser.parse_args(argv)
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    tls_args = (args.tls_cert, args.tls_key, args.client_ca)
    if any(tls_args) and not all(tls_args):
        parser.error("--tls-cert, --tls-key and --client-ca go together")
    tls = server_tls(*tls_args) if all(tls_args) else None
    basic = (args.user, args.password) if args.user is not None else None
    server = RegistryServer((args.host, args.port), Store(args.data), basic=basic, token=args.token, tls=tls)
    scheme = "https" if tls else "http"
    print(f"schema registry on {scheme}://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class SchemaRegistry:
    """The registry as a subprocess on a free loopback port: :meth:`start`, :meth:`stop` (or ``with``).

    ``client()`` is a confluent-kafka ``SchemaRegistryClient`` holding this server's credentials.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        client_ca: Path | None = None,
        data: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.user, self.password, self.token = user, password, token
        self.tls_cert, self.tls_key, self.client_ca = tls_cert, tls_key, client_ca
        self.data = data
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "devstack.schema_registry", "--port", str(self.port)]
        for flag, value in (
            ("--user", self.user),
            ("--password", self.password),
            ("--token", self.token),
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
            ("--client-ca", self.client_ca),
            ("--data", self.data),
        ):
            if value is not None:
                cmd += [flag, str(value)]
        return cmd

    def start(self, timeout: float = 30.0) -> SchemaRegistry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        repo = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
        with (self.workdir / "schema-registry.log").open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=repo, env=env
            )
        try:
            wait_for_port(self.port, timeout, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    def __enter__(self) -> SchemaRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_conf(self) -> dict[str, Any]:
        """The ``SchemaRegistryClient`` settings for this server's URL and credentials (TLS files excepted)."""
        conf: dict[str, Any] = {"url": self.url}
        if self.user is not None:
            conf["basic.auth.user.info"] = f"{self.user}:{self.password}"
        elif self.token is not None:
            conf.update(
                {
                    "bearer.auth.credentials.source": "STATIC_TOKEN",
                    "bearer.auth.token": self.token,
                    "bearer.auth.logical.cluster": LOGICAL_CLUSTER,
                }
            )
        return conf

    def client(self, conf: dict[str, Any] | None = None) -> Any:
        """A ``SchemaRegistryClient`` for this server; ``conf`` adds to or replaces :meth:`client_conf`."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return SchemaRegistryClient({**self.client_conf(), **(conf or {})})


@contextlib.contextmanager
def start_schema_registry(workdir: Path, **options: Any) -> Iterator[SchemaRegistry]:
    """A :class:`SchemaRegistry` for the block (``options`` as its constructor's)."""
    with SchemaRegistry(workdir, **options) as registry:
        yield registry


if __name__ == "__main__":
    main()
