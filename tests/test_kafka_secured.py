"""Secured Kafka as users run it: SASL_PLAINTEXT with PLAIN, and SASL_SSL with SCRAM-SHA-512 behind TLS.

Over each listener of the session broker: ``strm create stream``, ``strm simulate random-events``,
the connection's Test button and an exporter's DAG run work; a wrong password or an untrusted
certificate fails the run naming the cause, with nothing written and nothing committed, and no
password in any log, XCom, exception or CLI output.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import trustme

from devstack.kafka import SASL_PASSWORD
from strm_provider.hooks.kafka import KafkaUnavailable, StrmKafkaHook
from strm_provider.operators import KafkaExportPlanOperator
from tests.exporting import connections, events_in, exporter_group, run_exporter, write_exporter
from tests.test_cli import SECRETS, Cli, base_env, home  # noqa: F401  (fixture)
from tests.test_secrets import database_text, home_files_text

WRONG_PASSWORD = "wrong-kafka-password-55c1"


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_cli_test_button_and_exporter_over_a_secured_listener(
    protocol: str,
    kafka: Any,
    s3_target: Any,
    home: dict[str, str],  # noqa: F811
) -> None:
    secured = kafka.connection(protocol)
    stream = f"secured-{protocol.lower()}-{uuid.uuid4().hex[:6]}"
    prefix = f"secured-{stream}"

    # the CLI, with the connection as Airflow holds it
    strm = Cli({**base_env(), **home, "AIRFLOW_CONN_SECURED_KAFKA": json.dumps(secured)})
    SECRETS.add(SASL_PASSWORD)  # every strm output is checked for it
    created = strm("create", "stream", stream, "--partitions", "3", "--kafka-connection", "secured_kafka")
    assert created.json() == {"ref": {"name": stream}, "partitions": 3}
    sent = strm(
        "simulate", "random-events", stream, "--count", "60", "--rate", "1000", "--kafka-connection", "secured_kafka"
    )
    assert f"sent 60 events to stream '{stream}'" in sent.err
    assert kafka.partitions(stream) == [0, 1, 2]

    with connections(secured_kafka=secured, dc=s3_target.connection(prefix)):
        # the Test button
        ok, message = StrmKafkaHook("secured_kafka").test_connection()
        assert ok, message
        assert message.startswith(f"Connected to {secured['host']}")
        # an exporter reading over the listener
        path = write_exporter(
            name=stream,
            stream=stream,
            data_connector="dc",
            path_prefix=prefix,
            kafka_connection="secured_kafka",
            include_existing_events=True,
        )
        assert run_exporter(path).state == "success"
    assert len(events_in(s3_target.objects(prefix))) == 60
    assert kafka.committed(exporter_group(stream), stream) == kafka.end_offsets(stream)
    assert not [text for text in (database_text(), home_files_text()) if SASL_PASSWORD in text]


def _refused(kafka: Any, conn: dict[str, Any], s3_target: Any, cause: str) -> None:
    """A run with ``conn`` fails naming ``cause``: nothing written, nothing committed, no password shown."""
    stream = kafka.create_topic(f"refused-{uuid.uuid4().hex[:8]}", 2)
    kafka.produce(stream, [{"seq": i} for i in range(20)])
    prefix = f"refused-{stream}"
    with connections(bad_kafka=conn, dc=s3_target.connection(prefix)):
        ok, message = StrmKafkaHook("bad_kafka").test_connection()
        assert not ok and cause in message, message
        with pytest.raises(KafkaUnavailable) as err:
            KafkaExportPlanOperator(
                task_id="plan", stream=stream, storage_conn_id="dc", group_id="g", kafka_conn_id="bad_kafka"
            ).execute({"run_id": "manual__refused"})
        assert str(err.value).startswith(f"Kafka connection 'bad_kafka': {cause} (")
        assert str(err.value).endswith(f") at {conn['host']}")
        path = write_exporter(
            name=stream,
            stream=stream,
            data_connector="dc",
            path_prefix=prefix,
            kafka_connection="bad_kafka",
            retries=0,  # each try waits out the bootstrap timeout; the cause is the same every time
        )
        assert run_exporter(path).state == "failed"
        path.unlink()
    assert s3_target.objects(prefix) == {}
    assert set(kafka.committed(exporter_group(stream), stream).values()) == {None}
    for text in (database_text(), home_files_text(), message, repr(err.value)):
        assert conn["password"] not in text and SASL_PASSWORD not in text


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_wrong_password_fails_the_run_naming_the_cause(protocol: str, kafka: Any, s3_target: Any) -> None:
    _refused(kafka, kafka.connection(protocol, password=WRONG_PASSWORD), s3_target, "authentication failed")


def test_an_untrusted_certificate_fails_the_run_naming_the_cause(kafka: Any, s3_target: Any, tmp_path: Path) -> None:
    conn = kafka.connection("SASL_SSL")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    conn["extra"]["ssl_cafile"] = str(other_ca)
    _refused(kafka, conn, s3_target, "certificate not trusted")
