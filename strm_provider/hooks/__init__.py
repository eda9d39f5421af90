"""Hooks, one per connection type, and the one place that picks the storage hook for a connection."""

from __future__ import annotations

from airflow.sdk import BaseHook

from strm_provider.hooks.storage import StorageError, StorageHook

#: connection type -> storage hook class path. Everything storage-specific hangs off this table.
STORAGE_HOOKS: dict[str, str] = {
    "strm_s3": "strm_provider.hooks.s3.StrmS3Hook",
    "strm_s3_compatible": "strm_provider.hooks.s3.StrmS3CompatibleHook",
    "strm_gcs": "strm_provider.hooks.gcs.StrmGcsHook",
    "strm_azure_blob": "strm_provider.hooks.azure_blob.StrmAzureBlobHook",
}


def storage_hook_class(conn_type: str) -> type[StorageHook]:
    """The hook class for a data connector's connection type."""
    from importlib import import_module

    try:
        path = STORAGE_HOOKS[conn_type]
    except KeyError:
        raise StorageError(
            f"connection type '{conn_type}' is not a data connector; expected one of {sorted(STORAGE_HOOKS)}"
        ) from None
    module, _, name = path.rpartition(".")
    try:
        return getattr(import_module(module), name)
    except ImportError as err:
        extra = {"strm_s3": "s3", "strm_s3_compatible": "s3", "strm_gcs": "gcs", "strm_azure_blob": "azure"}
        raise StorageError(
            f"connection type '{conn_type}' needs the '{extra[conn_type]}' extra: "
            f"pip install 'strm-airflow-provider[{extra[conn_type]}]' ({err})"
        ) from None


def storage_hook(conn_id: str) -> StorageHook:
    """Build the storage hook for data connector ``conn_id`` (the only place that branches on kind)."""
    conn = BaseHook.get_connection(conn_id)
    return storage_hook_class(conn.conn_type or "")(conn_id)


__all__ = ["STORAGE_HOOKS", "StorageError", "StorageHook", "storage_hook", "storage_hook_class"]
