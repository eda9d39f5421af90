"""The servers of :mod:`devstack` as pytest fixtures: one of each per session, shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack import free_port
from devstack.azurite import AzureTarget, start_azurite
from devstack.gcs import GcsTarget, start_gcs
from devstack.kafka import Broker, start_secured_broker
from devstack.moto import MotoS3, start_moto
from devstack.postgres import Postgres, start_postgres
from devstack.redis import start_redis
from devstack.schema_registry import SchemaRegistry
from devstack.seaweedfs import SeaweedTarget, start_seaweedfs
from strm_provider.readers import READERS


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Apache Kafka node for the session, secured listeners included; tests use their own topics."""
    data_dir = tmp_path_factory.mktemp("kafka")
    port = free_port()
    with start_secured_broker(data_dir, port) as secured:
        broker = Broker(port, data_dir, secured)
        yield broker
        broker.reset_clients()


#: ``each_reader``'s parameters with the default reader's in the compatibility subset (``pytest -m compat``):
#: ``@pytest.mark.parametrize("each_reader", COMPAT_READER, indirect=True)``
COMPAT_READER = [pytest.param(READERS[0], marks=pytest.mark.compat), *READERS[1:]]


@pytest.fixture(params=READERS)
def each_reader(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test once per reader: exactly-once must hold whichever client reads."""
    Broker.reader = request.param
    try:
        yield request.param
    finally:
        Broker.reader = READERS[0]


@pytest.fixture(scope="session")
def s3_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with start_moto(tmp_path_factory.mktemp("moto")) as target:
        yield target


@pytest.fixture(scope="session")
def s3_compatible_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedTarget]:
    with start_seaweedfs(tmp_path_factory.mktemp("s3_compatible_target")) as target:
        yield target


@pytest.fixture(scope="session")
def gcs_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsTarget]:
    with start_gcs(tmp_path_factory.mktemp("gcs_target")) as target:
        yield target


@pytest.fixture(scope="session")
def azure_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureTarget]:
    with start_azurite(tmp_path_factory.mktemp("azure_target")) as target:
        yield target


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with start_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistry]:
    """One Schema Registry (Confluent's REST API, no authentication) for the session: ``.url``, ``.client()``."""
    with SchemaRegistry(tmp_path_factory.mktemp("schema_registry")) as registry:
        yield registry
