"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

It registers the provider's connection types (:data:`~strm_provider.connection_types.OWN_TYPES`) with
the form each one's settings model declares (:mod:`strm_provider.connection_settings`), so discovery
imports no hook and no storage SDK.
"""

from __future__ import annotations

from typing import Any

from strm_provider import __version__
from strm_provider.connection_settings import SETTINGS
from strm_provider.connection_types import OWN_TYPES

INTEGRATION = "STRM Batch Exporter"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "strm-airflow-provider",
        "name": INTEGRATION,
        "description": "Export Kafka streams to S3, S3-compatible, Google Cloud Storage and Azure Blob Storage "
        "as JSON Lines files, exactly once, on an Airflow schedule.",
        "versions": [__version__],
        "integrations": [{"integration-name": INTEGRATION, "tags": ["service"]}],
        "operators": [{"integration-name": INTEGRATION, "python-modules": ["strm_provider.operators"]}],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": sorted({kind.hook.rpartition(".")[0] for kind in OWN_TYPES.values()}),
            }
        ],
        "connection-types": [
            {"hook-class-name": kind.hook, "hook-name": kind.name, "connection-type": conn_type}
            | SETTINGS[conn_type].form()
            for conn_type, kind in OWN_TYPES.items()
        ],
    }
