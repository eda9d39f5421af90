"""File names as the README promises them, built and read back by the one module that names objects."""

from __future__ import annotations

import uuid

from strm_provider.naming import (
    ExportedFile,
    content_type,
    fixed_part,
    is_data_file,
    is_test_object,
    object_key,
    parse_key,
    period_ms,
    render_prefix,
)
from strm_provider.naming import test_object_key as validation_key


def test_a_name_is_the_first_events_time_the_stream_a_digest_of_the_start_offsets_and_the_partitions() -> None:
    key = object_key("events/raw", "clicks", 1_616_752_590_000, {0: 10, 1: 7, 2: 0}, [2, 0, 1])
    assert key == "events/raw/2021-03-26T09:56:30-clicks-28a91950---0-1-2.jsonl"
    assert parse_key(key) == ExportedFile(
        "events/raw", "2021-03-26T09:56:30", "clicks", "28a91950", (0, 1, 2), False, ".jsonl"
    )
    # the digest is sha256("0:10,1:7,2:0")[:8]: other start offsets, another name
    assert object_key("events/raw", "clicks", 1_616_752_590_000, {0: 10, 1: 7, 2: 1}, [0, 1, 2]) != key


def test_dead_letters_validation_files_and_foreign_objects_are_told_apart() -> None:
    dead = object_key("", "clicks", 0, {3: 5}, [3], dead_letter=True)
    assert dead == "_dead_letter/1970-01-01T00:00:00-clicks-" + dead.split("-clicks-")[1]
    assert parse_key(dead) is not None and parse_key(dead).dead_letter and parse_key(dead).prefix == ""
    assert not is_data_file(dead)
    probe = f"events/{validation_key(uuid.uuid4())}"
    assert is_test_object(probe) and not is_data_file(probe) and parse_key(probe) is None
    for foreign in ("events/notes.txt", "events/2021-03-26T09:56:30-clicks.jsonl", "events/.strm_test_x.jsonl"):
        assert parse_key(foreign) is None and not is_test_object(foreign)


def test_compressed_names_end_with_their_codec_and_read_back() -> None:
    for compression, ending, content in (
        ("gzip", ".jsonl.gz", "application/gzip"),
        ("zstd", ".jsonl.zst", "application/zstd"),
    ):
        key = object_key("events", "clicks", 0, {0: 1}, [0], compression=compression)
        assert key.endswith(f"---0{ending}") and content_type(key) == content
        parsed = parse_key(key)
        assert parsed is not None and parsed.extension == ending and is_data_file(key)
    assert content_type("events/x.jsonl") == "application/x-ndjson"


def test_a_templated_prefix_renders_each_events_utc_hour_and_keeps_dead_letters_in_its_fixed_part() -> None:
    template = "events/dt={date}/hour={hour}"
    at = 1_616_752_590_000  # 2021-03-26T09:56:30Z
    key = object_key(template, "clicks", at, {0: 1}, [0])
    assert key.startswith("events/dt=2021-03-26/hour=09/2021-03-26T09:56:30-clicks-")
    assert parse_key(key).prefix == "events/dt=2021-03-26/hour=09"
    dead = object_key(template, "clicks", at, {0: 1}, [0], dead_letter=True)
    assert dead.startswith("events/_dead_letter/2021-03-26T09:56:30-") and parse_key(dead).prefix == "events"
    assert fixed_part(template) == "events" and fixed_part("{date}/x") == "" and fixed_part("a/b") == "a/b"
    assert fixed_part("a/b{date}/c") == "a"
    assert period_ms(template) == 3_600_000 and period_ms("a/{date}") == 86_400_000 and period_ms("a") is None
    assert render_prefix("a/{date}", -1) == "a/1970-01-01"  # no timestamp: the epoch, as in file names
