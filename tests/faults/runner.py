"""Run one export task (``KafkaToStorageOperator.execute``) in a process the test can SIGKILL at a phase.

``python -m tests.faults.runner '<json spec>'``; the spec holds the operator's arguments (the
partition set exactly as the plan task put it in XCom), an optional ``phase`` at which the process
prints ``PHASE <name>`` and then blocks until killed, and an optional S3 ``part_size``.

Phases:
- ``reading``: after the second batch read from Kafka (files are open, nothing committed);
- ``mid-upload``: an upload has sent ``pause_after_bytes`` of a file and the multipart upload is open;
- ``before-commit``: every file is uploaded, offsets are not committed (the operator's seam);
- ``after-commit``: right after the offsets were committed, before the task reports success.

Connections come from the ``AIRFLOW_CONN_*`` variables inherited from the test. On success the
last line printed is ``RESULT <json>`` (the task's XCom value).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

PHASES = ("reading", "mid-upload", "before-commit", "after-commit")


def reached(phase: str) -> None:
    """Announce the phase and block: the test SIGKILLs this process now."""
    # one write, starting on a fresh line: print() writes the text and its newline separately, and a
    # log line from another thread (an upload finishing) could land between them
    sys.stdout.write(f"\nPHASE {phase}\n")
    sys.stdout.flush()
    while True:
        time.sleep(60)


class _PausingConsumer:
    """The group's kafka-python consumer, pausing the process right before or after the commit."""

    def __init__(self, consumer: Any, phase: str | None) -> None:
        self._consumer = consumer
        self._phase = phase

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if self._phase == "before-commit":
            reached("before-commit")
        out = self._consumer.commit(*args, **kwargs)
        if self._phase == "after-commit":
            reached("after-commit")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class _PausingReader:
    """The upload thread's input: pauses the process once ``limit`` bytes of a file went to the SDK."""

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        if self._read >= self._limit:
            time.sleep(2)  # let the parts already read finish uploading: the multipart upload is open
            reached("mid-upload")
        data = self._raw.read(size)
        self._read += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def main(spec: dict[str, Any]) -> None:
    from boto3.s3.transfer import TransferConfig

    import strm_provider.hooks.s3 as s3
    import strm_provider.hooks.s3_client as s3_client
    import strm_provider.operators as operators
    from tests.faults.seams import on_batches

    phase = spec.get("phase")
    if spec.get("part_size"):
        size = int(spec["part_size"])
        s3_client.TRANSFER = TransferConfig(multipart_threshold=size, multipart_chunksize=size, max_concurrency=2)

    real_consumer = operators.StrmKafkaHook.consumer
    operators.StrmKafkaHook.consumer = lambda self, *a, **kw: _PausingConsumer(real_consumer(self, *a, **kw), phase)
    if phase == "reading":
        on_batches(lambda n: reached("reading") if n == 2 else None)

    if phase == "mid-upload":
        limit = int(spec.get("pause_after_bytes", 6 * 1024 * 1024))
        real_upload = s3.StrmS3Hook._upload_stream
        uploads = iter(range(1_000_000))
        pause_file = int(spec.get("pause_file", 0))

        def upload(self: Any, key: str, reader: Any) -> None:
            if next(uploads) == pause_file:
                reader = _PausingReader(reader, limit)
            real_upload(self, key, reader)

        s3.StrmS3Hook._upload_stream = upload

    op = operators.KafkaToStorageOperator(task_id="export", **spec["operator"])
    result = op.execute({"run_id": spec.get("run_id", "manual__fault")})  # type: ignore[arg-type]
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    threading.current_thread().name = "export"
    main(json.loads(sys.argv[1]))
