"""Bad input in the stream: what is not a JSON object becomes a dead letter, or fails the run.

Dead letters go to ``<path_prefix>/_dead_letter/`` as JSON lines holding the raw record (base64)
and the reason, named and committed by the same exactly-once rules as the data files.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kafka import KafkaProducer

from strm_provider.export import ExportError
from strm_provider.naming import parse_key
from strm_provider.operators import KafkaToStorageOperator
from tests.exporting import connections, data_files, exporter_group, run_exporter, write_exporter, xcom_values
from tests.faults.scenario import plan_sets, task_spec, unique

#: Exactly-once must hold whichever client reads (the connection's ``reader`` extra).
pytestmark = pytest.mark.usefixtures("each_reader")

MiB = 1024 * 1024
#: a one-line event is kept byte for byte: spacing, 1.50 and an integer beyond 64 bits survive
ONE_LINE = b'{"seq": 0, "price": 1.50, "id": 123456789012345678901234567890}'
BIG = {"seq": 6, "blob": "x" * (5 * MiB)}
#: (value, what the bucket must show): an event line (its seq) or a dead letter (a word of its error)
RECORDS: list[tuple[bytes | None, Any]] = [
    (ONE_LINE, 0),
    (b"{not json", "not valid UTF-8 JSON"),
    (b'{"seq": 2, "name": "\xff\xfe"}', "not valid UTF-8 JSON"),
    (b"[1, 2, 3]", "JSON value is a list"),
    (None, "tombstone"),
    (b'{\n  "seq": 5,\n  "nested": {\n    "a": [1,\n 2]\n  }\n}\n', 5),
    (json.dumps(BIG).encode(), 6),
    (b'"just a string"', "JSON value is a str"),
    (b'{"seq": 8}', 8),
]


def produce_raw(kafka: Any, topic: str, values: list[bytes | None]) -> None:
    """Send raw values to partition 0, with a producer allowed 8 MiB requests (for the 5 MB message)."""
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, max_request_size=8 * MiB)
    try:
        for i, value in enumerate(values):
            producer.send(topic, value=value, key=f"k{i}".encode(), partition=0)
        producer.flush()
    finally:
        producer.close()


def make_topic(kafka: Any, label: str) -> str:
    return kafka.create_topic(unique(label), 1, configs={"max.message.bytes": str(8 * MiB)})


def test_bad_input_becomes_dead_letters(kafka: Any, s3_target: Any) -> None:
    topic, prefix = make_topic(kafka, "bad"), unique("bad")
    group = exporter_group(topic)
    produce_raw(kafka, topic, [value for value, _ in RECORDS])
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=topic, stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True
        )
        run = run_exporter(path)
        assert run.state == "success"
        (result,) = xcom_values(run, "export")
        first = s3_target.objects(prefix)

        assert run_exporter(path).state == "success"  # nothing new: nothing rewritten, nothing added
        assert s3_target.objects(prefix) == first

    files = data_files(first)
    lines = [line for body in files.values() for line in body.split(b"\n") if line]
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == [want for _, want in RECORDS if isinstance(want, int)]
    assert lines[0] == ONE_LINE, "a one-line event is written as produced"
    assert lines[1] == b'{"seq":5,"nested":{"a":[1,2]}}', "pretty-printed JSON becomes one compact line"
    assert events[2] == BIG and len(lines[2]) > 5 * MiB
    assert all(body.endswith(b"\n") and body.count(b"\n") == len(body.splitlines()) for body in files.values())

    dead = {k: v for k, v in first.items() if k.startswith(f"{prefix}/_dead_letter/")}
    assert len(dead) == 1 and (name := parse_key(next(iter(dead)))) and name.dead_letter, dead
    letters = [json.loads(line) for line in next(iter(dead.values())).splitlines()]
    expected = [(offset, value, want) for offset, (value, want) in enumerate(RECORDS) if isinstance(want, str)]
    assert len(letters) == len(expected) == result["dead_letters"] == 5
    for letter, (offset, value, reason) in zip(letters, expected, strict=True):
        assert set(letter) == {"partition", "offset", "timestamp", "key_b64", "value_b64", "error"}
        assert (letter["partition"], letter["offset"]) == (0, offset)
        assert letter["value_b64"] == (None if value is None else base64.b64encode(value).decode())
        assert base64.b64decode(letter["key_b64"]) == f"k{offset}".encode()
        assert reason in letter["error"] and isinstance(letter["timestamp"], int)
    assert result["events"] == 4 and result["committed"]
    assert kafka.committed(group, topic) == kafka.end_offsets(topic)
    print(
        f"FAULT-TABLE | bad input, dead_letter | {len(RECORDS)} | {len(events)} + {len(letters)} dead letters | 0 | 0 |"
    )


def test_bad_input_fails_the_run(kafka: Any, s3_target: Any) -> None:
    topic, prefix = make_topic(kafka, "strict"), unique("strict")
    group = exporter_group(topic)
    produce_raw(kafka, topic, [b'{"seq": 0}', b'{"seq": 1}', b"{broken", b'{"seq": 3}'])
    with connections(strm_kafka_default=kafka.connection(), dc=s3_target.connection(prefix)):
        path = write_exporter(
            name=topic,
            stream=topic,
            data_connector="dc",
            path_prefix=prefix,
            include_existing_events=True,
            on_invalid_event="fail",
        )
        assert run_exporter(path).state == "failed"
        (work,) = plan_sets(group, topic)
        spec = task_spec(topic, group, prefix, work, on_invalid_event="fail")
        with pytest.raises(ExportError, match=r"^partition 0 offset 2: not valid UTF-8 JSON") as err:
            KafkaToStorageOperator(task_id="export", **spec["operator"]).execute({"run_id": "manual__strict"})
        assert "nothing was committed" in str(err.value)
    assert kafka.committed(group, topic) == {0: 0}, "nothing past the bad event (nor before it) is committed"
    assert data_files(s3_target.objects(prefix)) == {}, "the abandoned file never appears"
