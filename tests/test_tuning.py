"""What an export leaves of its process settings: the process as it found it, also when exports overlap."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading

from strm_provider.tuning import tuned_for_export
from tests.conftest import REPO

# Whether glibc serves a 512 KiB allocation with its own mapping (mallinfo2's count of mapped chunks).
_MAPPED = """
import ctypes
from strm_provider.tuning import tuned_for_export

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]

def mapped():
    before = libc.mallinfo2().hblks
    chunk = libc.malloc(512 * 1024)
    after = libc.mallinfo2().hblks
    libc.free(chunk)
    return after > before

seen = [mapped()]
with tuned_for_export():
    seen.append(mapped())
seen.append(mapped())
print(seen)
"""


def test_the_mmap_threshold_the_environment_set_comes_back_after_an_export() -> None:
    """A deployment that sets glibc's threshold to 1 MiB gets it back when the export, which serves
    every buffer over 128 KiB with its own mapping, ends."""
    for env in ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}):
        done = subprocess.run(
            [sys.executable, "-c", _MAPPED],
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.split() == ["[False,", "True,", "False]"], (env, done.stdout, done.stderr)


def test_the_collector_runs_as_before_once_the_last_of_overlapping_exports_ends() -> None:
    thresholds = gc.get_threshold()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def first() -> None:
        with tuned_for_export():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with tuned_for_export():
        second_in.set()
        first_out.wait(10)
        seen["after the first ended"] = gc.get_threshold()
    thread.join(10)
    assert seen["after the first ended"] != thresholds, "the second export still runs with its own settings"
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0
