"""The provider's connection types: the one table the hooks, the UI's connection form and the CLI read.

Kept free of imports, so that Airflow's provider discovery (``get_provider_info``) can read it. What each
type's connection holds is :mod:`strm_provider.connection_settings`.
"""

from __future__ import annotations

from typing import NamedTuple


class ConnectionType(NamedTuple):
    """A connection type and what serves it."""

    hook: str  # the hook class, as a dotted path (imported only when used: its SDK may be an extra)
    name: str  # the hook's name, as Airflow's UI lists the connection type
    extra: str = ""  # the package extra that installs that SDK


#: the Kafka cluster's connection type
KAFKA = "strm_kafka"
#: the Kafka connection an exporter reads through unless it names another (Airflow's ``<type>_default``)
KAFKA_DEFAULT = f"{KAFKA}_default"
KAFKA_TYPE = ConnectionType("strm_provider.hooks.kafka.StrmKafkaHook", "STRM Kafka")

#: connection type -> what serves it. Everything storage-specific hangs off this table.
DATA_CONNECTORS: dict[str, ConnectionType] = {
    "strm_s3": ConnectionType("strm_provider.hooks.s3.StrmS3Hook", "STRM AWS S3", "s3"),
    "strm_s3_compatible": ConnectionType(
        "strm_provider.hooks.s3.StrmS3CompatibleHook", "STRM S3-compatible storage", "s3"
    ),
    "strm_gcs": ConnectionType("strm_provider.hooks.gcs.StrmGcsHook", "STRM Google Cloud Storage", "gcs"),
    "strm_azure_blob": ConnectionType(
        "strm_provider.hooks.azure_blob.StrmAzureBlobHook", "STRM Azure Blob Storage", "azure"
    ),
}

#: The official providers' connection types an exporter may name instead. They hold credentials only:
#: the exporter names the bucket or container (``bucket``), and the upload goes through that provider's hook.
PROVIDER_DATA_CONNECTORS: dict[str, ConnectionType] = {
    "aws": ConnectionType(
        "strm_provider.hooks.s3.AwsS3Hook", "Amazon Web Services (bucket named by the exporter)", "s3"
    ),
    "google_cloud_platform": ConnectionType(
        "strm_provider.hooks.gcs.GoogleCloudGcsHook", "Google Cloud (bucket named by the exporter)", "google"
    ),
    "wasb": ConnectionType(
        "strm_provider.hooks.azure_blob.WasbBlobHook", "Azure Blob Storage (container named by the exporter)", "azure"
    ),
}

#: the connection types this provider registers with Airflow (its UI's form, the Test button)
OWN_TYPES: dict[str, ConnectionType] = {KAFKA: KAFKA_TYPE, **DATA_CONNECTORS}
