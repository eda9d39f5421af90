"""Fault 9: a soak. A producer writes at a steady rate while 20 consecutive runs export; exact totals."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from tests.exporting import connections, exporter_group, run_exporter, write_exporter
from tests.faults.scenario import check_exactly_once, unique

RUNS = 20
RATE = 500  # events per second


@pytest.mark.slow
def test_soak_20_runs_while_producing(kafka: Any, s3_target: Any) -> None:
    name, prefix = unique("soak"), unique("soak")
    group = exporter_group(name)
    topic = kafka.create_topic(name, 3)
    stop, produced, errors = threading.Event(), [0], []

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
        try:
            tick = time.monotonic()
            while not stop.is_set():
                batch = RATE // 10
                for seq in range(produced[0], produced[0] + batch):
                    producer.send(topic, orjson.dumps({"seq": seq, "at": time.time()}), partition=seq % 3)
                producer.flush()
                produced[0] += batch
                tick += 0.1
                time.sleep(max(tick - time.monotonic(), 0))
        except Exception as err:
            errors.append(err)
        finally:
            producer.close()

    thread = threading.Thread(target=produce, daemon=True)
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=name, stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True
        )
        thread.start()
        states = [run_exporter(path).state for _ in range(RUNS)]
        stop.set()
        thread.join(30)
        assert not errors, errors
        assert states == ["success"] * RUNS
        assert run_exporter(path).state == "success"  # the last one catches up with the stopped producer
    check_exactly_once(
        f"soak: {RATE}/s producer during {RUNS} runs", kafka, s3_target, prefix, topic, group, produced[0]
    )
