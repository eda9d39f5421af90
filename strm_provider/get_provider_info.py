"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

It registers our connection types (the "data connectors" and the Kafka cluster), with the
labels, hidden fields, placeholders and extra fields the Airflow UI's connection form shows.
"""

from __future__ import annotations

from typing import Any

from strm_provider import __version__
from strm_provider.connection_types import DATA_CONNECTORS
from strm_provider.naming import EXTENSIONS

_STR = {"type": ["string", "null"]}
_SECRET = {"type": ["string", "null"], "format": "password"}


def _field(label: str, description: str, schema: dict[str, Any] = _STR) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": schema}


_TEST_PREFIX = _field(
    "Test prefix",
    "Where the Test button writes its .strm_test_<uuid>.jsonl, holding no event: an exporter's path prefix "
    "({date} and {hour} are filled from the current time)",
)
_TEST_COMPRESSION = _field(
    "Test file compression",
    "The ending of the Test button's file: that of the exporters writing here (none: .jsonl, gzip: .jsonl.gz, "
    "zstd: .jsonl.zst), as their policy must allow",
    {"type": "string", "enum": list(EXTENSIONS), "default": "none"},
)


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "strm-airflow-provider",
        "name": "STRM Batch Exporter",
        "description": "Export Kafka streams to S3, S3-compatible, Google Cloud Storage and Azure Blob Storage "
        "as JSON Lines files, exactly once, on an Airflow schedule.",
        "versions": [__version__],
        "integrations": [{"integration-name": "STRM Batch Exporter", "tags": ["service"]}],
        "operators": [{"integration-name": "STRM Batch Exporter", "python-modules": ["strm_provider.operators"]}],
        "hooks": [
            {
                "integration-name": "STRM Batch Exporter",
                "python-modules": [
                    "strm_provider.hooks.kafka",
                    "strm_provider.hooks.s3",
                    "strm_provider.hooks.gcs",
                    "strm_provider.hooks.azure_blob",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "strm_provider.hooks.kafka.StrmKafkaHook",
                "hook-name": "STRM Kafka",
                "connection-type": "strm_kafka",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "host": "Bootstrap servers",
                        "login": "SASL username",
                        "password": "SASL password",
                    },
                    "placeholders": {"host": "broker1:9092,broker2:9092", "login": "(only with SASL)"},
                },
                "conn-fields": {
                    "security_protocol": _field(
                        "Security protocol",
                        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                        {
                            "type": ["string", "null"],
                            "enum": ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", None],
                        },
                    ),
                    "sasl_mechanism": _field(
                        "SASL mechanism",
                        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                        {
                            "type": ["string", "null"],
                            "enum": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", None],
                        },
                    ),
                    "ssl_cafile": _field("SSL CA file", "Path of the CA bundle that signed the brokers' certificates"),
                    "reader": _field(
                        "Reader",
                        "Client the export reads with: kafka-python (default) or confluent "
                        "(librdkafka, faster; needs the [confluent] extra)",
                        {"type": ["string", "null"], "enum": ["kafka-python", "confluent", None]},
                    ),
                },
            },
            {
                "hook-class-name": DATA_CONNECTORS["strm_s3"].hook,
                "hook-name": "STRM AWS S3",
                "connection-type": "strm_s3",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "extra"],
                    "relabeling": {"login": "AWS access key ID", "password": "AWS secret access key"},
                    "placeholders": {
                        "login": "AKIA... (empty: the worker's own AWS identity)",
                        "password": "(or Credentials JSON below; both empty: the AWS default credential chain)",
                    },
                },
                "conn-fields": {
                    "bucket": _field("Bucket", "Name of the S3 bucket (required)"),
                    "region": _field("Region", "Bucket region; found with GetBucketLocation when empty"),
                    "endpoint_url": _field("Endpoint URL", "Only for private endpoints or tests"),
                    "role_arn": _field(
                        "Role ARN",
                        "A role to assume for writing, on top of the key or the worker's identity (empty: none)",
                    ),
                    "sse": _field(
                        "Server-side encryption",
                        "AES256 or aws:kms for every object written; empty: the bucket's default",
                        {"type": ["string", "null"], "enum": ["AES256", "aws:kms", None]},
                    ),
                    "kms_key_id": _field(
                        "KMS key",
                        "With aws:kms: the key id or ARN (grant kms:GenerateDataKey on it); empty: aws/s3",
                    ),
                    "credentials_json": _field(
                        "Credentials JSON",
                        "What `aws iam create-access-key` prints (instead of key id and secret)",
                        _SECRET,
                    ),
                    "test_prefix": _TEST_PREFIX,
                    "test_compression": _TEST_COMPRESSION,
                },
            },
            {
                "hook-class-name": DATA_CONNECTORS["strm_s3_compatible"].hook,
                "hook-name": "STRM S3-compatible storage",
                "connection-type": "strm_s3_compatible",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {"host": "Service URL", "login": "Access key", "password": "Secret key"},
                    "placeholders": {"host": "https://storage.googleapis.com", "login": "GOOG1E..."},
                },
                "conn-fields": {
                    "bucket": _field("Bucket", "Name of the bucket (required)"),
                    "api": _field("API", "Signature version", {"type": ["string", "null"], "enum": ["s3v4", None]}),
                    "path": _field(
                        "Addressing",
                        "auto, path or virtual",
                        {"type": ["string", "null"], "enum": ["auto", "path", "virtual", None]},
                    ),
                    "credentials_json": _field(
                        "Credentials JSON", "JSON with url, accessKey, secretKey, api, path", _SECRET
                    ),
                    "test_prefix": _TEST_PREFIX,
                    "test_compression": _TEST_COMPRESSION,
                },
            },
            {
                "hook-class-name": DATA_CONNECTORS["strm_gcs"].hook,
                "hook-name": "STRM Google Cloud Storage",
                "connection-type": "strm_gcs",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "login", "password", "extra"],
                    "relabeling": {},
                    "placeholders": {},
                },
                "conn-fields": {
                    "bucket": _field("Bucket", "Name of the GCS bucket (required)"),
                    "keyfile_dict": _field(
                        "Service account key JSON",
                        "The JSON key file's content (empty, with no key path: the worker's own identity, from "
                        "Application Default Credentials: GKE Workload Identity, a federation config, the VM)",
                        _SECRET,
                    ),
                    "key_path": _field("Service account key path", "Path of the JSON key file (instead of pasting it)"),
                    "impersonation_chain": _field(
                        "Impersonation chain",
                        "Service accounts to impersonate, comma-separated, the last one writing (empty: none)",
                    ),
                    "iam_endpoint_url": _field("IAM Credentials endpoint", "Only for private endpoints or tests"),
                    "endpoint_url": _field("Endpoint URL", "Only for private endpoints or emulators"),
                    "test_prefix": _TEST_PREFIX,
                    "test_compression": _TEST_COMPRESSION,
                },
            },
            {
                "hook-class-name": DATA_CONNECTORS["strm_azure_blob"].hook,
                "hook-name": "STRM Azure Blob Storage",
                "connection-type": "strm_azure_blob",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "host": "Storage account URI",
                        "login": "Client (application) ID",
                        "password": "Client secret",
                    },
                    "placeholders": {
                        "host": "https://foo.blob.core.windows.net",
                        "login": "(empty: the identity's own, e.g. AZURE_CLIENT_ID)",
                        "password": "(empty: the worker's own identity: workload identity, managed identity)",
                    },
                },
                "conn-fields": {
                    "container": _field("Container", "Name of the blob container (required)"),
                    "tenant_id": _field(
                        "Tenant ID",
                        "Microsoft Entra tenant of the application (empty without a secret: AZURE_TENANT_ID)",
                    ),
                    "authority_host": _field("Authority host", "Only for sovereign clouds or tests"),
                    "test_prefix": _TEST_PREFIX,
                    "test_compression": _TEST_COMPRESSION,
                },
            },
        ],
    }
