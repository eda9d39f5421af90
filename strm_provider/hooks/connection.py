"""What every hook of the provider has: one connection, read through its type's settings model."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any, ClassVar, Self

from airflow.providers.common.compat.sdk import BaseHook

from strm_provider.connection_settings import ConnectionSettings, SettingsError


class ConnectionHook(BaseHook):
    """A hook over one connection; :attr:`settings` is the connection as ``settings_class`` parses it."""

    settings_class: ClassVar[type[ConnectionSettings]] = ConnectionSettings

    @property
    def connection_id(self) -> str:
        """The connection's id, whatever the subclass calls its attribute (``conn_name_attr``)."""
        return str(getattr(self, self.conn_name_attr))

    @classmethod
    def from_connection(cls, conn: Any, **kwargs: Any) -> Self:
        """A hook over a connection object that is not (yet) stored anywhere Airflow looks.

        ``strm create data-connector`` validates the credentials before it saves them, and a remote
        Airflow's connections are not readable locally; the instance's ``get_connection`` is bound to
        ``conn`` so the hook reads its fields as usual (and hands it on to an official provider's hook).
        """
        hook = cls(conn.conn_id, **kwargs)
        hook.get_connection = lambda _conn_id: conn  # type: ignore[method-assign]
        return hook

    @cached_property
    def settings(self) -> Any:
        """The connection's settings; an invalid one raises :meth:`settings_error`, naming each field."""
        try:
            return self.read_settings(self.get_connection(self.connection_id))
        except SettingsError as err:
            raise self.settings_error(str(err)) from None

    def read_settings(self, conn: Any) -> ConnectionSettings:
        """``conn`` through the settings model; a hook whose connection lacks a setting may supply it."""
        return self.settings_class.parse(conn)

    def settings_error(self, problem: str) -> Exception:
        """The exception an invalid setting raises, naming this connection."""
        return ValueError(f"connection '{self.connection_id}': {problem}")


def quiet_library_log(name: str) -> None:
    """Logger ``name`` at WARNING, unless logging's configuration (Airflow's) set a level for it.

    Called where a hook builds a client: a task log tells the export's story (plan, files, summary), and
    a client library's INFO lines on every request or metadata refresh would bury it.
    """
    log = logging.getLogger(name)
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)
