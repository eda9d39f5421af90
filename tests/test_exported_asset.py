"""exported_asset: the Asset of an export task's URI, equal to Airflow's own, without its provider discovery."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import Asset

from strm_provider.version_compat import exported_asset

URIS = [
    "s3://bucket/events",
    "s3://Bucket/events/?b=2&a=1#fragment",
    "gs://bucket/prefix/",
    "wasbs://container@account.blob.core.windows.net/prefix",
    "abfs://container@account.dfs.core.windows.net/prefix",
    "strm://s3/events",
    "S3://bucket/events//",
]


@pytest.mark.parametrize("uri", URIS)
def test_equals_airflows_asset(uri: str) -> None:
    assert exported_asset(uri) == Asset(uri)
    assert exported_asset(uri).uri == Asset(uri).uri


@pytest.mark.parametrize("uri", ["s3:///events", "gs:///events"])
def test_a_bucket_is_required_as_airflow_requires_it(uri: str) -> None:
    with pytest.raises(ValueError, match="must contain a bucket name"):
        Asset(uri)
    with pytest.raises(ValueError, match="must contain a bucket name"):
        exported_asset(uri)
