"""Turning a Kafka record into a JSON Lines line, or into a dead letter saying why it could not be."""

from __future__ import annotations

import base64
from typing import Any

import orjson


class InvalidEvent(ValueError):
    """A record whose value is not a JSON object."""


def to_line(value: bytes | None) -> bytes:
    """One compact UTF-8 JSON line (newline included) for a record value.

    Re-serialising with orjson makes pretty-printed JSON one line and rejects what is not UTF-8,
    not JSON or not an object, so every line in a file is a JSON object.
    """
    if value is None:
        raise InvalidEvent("null value (tombstone)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidEvent(f"not valid UTF-8 JSON: {err}") from None
    if type(obj) is not dict:
        raise InvalidEvent(f"JSON value is a {type(obj).__name__}, expected an object")
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def dead_letter_line(record: Any, error: str) -> bytes:
    """The dead-letter line: the raw record, base64-encoded, and why it was refused."""
    return orjson.dumps(
        {
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key_b64": None if record.key is None else base64.b64encode(record.key).decode(),
            "value_b64": None if record.value is None else base64.b64encode(record.value).decode(),
            "error": error,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )
