"""Measuring a method: its process tree's wall time, CPU and peak memory, the servers going idle, and
what it left in the bucket."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by ``pids`` and their children (the broker and the S3 server)."""
    import psutil

    total = 0.0
    for pid in pids:
        for member in _tree(pid):
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(member).cpu_times()
                total += times.user + times.system
    return total


def settle(pids: list[int], idle: float = 0.1, limit: float = 120.0) -> float:
    """Wait until the servers (``pids`` and their children) use under ``idle`` of a core over a second.

    A broker still busy after a big produce would share the machine's two cores with the method being
    measured. Returns the seconds waited.
    """

    started = time.monotonic()
    before = tree_cpu(pids)
    while time.monotonic() - started < limit:
        time.sleep(1.0)
        now = tree_cpu(pids)
        if now - before < idle:
            break
        before = now
    return time.monotonic() - started


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in kB; VmHWM is its own high-water mark since its last exec."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def run_measured(cmd: list[str], env: dict[str, str], log: Path, name: str) -> tuple[float, float, float, int]:
    """Run ``cmd``; return (wall s, peak RSS MB of its process tree, CPU s of the tree, exit code).

    Peak RSS is polled from /proc (each process's own VmHWM, and the sum of the tree's VmRSS every
    20 ms): ``ru_maxrss`` is useless here because a child inherits its parent's high-water mark at
    fork and keeps it across exec.
    """
    peak_kb = 0
    if os.environ.get("BENCH_PROFILE") == "1" and Path(cmd[0]).name == "airflow":  # the CLI's main thread
        cmd = [sys.executable, "-m", "cProfile", "-o", str(Path.cwd() / f"{name}.prof"), *cmd]
    if os.environ.get("BENCH_PROFILE") == "py-spy":  # BENCH_IDLE=1: waiting threads too
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--threads", "--subprocesses", "--rate", "200"]
        spy += ["--idle"] if os.environ.get("BENCH_IDLE") else []
        cmd = [*spy, "--format", "raw", "--output", str(Path.cwd() / f"{name}.pyspy.txt"), "--", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        hwm: dict[int, int] = {}
        while proc.poll() is None:
            total = 0
            for pid in _tree(proc.pid):
                rss, high = _memory_kb(pid)
                total += rss
                hwm[pid] = max(hwm.get(pid, 0), high)
            peak_kb = max(peak_kb, total, *hwm.values(), 0)
            time.sleep(0.02)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, peak_kb / 1024, cpu, proc.returncode


def bucket_bytes(s3: Any, prefix: str) -> tuple[int, int, int]:
    """(objects, bytes of JSON, bytes stored) of JSON Lines files below ``prefix``, whoever named them (the
    naive DAG and the upload-only method name their own), without validation files and dead letters.
    Compressed files are downloaded and opened as a downstream reader would, to count their JSON."""
    from devstack import opened
    from strm_provider.naming import DEAD_LETTER_DIR, is_test_object

    client = s3.client()
    objects = size = stored = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            if is_test_object(key) or f"/{DEAD_LETTER_DIR}/" in key:
                continue
            if key.endswith(".jsonl"):
                size += item["Size"]
            elif key.endswith((".jsonl.gz", ".jsonl.zst")):
                size += len(opened(key, client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()))
            else:
                continue
            objects += 1
            stored += item["Size"]
    return objects, size, stored


def result_row(
    events_read: int, value_bytes: int, seconds: float, rss_mb: float, cpu: float, **more: Any
) -> dict[str, Any]:
    """One method's figures; ``cpu_s`` is the CPU time of its process tree (steadier than wall time)."""
    return {
        "events": events_read,
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu, 2),
        "events_per_s": round(events_read / seconds, 1),
        "mb_per_s": round(value_bytes / seconds / 1e6, 2),
        "peak_rss_mb": round(rss_mb, 1),
        **more,
    }
