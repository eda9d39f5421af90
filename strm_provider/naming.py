"""The one place that names objects in the bucket.

A file's name is a pure function of what it holds (its first event's time, the stream, the start
offsets of its partitions), so a re-export after any failure overwrites the same object instead of
adding a duplicate.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
DEAD_LETTER_DIR = "_dead_letter"


def join_key(prefix: str, name: str) -> str:
    """``prefix/name``, or ``name`` when there is no prefix (a double slash would break the policy)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def offsets_digest(starts: Mapping[int, int]) -> str:
    """8 hex chars derived from the file's start offset per partition."""
    text = ",".join(f"{p}:{starts[p]}" for p in sorted(starts))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def file_name(stream: str, first_timestamp_ms: int, starts: Mapping[int, int], partitions: Sequence[int]) -> str:
    """``<UTC time>-<stream>-<digest>---<p0-p1-...>.jsonl``."""
    when = datetime.fromtimestamp(max(first_timestamp_ms, 0) / 1000, tz=UTC).strftime(TIME_FORMAT)
    parts = "-".join(str(p) for p in sorted(partitions))
    return f"{when}-{stream}-{offsets_digest(starts)}---{parts}.jsonl"


def object_key(
    prefix: str,
    stream: str,
    first_timestamp_ms: int,
    starts: Mapping[int, int],
    partitions: Sequence[int],
    *,
    dead_letter: bool = False,
) -> str:
    """Full key of an exported file (or of its dead-letter twin under ``<prefix>/_dead_letter/``)."""
    base = join_key(prefix, DEAD_LETTER_DIR) if dead_letter else prefix
    return join_key(base, file_name(stream, first_timestamp_ms, starts, partitions))


def test_object_key(value: uuid.UUID) -> str:
    """Name of the empty validation file: ``.strm_test_<uuid4>.jsonl``."""
    return f".strm_test_{value}.jsonl"
