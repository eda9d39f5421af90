"""The one place that names objects in the bucket, and reads names back.

A file's name is a pure function of what it holds (its first event's time, the stream, the start
offsets of its partitions, its compression), so a re-export after any failure overwrites the same
object instead of adding a duplicate. A path prefix may be a template of the events' time
(``events/dt={date}/hour={hour}``): a file's folder comes from its first event, and the writer never
lets a file span two folders.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

#: How a file's name writes its first event's time, per exporter ``name_style``. ``standard`` is the
#: ISO 8601 time with colons; ``compact`` has none, for readers built on Hadoop's ``Path`` (Spark, Hive,
#: EMR, Flink), which take the text before a name's first colon for a URI scheme.
TIME_FORMATS = {"standard": "%Y-%m-%dT%H:%M:%S", "compact": "%Y%m%dT%H%M%SZ"}
DEAD_LETTER_DIR = "_dead_letter"
#: File name ending per kind of file: JSON Lines per ``compression`` setting, or Parquet (whose
#: compression is inside the file).
EXTENSIONS = {"none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst", "parquet": ".parquet"}
#: Content type per ending. Deliberately no Content-Encoding: with one, GCS and browsers decompress on
#: download, and a ``.jsonl.gz`` file would arrive holding plain JSON Lines.
CONTENT_TYPES = {
    ".jsonl": "application/x-ndjson",
    ".jsonl.gz": "application/gzip",
    ".jsonl.zst": "application/zstd",
    ".parquet": "application/vnd.apache.parquet",
}
#: What a path prefix template may hold, and how each renders an event's UTC time.
PLACEHOLDERS = {"date": "%Y-%m-%d", "hour": "%H"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FILE_NAME = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|\d{8}T\d{6}Z)-(?P<stream>[A-Za-z0-9._-]+?)-"
    r"(?P<digest>[0-9a-f]{8})---(?P<parts>\d+(?:-\d+)*)(?P<ext>\.jsonl(?:\.gz|\.zst)?|\.parquet)$"
)
_TEST_NAME = re.compile(
    r"^\.strm_test_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:\.jsonl(?:\.gz|\.zst)?|\.parquet)$"
)


class ExportedFile(NamedTuple):
    """What an exported file's key says about it."""

    prefix: str  # the exporter's path prefix ("" for none)
    time: str  # UTC time of its first event, as in the name (either name style)
    stream: str
    digest: str  # of its start offsets
    partitions: tuple[int, ...]  # of its partition set
    dead_letter: bool  # under <prefix>/_dead_letter/
    extension: str  # ".jsonl", ".jsonl.gz", ".jsonl.zst" or ".parquet"


def ending(file_format: str, compression: str) -> str:
    """Which :data:`EXTENSIONS` key names an exporter's files: ``parquet`` (its compression is inside the
    file), or the JSON Lines compression."""
    return "parquet" if file_format == "parquet" else compression


def join_key(prefix: str, name: str) -> str:
    """``prefix/name``, or ``name`` when there is no prefix (a double slash would break the policy)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def offsets_digest(starts: Mapping[int, int]) -> str:
    """8 hex chars derived from the file's start offset per partition."""
    text = ",".join(f"{p}:{starts[p]}" for p in sorted(starts))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _utc(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(max(timestamp_ms, 0) / 1000, tz=UTC)


def file_name(
    stream: str,
    first_timestamp_ms: int,
    starts: Mapping[int, int],
    partitions: Sequence[int],
    compression: str = "none",
    name_style: str = "standard",
) -> str:
    """``<UTC time>-<stream>-<digest>---<p0-p1-...>.jsonl`` (``.jsonl.gz``, ``.jsonl.zst`` when compressed,
    ``.parquet`` for Parquet); the time as :data:`TIME_FORMATS` says for ``name_style``."""
    parts = "-".join(str(p) for p in sorted(partitions))
    when = _utc(first_timestamp_ms).strftime(TIME_FORMATS[name_style])
    return f"{when}-{stream}-{offsets_digest(starts)}---{parts}{EXTENSIONS[compression]}"


def with_stream(prefix: str, stream: str) -> str:
    """``prefix`` with ``{stream}`` filled: the topic a file's events come from (its other placeholders stay)."""
    return prefix.replace("{stream}", stream)


def check_template(prefix: str) -> str:
    """Refuse a path prefix whose braces are unbalanced or hold anything but :data:`PLACEHOLDERS` and ``{stream}``."""
    allowed = ", ".join(f"{{{name}}}" for name in [*PLACEHOLDERS, "stream"])
    for name in _PLACEHOLDER.findall(prefix):
        if name not in PLACEHOLDERS and name != "stream":
            raise ValueError(f"unknown placeholder {{{name}}}; allowed: {allowed}")
    if "{" in _PLACEHOLDER.sub("", prefix) or "}" in _PLACEHOLDER.sub("", prefix):
        raise ValueError(f"unbalanced braces; placeholders are written {allowed}")
    return prefix


def fixed_part(prefix: str) -> str:
    """The folders of ``prefix`` before its first placeholder: where validation files and dead letters go."""
    folders = prefix.split("/") if prefix else []
    return "/".join(itertools.takewhile(lambda folder: "{" not in folder, folders))


def period_ms(prefix: str) -> int | None:
    """How long one folder of a templated ``prefix`` lasts (an hour or a day, in ms); ``None`` untemplated.

    Events whose timestamps fall in one period render the same folder; the writer closes a file when
    the next event's period differs (a timestamp before 1970 counts as 1970, as in file names).
    """
    if "{hour}" in prefix:
        return 3_600_000
    if "{date}" in prefix:
        return 86_400_000
    return None


def render_prefix(prefix: str, timestamp_ms: int) -> str:
    """``prefix`` with its placeholders filled from an event's Kafka timestamp (UTC)."""
    if "{" not in prefix:
        return prefix
    when = _utc(timestamp_ms)
    return _PLACEHOLDER.sub(lambda m: when.strftime(PLACEHOLDERS[m.group(1)]), prefix)


def object_key(
    prefix: str,
    stream: str,
    first_timestamp_ms: int,
    starts: Mapping[int, int],
    partitions: Sequence[int],
    *,
    dead_letter: bool = False,
    compression: str = "none",
    name_style: str = "standard",
) -> str:
    """Full key of an exported file, in the folder its first event renders from ``prefix``; a dead
    letter goes under ``<fixed part of prefix>/_dead_letter/``, whatever its time."""
    folder = render_prefix(prefix, first_timestamp_ms)
    base = join_key(fixed_part(prefix), DEAD_LETTER_DIR) if dead_letter else folder
    return join_key(base, file_name(stream, first_timestamp_ms, starts, partitions, compression, name_style))


def content_type(key: str) -> str:
    """The content type an object gets from its name's ending."""
    for ending in sorted(CONTENT_TYPES, key=len, reverse=True):
        if key.endswith(ending):
            return CONTENT_TYPES[ending]
    return CONTENT_TYPES[".jsonl"]


def test_object_key(value: uuid.UUID, compression: str = "none") -> str:
    """Name of the validation file: ``.strm_test_<uuid4>.jsonl``, with the ending of the exporter's files
    (``.jsonl.gz``, ``.jsonl.zst``), so it is refused exactly where they would be."""
    return f".strm_test_{value}{EXTENSIONS[compression]}"


def validation_key(prefix: str, value: uuid.UUID, compression: str = "none", now: datetime | None = None) -> str:
    """Where the validation file of an exporter writing under ``prefix`` goes: the folder its files of
    this hour go to (placeholders filled from ``now``, UTC), with their ending."""
    when = now or datetime.now(UTC)
    return join_key(render_prefix(prefix, int(when.timestamp() * 1000)), test_object_key(value, compression))


def parse_key(key: str) -> ExportedFile | None:
    """What an exported data or dead-letter file's key says; ``None`` for any other object."""
    folder, _, name = key.rpartition("/")
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    dead_letter = folder == DEAD_LETTER_DIR or folder.endswith(f"/{DEAD_LETTER_DIR}")
    prefix = folder.removesuffix(DEAD_LETTER_DIR).rstrip("/") if dead_letter else folder
    parts = tuple(int(p) for p in match["parts"].split("-"))
    return ExportedFile(prefix, match["time"], match["stream"], match["digest"], parts, dead_letter, match["ext"])


def is_data_file(key: str) -> bool:
    """An exported file of events (not a dead letter, not a validation file, not someone else's object)."""
    parsed = parse_key(key)
    return parsed is not None and not parsed.dead_letter


def is_test_object(key: str) -> bool:
    """A validation file of :func:`test_object_key`, below any prefix."""
    return _TEST_NAME.match(key.rpartition("/")[2]) is not None
