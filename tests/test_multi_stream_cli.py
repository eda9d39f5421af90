"""``strm`` and an exporter of several streams: create it from a pattern or a list, see it listed, its lag per
stream in ``strm monitor``, and move one of its streams with ``strm reset --stream``."""

from __future__ import annotations

import json
import re
from typing import Any

from strm_provider import progress
from strm_provider.planning import Progress, StreamsProgress
from tests.test_cli import Cli, home, strm, unique  # noqa: F401  (home, strm: fixtures)
from tests.test_reset import commit, gcs, group, record, write_variable  # noqa: F401  (gcs: a fixture)


def test_create_list_monitor_and_reset_an_exporter_of_several_streams(gcs: Cli, kafka: Any) -> None:  # noqa: F811
    base = unique("many")
    a, b = kafka.create_topic(f"{base}.a", 2), kafka.create_topic(f"{base}.b", 1)
    kafka.create_topic(f"{base}-x", 1)  # does not match
    name = unique("pattern")
    created = gcs(
        "create", "batch-exporter", "--stream-pattern", f"{re.escape(base)}\\..*", "--name", name,
        "--data-connector", "gcs", "--path-prefix", "events/{stream}", "--no-validate", "-o", "json",
    ).json()  # fmt: skip
    assert created["streamRef"] == {"pattern": f"{re.escape(base)}\\..*"}
    kept = record(gcs.env, name)
    assert kept is not None and kept["streams"] == {} and kept["created_ms"] > 0, kept

    listed = unique("listed")
    out = gcs("create", "batch-exporter", a, b, "--name", listed, "--data-connector", "gcs", "--no-validate").json()
    assert out["streamRef"] == {"names": [a, b]}
    table = gcs("list", "batch-exporters").out
    assert re.search(rf"{name}\s+/{re.escape(re.escape(base))}\\\.\.\*/", table), table
    assert re.search(rf"{listed}\s+{a},{b}\s", table), table

    assert "name a STREAM (or several), or give --stream-pattern" in gcs.bad(
        "create", "batch-exporter", "--name", "none", "--data-connector", "gcs", "--no-validate"
    )
    assert "an exporter of stream_pattern needs a name" in gcs.bad(
        "create", "batch-exporter", "--stream-pattern", "x.*", "--data-connector", "gcs", "--no-validate"
    )
    assert "does not exist" in gcs.bad(
        "create", "batch-exporter", a, "missing-stream", "--name", "m", "--data-connector", "gcs", "--no-validate"
    )

    kafka.produce(a, [{"n": i} for i in range(6)])
    kafka.produce(b, [{"n": i} for i in range(3)])
    row = gcs("monitor", "batch-exporter", name, "-o", "json").json()
    assert row["lag"]["streams"] == {a: 6, b: 3} and row["lag"]["total"] == 9
    assert row["lag"]["partitions"] == {f"{a}:0": 3, f"{a}:1": 3, f"{b}:0": 3}
    shown = gcs("monitor", "batch-exporter", name).out
    assert f"{a}=6 {b}=3" in shown, shown

    # its runs planned both streams; `strm reset` moves one, the other's record and offsets stay as they are
    assert "name one with --stream" in gcs.bad("reset", "batch-exporter", name, "--to-latest")
    runs = StreamsProgress(kept["created_ms"], {a: Progress(a, {0: 3, 1: 3}), b: Progress(b, {0: 1})})
    write_variable(gcs.env, name, progress.dumps(runs))
    commit(kafka, name, a, {0: 3, 1: 3}, "strm:manual")
    commit(kafka, name, b, {0: 1}, "strm:manual")
    out = gcs("reset", "batch-exporter", name, "--stream", a, "--to-offsets", "0:1", "--execute").out
    assert f"(stream {a}, Kafka group {group(name)})" in out, out
    after = record(gcs.env, name)
    assert after is not None and after["streams"][a]["committed"] == {"0": 1, "1": 3}
    assert after["streams"][b] == json.loads(progress.dumps(runs))["streams"][b]
    assert kafka.committed(group(name), a) == {0: 1, 1: 3} and kafka.committed(group(name), b) == {0: 1}
