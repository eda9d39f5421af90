"""What every fault test does: produce numbered events, plan, run (or kill) an export, and count.

Each event carries a unique ``seq``; the closing check counts the ``seq`` values in the bucket's
data files (JSON Lines, or Parquet's ``seq`` column): every produced one present, none twice, and the
group's offsets at the end offsets.
The check prints one ``FAULT-TABLE`` row (scenario, produced, found, duplicates, missing).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from typing import Any

from devstack import StorageTarget
from strm_provider.config import operator_arguments
from strm_provider.connection_types import KAFKA_DEFAULT
from strm_provider.naming import fixed_part
from tests.exporting import data_files, lines_in

_counter = itertools.count()
RUNNER = [sys.executable, "-m", "tests.faults.runner"]


def unique(name: str) -> str:
    return f"{name}{os.getpid()}x{next(_counter)}"


def seq_events(start: int, count: int, pad: int = 40, *, noise: bool = False) -> list[dict[str, Any]]:
    """Events numbered ``start..start+count-1``; ``pad`` bytes of filler make them a realistic size
    (random hex with ``noise``, so that they stay about that size compressed)."""
    return [
        {"seq": i, "url": f"https://example.com/{i}", "pad": os.urandom(pad // 2).hex() if noise else "x" * pad}
        for i in range(start, start + count)
    ]


def plan_sets(group: str, topic: str, *, sets: int = 1, kafka_conn_id: str = KAFKA_DEFAULT) -> list[dict]:
    """What the DAG's ``plan`` task puts in XCom for this exporter now (one dict per partition set)."""
    from strm_provider.hooks.kafka import StrmKafkaHook
    from strm_provider.offsets import plan_stream
    from strm_provider.planning import PlanRequest

    consumer = StrmKafkaHook(kafka_conn_id).consumer(group)
    try:
        decision = plan_stream(consumer, PlanRequest(topic, include_existing_events=True, partition_sets=sets))
    finally:
        consumer.close()
    return [s.to_xcom() for s in decision.sets]


def task_spec(topic: str, group: str, prefix: str = "", work: dict | None = None, **settings: Any) -> dict[str, Any]:
    """The export task's arguments: the exporter YAML's ``settings`` under the operator's names."""
    fields = {"stream": topic, "data_connector": "dc", "path_prefix": prefix, **settings}
    return {"operator": {"group_id": group, "partition_set": work, **operator_arguments(fields)}}


def run_task(spec: dict[str, Any], *, phase: str | None = None, timeout: float = 120, **extra: Any) -> dict | None:
    """Run the export task in a subprocess; with ``phase``, SIGKILL it there and return None.

    Without a phase, return the task's result; raise ``AssertionError`` with its output if it failed.
    """
    spec = {**spec, "phase": phase, **extra}
    errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - a pipe nobody drains would block the chatty task
    proc = subprocess.Popen(
        [*RUNNER, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=os.environ.copy(),
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    if phase is not None:
        assert proc.stdout is not None
        watchdog = threading.Timer(timeout, proc.kill)  # never wait forever for a phase
        watchdog.start()
        try:
            for line in proc.stdout:
                if line.strip() == f"PHASE {phase}":
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(30)
                    assert proc.returncode == -signal.SIGKILL
                    return None
        finally:
            watchdog.cancel()
        proc.wait(30)
        raise AssertionError(f"task ended (rc={proc.returncode}) before phase {phase}: {_tail(errors)}")
    out, _ = proc.communicate(timeout=timeout)
    err = _tail(errors)
    results = [line[7:] for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        raise AssertionError(f"export task failed (rc={proc.returncode}):\n{err}")
    return json.loads(results[-1])


def _tail(file: Any, size: int = 4000) -> str:
    file.seek(0)
    return file.read()[-size:]


def seqs_in(storage: StorageTarget, prefix: str) -> Counter:
    """How many times each ``seq`` appears in the data files under ``prefix`` (JSON Lines and Parquet;
    dead letters and validation files are no data files)."""
    objects = data_files(storage.objects(fixed_part(prefix)))
    parquet = {key: body for key, body in objects.items() if key.endswith(".parquet")}
    lines = lines_in({key: body for key, body in objects.items() if key not in parquet})
    seen = Counter(json.loads(line)["seq"] for file in lines.values() for line in file)
    for body in parquet.values():
        seen.update(parquet_seqs(body))
    return seen


def parquet_seqs(body: bytes) -> list[int]:
    """The ``seq`` column of a Parquet data file (pyarrow reads the whole file: it must be complete)."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(body), columns=["seq"]).column("seq").to_pylist()


def check_exactly_once(
    scenario: str,
    kafka: Any,
    storage: StorageTarget,
    prefix: str,
    topic: str,
    group: str,
    produced: int,
    expected: set[int] | None = None,
) -> dict[str, int]:
    """Assert the closing condition of every fault test and print its table row.

    ``expected`` is the set of ``seq`` that must be found (default: all ``produced``).
    """
    seen = seqs_in(storage, prefix)
    want = set(range(produced)) if expected is None else expected
    row = {
        "produced": produced,
        "found": sum(seen.values()),
        "unique": len(seen),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "missing": len(want - set(seen)),
        "unexpected": len(set(seen) - want),
    }
    print(
        f"FAULT-TABLE | {scenario} | {row['produced']} | {row['found']} | {row['duplicates']} | {row['missing']} |",
        flush=True,
    )
    assert row["duplicates"] == 0 and row["missing"] == 0 and row["unexpected"] == 0, (scenario, row)
    assert kafka.committed(group, topic) == kafka.end_offsets(topic), scenario
    return row
