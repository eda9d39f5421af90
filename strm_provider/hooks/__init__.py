"""Hooks, one per connection type, and the one place that picks the storage hook for a connection."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import BaseHook

from strm_provider.connection_types import DATA_CONNECTORS, PROVIDER_DATA_CONNECTORS
from strm_provider.hooks.storage import StorageError, StorageHook

#: every connection type an exporter may write through
ALL_DATA_CONNECTORS = {**DATA_CONNECTORS, **PROVIDER_DATA_CONNECTORS}


def storage_hook_class(conn_type: str) -> type[StorageHook]:
    """The hook class for a data connector's connection type."""
    from importlib import import_module

    try:
        kind = ALL_DATA_CONNECTORS[conn_type]
    except KeyError:
        raise StorageError(
            f"connection type '{conn_type}' is not a data connector; expected one of {sorted(ALL_DATA_CONNECTORS)}"
        ) from None
    module, _, name = kind.hook.rpartition(".")
    try:
        return getattr(import_module(module), name)
    except ImportError as err:
        raise StorageError(
            f"connection type '{conn_type}' needs the '{kind.extra}' extra: "
            f"pip install 'strm-airflow-provider[{kind.extra}]' ({err})"
        ) from None


def check_bucket(conn_id: str, conn_type: str, bucket: str | None) -> None:
    """The exporter's ``bucket``: required for the official providers' connections, which hold only
    credentials, and refused for ours, which hold their bucket themselves (two places naming it would let
    them disagree). A refusal is one line naming the connection and its type."""
    where = f"data connector '{conn_id}' ({conn_type or 'no type'})"
    if conn_type in PROVIDER_DATA_CONNECTORS and not bucket:
        raise StorageError(
            f"{where}: the exporter must name the bucket or container, as field 'bucket' "
            f"(strm create batch-exporter --bucket): a {conn_type} connection holds only credentials"
        )
    if conn_type not in PROVIDER_DATA_CONNECTORS and bucket:
        raise StorageError(
            f"{where}: the connection names its bucket itself; remove field 'bucket' ({bucket!r}) from the "
            "exporter, which is for aws, google_cloud_platform and wasb connections"
        )


def storage_hook(conn_id: str, bucket: str | None = None) -> StorageHook:
    """The storage hook for data connector ``conn_id`` (the only place that branches on kind), with the
    exporter's ``bucket`` (:func:`check_bucket`). Every refusal is one line naming the connection and its type.
    """
    conn = BaseHook.get_connection(conn_id)
    conn_type = conn.conn_type or ""
    try:
        hook_class = storage_hook_class(conn_type)
    except StorageError as err:
        raise StorageError(f"data connector '{conn_id}' ({conn_type or 'no type'}): {err}") from None
    check_bucket(conn_id, conn_type, bucket)
    return hook_class(conn_id, bucket=bucket) if bucket else hook_class(conn_id)


__all__ = ["ALL_DATA_CONNECTORS", "StorageError", "StorageHook", "check_bucket", "storage_hook", "storage_hook_class"]
