"""The provider's connection types: the one table the hooks, the UI's connection form and the CLI read.

Kept free of imports, so that Airflow's provider discovery (``get_provider_info``) can read it.
"""

from __future__ import annotations

from typing import NamedTuple

#: the Kafka cluster's connection type
KAFKA = "strm_kafka"


class DataConnectorType(NamedTuple):
    """A connection type that is a data connector."""

    hook: str  # the hook class, as a dotted path (imported only when used: its SDK is an extra)
    extra: str  # the package extra that installs that SDK


#: connection type -> what serves it. Everything storage-specific hangs off this table.
DATA_CONNECTORS: dict[str, DataConnectorType] = {
    "strm_s3": DataConnectorType("strm_provider.hooks.s3.StrmS3Hook", "s3"),
    "strm_s3_compatible": DataConnectorType("strm_provider.hooks.s3.StrmS3CompatibleHook", "s3"),
    "strm_gcs": DataConnectorType("strm_provider.hooks.gcs.StrmGcsHook", "gcs"),
    "strm_azure_blob": DataConnectorType("strm_provider.hooks.azure_blob.StrmAzureBlobHook", "azure"),
}

#: The official providers' connection types an exporter may name instead. They hold credentials only:
#: the exporter names the bucket or container (``bucket``), and the upload goes through that provider's hook.
PROVIDER_DATA_CONNECTORS: dict[str, DataConnectorType] = {
    "aws": DataConnectorType("strm_provider.hooks.s3.AwsS3Hook", "s3"),
    "google_cloud_platform": DataConnectorType("strm_provider.hooks.gcs.GoogleCloudGcsHook", "google"),
    "wasb": DataConnectorType("strm_provider.hooks.azure_blob.WasbBlobHook", "azure"),
}
