"""Two settings of the whole process that the export holds while it runs, and gives back when it ends.

Both bound what the export costs in memory and time when a backlog is large (the README's benchmark
section gives the figures): glibc's mmap threshold, and how often Python's collector runs. Exports
running at the same time in one process (threads) share them: the first to start applies them, the
last to end restores what was there before.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

#: ``M_MMAP_THRESHOLD`` in glibc's malloc.h, and the threshold glibc starts from (its default).
_M_MMAP_THRESHOLD = -3
_GLIBC_MMAP_THRESHOLD = 128 * 1024
#: Allocations between two passes of the collector's youngest generation while the export runs.
_COLLECT_EVERY = 100_000

_lock = threading.Lock()
_running = 0
_restore = ExitStack()


@contextmanager
def tuned_for_export() -> Iterator[None]:
    """While inside, :func:`_large_buffers_returned_to_the_os` and :func:`_collected_between_batches`
    hold for the process; they end with the last export inside."""
    global _running, _restore
    with _lock:
        if _running == 0:
            with ExitStack() as settings:
                settings.enter_context(_large_buffers_returned_to_the_os())
                settings.enter_context(_collected_between_batches())
                _restore = settings.pop_all()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                _restore.close()


@contextmanager
def _large_buffers_returned_to_the_os() -> Iterator[None]:
    """Serve every allocation of 128 KiB or more with its own mapping, returned to the OS when freed.

    glibc raises its mmap threshold each time such a buffer is freed (up to 32 MiB); after that the
    export's fetch buffers, batches and upload parts (MiBs each, made and freed by several threads)
    come from per-thread heaps that fragment and are not trimmed, and the task's peak memory follows
    the backlog. A fixed threshold stops the raising. On leaving, the threshold the process started
    with comes back (its environment's ``glibc.malloc.mmap_threshold`` or ``MALLOC_MMAP_THRESHOLD_``,
    else glibc's 128 KiB); glibc has no call to read the threshold or to resume raising it once set.
    Other C libraries have no ``mallopt``, and nothing to fix.
    """
    mallopt = _mallopt()
    if mallopt is None:
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD)
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, _starting_threshold())


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def _starting_threshold() -> int:
    """The mmap threshold the environment gave the process, else glibc's default."""
    tunables = dict(item.partition("=")[::2] for item in os.environ.get("GLIBC_TUNABLES", "").split(":"))
    configured = tunables.get("glibc.malloc.mmap_threshold") or os.environ.get("MALLOC_MMAP_THRESHOLD_")
    try:
        return int(configured, 0) if configured else _GLIBC_MMAP_THRESHOLD
    except ValueError:
        return _GLIBC_MMAP_THRESHOLD


@contextmanager
def _collected_between_batches() -> Iterator[None]:
    """Collect garbage every 100,000 allocations, not every 700, and never rescan what existed before.

    Reading allocates an object or more per record (kafka-python: a record, a tuple and a list;
    librdkafka: a message), and a batch keeps thousands alive while it is written: with Python's
    thresholds the collector rescans the live batch again and again, a large share of the reading
    time. A pass every 100,000 allocations still finds the few cycles the clients make within a few
    batches. The objects that exist before (an Airflow task holds about 200,000 from its imports)
    are frozen, so no pass scans them. On leaving, the thresholds come back and the objects are
    unfrozen, unless some were frozen already (the children of an executor that freezes before it
    forks start so): those stay frozen, with the export's.
    """
    thresholds = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    gc.set_threshold(_COLLECT_EVERY, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if not frozen_before:
            gc.unfreeze()
