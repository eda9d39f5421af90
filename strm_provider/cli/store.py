"""Where data connectors live: Airflow's connections, reached locally or through the REST API.

One interface, two implementations. :class:`LocalStore` uses Airflow's own models and session
(what ``airflow connections add`` does: the password and extra are Fernet-encrypted when a key is
configured). :class:`RemoteStore` talks to a deployed Airflow's REST API (v2 on Airflow 3, v1 on
Airflow 2), so a laptop can manage it; that API never returns secrets, so checks that need them run on the
server.

The same store reaches Airflow Variables: each batch exporter's progress record lives in one
(:mod:`strm_provider.progress`), and the commands that create, move or delete an exporter keep it.
"""

from __future__ import annotations

import abc
import base64
import json
import os
from typing import Any
from urllib.parse import quote

import click

from strm_provider.cli.connector_specs import CONN_TYPES, ConnectorSpec
from strm_provider.connection_settings import MASKED

#: the description of every connection ``strm create data-connector`` stores
DESCRIPTION = "STRM data connector"


class StoreError(click.ClickException):
    """The store could not be reached or refused; one line, never a secret."""


class Duplicate(Exception):
    """A connection with that id exists already."""


class ConnectorStore(abc.ABC):
    """Data connectors (and the Kafka connection) of one Airflow deployment, and its Variables."""

    #: shown in messages: where connectors are stored
    where: str

    @abc.abstractmethod
    def list(self) -> list[ConnectorSpec]:
        """Every connection of a data-connector type, by name."""

    @abc.abstractmethod
    def get(self, name: str) -> ConnectorSpec | None:
        """The connection ``name`` of any type, or None (secret fields may be masked)."""

    @abc.abstractmethod
    def create(self, spec: ConnectorSpec) -> None:
        """Store a new connection; raises :class:`Duplicate` if the id is taken."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the connection ``name``."""

    @abc.abstractmethod
    def write_test_file(
        self, spec: ConnectorSpec, prefix: str, bucket: str | None = None, compression: str = "none"
    ) -> str:
        """Write the validation file with the *stored* credentials of ``spec`` as an exporter writing under
        ``prefix`` (templated or not) with ``compression`` writes; return a description.

        ``bucket`` is the exporter's, for the official providers' connection types."""

    @abc.abstractmethod
    def connection(self, conn_id: str) -> Any | None:
        """A connection object with readable secrets (for Kafka clients), or None when absent."""

    @abc.abstractmethod
    def get_variable(self, key: str) -> str | None:
        """The value of the Airflow Variable ``key``, or None when there is none."""

    @abc.abstractmethod
    def set_variable(self, key: str, value: str, description: str) -> None:
        """Create the Variable ``key`` or overwrite its value and description."""

    @abc.abstractmethod
    def delete_variable(self, key: str) -> bool:
        """Remove the Variable ``key``; whether there was one."""


def validate_new(spec: ConnectorSpec, prefix: str, bucket: str | None = None, compression: str = "none") -> str:
    """Write the validation file with credentials that are not stored yet (raises StorageError)."""
    hook = spec.hook(bucket)
    key = hook.write_test_file(prefix, compression)
    return f"{hook.asset_scheme}://{hook.bucket}/{key}"


class LocalStore(ConnectorStore):
    """The Airflow metadata database configured for this machine (``AIRFLOW_HOME`` / env)."""

    def __init__(self) -> None:
        try:
            from airflow.configuration import conf

            self.where = f"Airflow metadata database ({_safe_db(conf.get('database', 'sql_alchemy_conn'))})"
        except Exception as err:  # a broken config is reported, not a traceback
            raise StoreError(f"cannot read the Airflow configuration: {type(err).__name__}: {err}") from None

    def _session(self) -> Any:
        from airflow.utils.session import create_session

        return create_session()

    def _query(self, session: Any, name: str | None = None) -> Any:
        from airflow.models import Connection
        from sqlalchemy import select

        stmt = select(Connection)
        if name is not None:
            stmt = stmt.where(Connection.conn_id == name)
        else:
            stmt = stmt.where(Connection.conn_type.in_(CONN_TYPES)).order_by(Connection.conn_id)
        return stmt

    def in_session(self, fn: Any) -> Any:
        """``fn(session)`` in one session of the metadata database; a database error becomes one line."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._session() as session:
                return fn(session)
        except SQLAlchemyError as err:
            raise StoreError(
                f"the {self.where} is not usable ({type(err).__name__}); did you run `airflow db migrate`?"
            ) from None

    def list(self) -> list[ConnectorSpec]:
        return self.in_session(lambda s: [_spec(c) for c in s.scalars(self._query(s))])

    def get(self, name: str) -> ConnectorSpec | None:
        def fetch(session: Any) -> ConnectorSpec | None:
            conn = session.scalar(self._query(session, name))
            return None if conn is None else _spec(conn)

        return self.in_session(fetch)

    def create(self, spec: ConnectorSpec) -> None:
        from airflow.models import Connection

        def add(session: Any) -> None:
            if session.scalar(self._query(session, spec.name)) is not None:
                raise Duplicate(spec.name)
            session.add(Connection(**spec.fields(), description=DESCRIPTION))

        self.in_session(add)

    def delete(self, name: str) -> None:
        def remove(session: Any) -> None:
            conn = session.scalar(self._query(session, name))
            if conn is not None:
                session.delete(conn)

        self.in_session(remove)

    def write_test_file(
        self, spec: ConnectorSpec, prefix: str, bucket: str | None = None, compression: str = "none"
    ) -> str:
        return validate_new(spec, prefix, bucket, compression)

    def connection(self, conn_id: str) -> Any | None:
        """Through Airflow's secrets chain (env vars, secrets backends, then the database)."""
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models import Connection

        try:
            return Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            return None

    def get_variable(self, key: str) -> str | None:
        """From the metadata database, where :meth:`set_variable` writes (not through secrets backends)."""
        from airflow.models import Variable
        from sqlalchemy import select

        def read(session: Any) -> str | None:
            row = session.scalar(select(Variable).where(Variable.key == key))
            if row is None:
                return None
            value = row.val
            if value is None:  # Airflow answers None when the Fernet key cannot decrypt it
                raise StoreError(
                    f"Airflow Variable '{key}' cannot be decrypted with this machine's Fernet key "
                    "([core] fernet_key must be the one the Airflow deployment uses)"
                )
            return value

        return self.in_session(read)

    def set_variable(self, key: str, value: str, description: str) -> None:
        from airflow.models import Variable

        # Variable.set upserts and encrypts the value as Airflow itself does
        self.in_session(lambda session: Variable.set(key, value, description=description, session=session))

    def delete_variable(self, key: str) -> bool:
        from airflow.models import Variable

        return bool(self.in_session(lambda session: Variable.delete(key, session=session)))


def _spec(conn: Any) -> ConnectorSpec:
    try:
        extra = conn.extra
    except ValueError:  # Airflow refuses to read an extra that is not a JSON object: the hook says what is wrong
        from airflow.models.crypto import FernetFieldsMixin

        extra = FernetFieldsMixin.get_extra(conn)
    return ConnectorSpec.from_fields(
        conn.conn_id, conn.conn_type, conn.host, conn.login, conn.password, conn.port, extra
    )


def _safe_db(url: str) -> str:
    """The database URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class RemoteStore(ConnectorStore):
    """A deployed Airflow through its REST API: v2 (``/api/v2/connections``) on Airflow 3, v1 on Airflow 2;
    which one, the server says (the first request asks for its version).

    Auth: a token in ``STRM_AIRFLOW_TOKEN`` (sent as a bearer token), or ``STRM_AIRFLOW_USERNAME``/
    ``STRM_AIRFLOW_PASSWORD``: exchanged for a JWT at ``/auth/token`` on Airflow 3, sent with every request
    (HTTP basic auth, the FAB auth manager's ``basic_auth`` API backend) on Airflow 2.
    """

    def __init__(self, url: str) -> None:
        import httpx

        self.base = url.rstrip("/")
        self.where = f"Airflow at {self.base}"
        self._http = httpx.Client(base_url=self.base, timeout=30.0, trust_env=False)
        self._token: str | None = os.environ.get("STRM_AIRFLOW_TOKEN") or None
        self._api: str | None = None

    # ----- http ---------------------------------------------------------------------------------
    @property
    def api(self) -> str:
        """The REST API the server has: ``v2`` (Airflow 3) or ``v1`` (Airflow 2)."""
        if self._api is None:
            # the version endpoints answer whether or not the request is authenticated: 404 is "no such API"
            if self._send("GET", "/api/v2/version", auth=False).status_code != 404:
                self._api = "v2"
            elif self._send("GET", "/api/v1/version", auth=False).status_code != 404:
                self._api = "v1"
            else:
                raise StoreError(f"{self.where} has no Airflow REST API (neither /api/v2 nor /api/v1 answers)")
        return self._api

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            user, password = os.environ.get("STRM_AIRFLOW_USERNAME"), os.environ.get("STRM_AIRFLOW_PASSWORD")
            if self.api == "v1":
                if not (user and password):
                    raise StoreError(
                        f"no credentials for {self.where} (Airflow 2): set STRM_AIRFLOW_USERNAME and "
                        "STRM_AIRFLOW_PASSWORD"
                    )
                return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
            if not (user and password):
                raise StoreError(
                    f"no credentials for {self.where}: set STRM_AIRFLOW_TOKEN, or STRM_AIRFLOW_USERNAME and "
                    "STRM_AIRFLOW_PASSWORD"
                )
            resp = self._send("POST", "/auth/token", json={"username": user, "password": password}, auth=False)
            if resp.status_code >= 400:
                raise StoreError(f"{self.where} refused user '{user}' at /auth/token (HTTP {resp.status_code})")
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        import httpx

        headers = {**(self._auth() if auth else {}), **kwargs.pop("headers", {})}
        try:
            return self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as err:
            raise StoreError(f"cannot reach {self.where}: {type(err).__name__}") from None

    def call(self, method: str, path: str, *, ok_missing: bool = False, raw: bool = False, **kwargs: Any) -> Any:
        """``method`` on ``/api/<version><path>``: the JSON answer (the text with ``raw``), None for a 404 with
        ``ok_missing``."""
        resp = self._send(method, f"/api/{self.api}{path}", **kwargs)
        if resp.status_code == 404 and ok_missing:
            return None
        if resp.status_code in (401, 403):
            creds = "STRM_AIRFLOW_USERNAME/STRM_AIRFLOW_PASSWORD" if self.api == "v1" else "STRM_AIRFLOW_TOKEN"
            raise StoreError(
                f"{self.where} refused {method} {path} (HTTP {resp.status_code}): check {creds} or the user's "
                "permissions"
            )
        if resp.status_code == 409:
            raise Duplicate(path)
        if resp.status_code >= 400:
            raise StoreError(f"{self.where}: {method} {path} failed (HTTP {resp.status_code}): {_detail(resp)}")
        if raw:
            return resp.text
        return resp.json() if resp.content else {}

    # ----- ConnectorStore -----------------------------------------------------------------------
    def list(self) -> list[ConnectorSpec]:
        specs: list[ConnectorSpec] = []
        offset = 0
        while True:
            order = "connection_id" if self.api == "v1" else "conn_id"
            page = self.call("GET", "/connections", params={"limit": 100, "offset": offset, "order_by": order})
            items = page.get("connections", [])
            ours = [c for c in items if c.get("conn_type") in CONN_TYPES]
            if self.api == "v1":  # Airflow 2 lists connections without their extra: read each
                ours = [self.call("GET", f"/connections/{quote(c['connection_id'], safe='')}") for c in ours]
            specs += [_remote_spec(c) for c in ours]
            offset += len(items)
            if not items or offset >= page.get("total_entries", 0):
                return specs

    def get(self, name: str) -> ConnectorSpec | None:
        data = self.call("GET", f"/connections/{name}", ok_missing=True)
        return None if data is None else _remote_spec(data)

    def create(self, spec: ConnectorSpec) -> None:
        fields = spec.fields()
        body = {"connection_id": fields.pop("conn_id"), "description": DESCRIPTION, **fields}
        self.call("POST", "/connections", json=body)

    def delete(self, name: str) -> None:
        self.call("DELETE", f"/connections/{name}", ok_missing=True)

    def write_test_file(
        self, spec: ConnectorSpec, prefix: str, bucket: str | None = None, compression: str = "none"
    ) -> str:
        """Ask the server to test the stored connection as an exporter writing under ``prefix`` with
        ``compression`` writes (the Test button's ``test_prefix`` and ``test_compression``; needs
        test_connection)."""
        if self.api == "v1":
            raise StoreError(
                f"{self.where} runs Airflow 2, whose connection test uses only the fields it is sent, not the "
                "stored credentials: run this command on the Airflow host, or pass --no-validate"
            )
        if bucket:
            # The server's Test runs the official provider's own check, which writes nothing to a bucket.
            raise StoreError(
                f"a {spec.conn_type} connection can be validated only where its credentials are readable: "
                "run this command on the Airflow host, or pass --no-validate"
            )
        # The server restores masked ("***") values of the extra from the stored connection, but keeps
        # only the keys sent: send the whole extra as the API showed it, with the test file's place changed.
        extra = {**spec.extra, "test_prefix": prefix, "test_compression": compression}
        body = {"connection_id": spec.name, "conn_type": spec.conn_type, "extra": json.dumps(extra)}
        resp = self._send("POST", f"/api/{self.api}/connections/test", json=body)
        if resp.status_code == 403 and "disabled" in resp.text.lower():
            raise StoreError(
                f"{self.where} has connection testing disabled, so the data connector cannot be validated "
                "remotely: set [core] test_connection = Enabled there, or pass --no-validate"
            )
        if resp.status_code >= 400:
            raise StoreError(f"{self.where}: connection test failed (HTTP {resp.status_code}): {_detail(resp)}")
        result = resp.json()
        if not result.get("status"):
            from strm_provider.hooks import StorageError

            raise StorageError(str(result.get("message") or "the connection test failed"))
        return str(result.get("message") or "").removeprefix("Wrote ")

    def connection(self, conn_id: str) -> Any | None:
        data = self.call("GET", f"/connections/{conn_id}", ok_missing=True)
        if data is None:
            return None
        # Airflow 2's API leaves the password out, so a connection with a login may have one
        if data.get("password") == MASKED or (self.api == "v1" and data.get("login")):
            raise StoreError(
                f"connection '{conn_id}' has a password (or, on Airflow 2, a login, whose password the API "
                f"leaves out), which {self.where} does not reveal; run this command "
                "where the connection is readable (e.g. on the Airflow host) or define it locally"
            )
        return _remote_spec(data).to_connection()

    def get_variable(self, key: str) -> str | None:
        data = self.call("GET", _variable_path(key), ok_missing=True)
        if data is None:
            return None
        value = data.get("value")
        # The API masks a Variable whose name reads like a secret's (an exporter named "token-...")
        if value in (MASKED, json.dumps(MASKED)):
            raise StoreError(
                f"{self.where} masks Airflow Variable '{key}' (its name reads like a secret's), so it cannot be "
                "read remotely; run this command on the Airflow host"
            )
        return None if value is None else str(value)

    def set_variable(self, key: str, value: str, description: str) -> None:
        body = {"key": key, "value": value, "description": description}
        if self.call("PATCH", _variable_path(key), ok_missing=True, json=body) is None:
            self.call("POST", "/variables", json=body)

    def delete_variable(self, key: str) -> bool:
        return self.call("DELETE", _variable_path(key), ok_missing=True) is not None


def _remote_spec(data: dict[str, Any]) -> ConnectorSpec:
    return ConnectorSpec.from_fields(
        data["connection_id"],
        data.get("conn_type") or "",
        data.get("host"),
        data.get("login"),
        data.get("password"),
        data.get("port"),
        data.get("extra"),
    )


def _variable_path(key: str) -> str:
    return f"/variables/{quote(key, safe='')}"


def _detail(resp: Any) -> str:
    try:
        detail = resp.json().get("detail")
    except ValueError:
        return resp.text[:200]
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) for d in detail)[:300]
    return str(detail)[:300]


def open_store(airflow_url: str | None) -> ConnectorStore:
    return RemoteStore(airflow_url) if airflow_url else LocalStore()
