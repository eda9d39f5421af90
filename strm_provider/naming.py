"""The one place that names objects in the bucket, and reads names back.

A file's name is a pure function of what it holds (its first event's time, the stream, the start
offsets of its partitions), so a re-export after any failure overwrites the same object instead of
adding a duplicate.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
DEAD_LETTER_DIR = "_dead_letter"
_FILE_NAME = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)-(?P<stream>[A-Za-z0-9._-]+?)-"
    r"(?P<digest>[0-9a-f]{8})---(?P<parts>\d+(?:-\d+)*)\.jsonl$"
)
_TEST_NAME = re.compile(r"^\.strm_test_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.jsonl$")


class ExportedFile(NamedTuple):
    """What an exported file's key says about it."""

    prefix: str  # the exporter's path prefix ("" for none)
    time: str  # UTC time of its first event, as in the name
    stream: str
    digest: str  # of its start offsets
    partitions: tuple[int, ...]  # of its partition set
    dead_letter: bool  # under <prefix>/_dead_letter/


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


def parse_key(key: str) -> ExportedFile | None:
    """What an exported data or dead-letter file's key says; ``None`` for any other object."""
    folder, _, name = key.rpartition("/")
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    dead_letter = folder == DEAD_LETTER_DIR or folder.endswith(f"/{DEAD_LETTER_DIR}")
    prefix = folder.removesuffix(DEAD_LETTER_DIR).rstrip("/") if dead_letter else folder
    parts = tuple(int(p) for p in match["parts"].split("-"))
    return ExportedFile(prefix, match["time"], match["stream"], match["digest"], parts, dead_letter)


def is_data_file(key: str) -> bool:
    """An exported file of events (not a dead letter, not a validation file, not someone else's object)."""
    parsed = parse_key(key)
    return parsed is not None and not parsed.dead_letter


def is_test_object(key: str) -> bool:
    """The empty validation file of :func:`test_object_key`, below any prefix."""
    return _TEST_NAME.match(key.rpartition("/")[2]) is not None
