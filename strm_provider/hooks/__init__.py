"""Hooks, one per connection type, and the one place that picks the storage hook for a connection."""

from __future__ import annotations

from airflow.sdk import BaseHook

from strm_provider.connection_types import DATA_CONNECTORS
from strm_provider.hooks.storage import StorageError, StorageHook


def storage_hook_class(conn_type: str) -> type[StorageHook]:
    """The hook class for a data connector's connection type."""
    from importlib import import_module

    try:
        kind = DATA_CONNECTORS[conn_type]
    except KeyError:
        raise StorageError(
            f"connection type '{conn_type}' is not a data connector; expected one of {sorted(DATA_CONNECTORS)}"
        ) from None
    module, _, name = kind.hook.rpartition(".")
    try:
        return getattr(import_module(module), name)
    except ImportError as err:
        raise StorageError(
            f"connection type '{conn_type}' needs the '{kind.extra}' extra: "
            f"pip install 'strm-airflow-provider[{kind.extra}]' ({err})"
        ) from None


def storage_hook(conn_id: str) -> StorageHook:
    """Build the storage hook for data connector ``conn_id`` (the only place that branches on kind)."""
    conn = BaseHook.get_connection(conn_id)
    return storage_hook_class(conn.conn_type or "")(conn_id)


__all__ = ["StorageError", "StorageHook", "storage_hook", "storage_hook_class"]
