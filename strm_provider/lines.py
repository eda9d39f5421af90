"""Records into JSON Lines: each event's line (its value, or its envelope) and each refused record's dead letter.

The one place that decides what a file holds for a record; the writer (:mod:`strm_provider.writer`)
takes the :class:`Lines` made here and only cuts them into files.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import add
from typing import Any

import orjson

from strm_provider.readers import Batch, RecordMeta

#: the most decoded events held at once, as Python objects: a batch's runs are made this many at a time
#: (the files' cut points do not depend on it)
DECODED_RUN = 2048


class InvalidEvent(ValueError):
    """A record whose value is not a JSON object."""


@dataclass(frozen=True)
class Lines:
    """JSON Lines for consecutive records of one batch: line ``i`` is record ``first + i`` and ends at
    byte ``ends[i]`` of ``block`` (newline included)."""

    block: bytes
    ends: list[int]
    batch: Batch
    first: int
    #: for Parquet files: the lines' rows (a ``pyarrow.RecordBatch``), and what their columns follow (the
    #: schema a framed record named; equal keys, equal columns). ``block`` is then empty, and ``ends``
    #: counts the records' value bytes.
    rows: Any = None
    schema: Hashable = None

    @property
    def partition(self) -> int:
        return self.batch.partition

    def record(self, index: int) -> RecordMeta:
        """Offset, timestamp, key and headers of line ``index``'s record."""
        return self.batch.meta(self.first + index)

    def timestamps(self) -> list[int]:
        """Each line's record timestamp (milliseconds since the epoch), in order."""
        return self.batch.timestamps(self.first, self.first + len(self.ends))


@dataclass(frozen=True)
class Refused:
    """A record that is not an event: where it was, why, and its dead letter."""

    offset: int
    error: str
    dead_letter: Lines


class Events:
    """How an exporter that does more than keep JSON values as produced turns records into events.

    ``decode`` gives a value's ``(schema, event)`` (:mod:`strm_provider.decoders`; ``None``: the value is
    a JSON object, its schema the exporter's). ``rows`` gives, for Parquet files, the rows of a run of
    events of one schema (:mod:`strm_provider.parquet`), raising :class:`ValueError` for what does not
    fit; ``dead_letter_rows`` the rows of dead letters. Without ``rows`` the events become JSON Lines
    (``event_line``).
    """

    def __init__(
        self,
        decode: Callable[[bytes | None], tuple[Hashable, dict[str, Any]]] | None,
        event_line: Callable[[dict[str, Any]], bytes],
        rows: Callable[[list[dict[str, Any]], Batch, int, Hashable], Any] | None = None,
        dead_letter_rows: Callable[[list[dict[str, Any]]], Any] | None = None,
    ) -> None:
        self.decode = decode or _json_event
        self.event_line = event_line
        self.rows = rows
        self.dead_letter_rows = dead_letter_rows


def _json_event(value: bytes | None) -> tuple[Hashable, dict[str, Any]]:
    return None, json_object(value)


def json_object(value: bytes | None) -> dict[str, Any]:
    """A record value parsed as a JSON object; :class:`InvalidEvent` says why it is not one.

    orjson's parse rejects what is not UTF-8 or not JSON.
    """
    if value is None:
        raise InvalidEvent("null value (tombstone)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidEvent(f"not valid UTF-8 JSON: {err}") from None
    if type(obj) is not dict:
        raise InvalidEvent(f"JSON value is a {type(obj).__name__}, expected an object")
    return obj


def batch_lines(batch: Batch, record_format: str, events: Events | None = None) -> Iterator[Lines | Refused]:
    """``batch`` in offset order: runs of events as :class:`Lines`, each run ended by a :class:`Refused`
    record, by a change of schema, or by the batch's end.

    The common case, a batch of one-line JSON objects, is one run handled whole (:func:`to_block`);
    otherwise the values go one by one (:func:`to_line`), so each refusal says what is wrong with which.
    With ``events``, every value is decoded (:func:`_decoded`).
    """
    envelope = record_format == "envelope"
    if events is not None:
        yield from _decoded(batch, envelope, events)
        return
    values = batch.values
    block = to_block(values)
    if block is None:
        yield from _one_by_one(batch, envelope)
    elif envelope:
        # held until the writer has taken the lines: freed before, the envelopes' heap is trimmed and grown
        # again by the next batch, twice the page faults of the export
        envelopes = _envelopes(batch, 0, values)  # type: ignore[arg-type]  # all bytes here
        yield _joined(envelopes, batch, 0)
    else:
        yield Lines(block, list(accumulate(map(add, map(len, values), repeat(1)))), batch, 0)  # type: ignore[arg-type]


def _one_by_one(batch: Batch, envelope: bool) -> Iterator[Lines | Refused]:
    values = batch.values
    first = 0
    while first < len(values):
        run: list[bytes] = []
        error = None
        for value in values[first:] if first else values:
            try:
                run.append(to_line(value))
            except InvalidEvent as err:
                error = err
                break
        if run:
            if envelope:
                run = _envelopes(batch, first, [line[:-1] for line in run])
            yield _joined(run, batch, first)
        first += len(run)
        if error is not None:
            yield _refused(batch, first, str(error))
            first += 1


def _decoded(batch: Batch, envelope: bool, events: Events) -> Iterator[Lines | Refused]:
    """Each value decoded into an event: runs of one schema as :class:`Lines`, refusals between them."""
    values = batch.values
    first = 0
    while first < len(values):
        run: list[dict[str, Any]] = []
        schema: Hashable = None
        error = None
        for value in values[first:] if first else values:
            try:
                key, event = events.decode(value)
            except InvalidEvent as err:
                error = err
                break
            if run and (key != schema or len(run) == DECODED_RUN):
                break
            schema = key
            run.append(event)
        if run:
            yield from _run(batch, first, run, schema, envelope, events)
        first += len(run)
        if error is not None:
            yield _refused(batch, first, str(error), events)
            first += 1


def _run(
    batch: Batch, first: int, run: list[dict[str, Any]], schema: Hashable, envelope: bool, events: Events
) -> Iterator[Lines | Refused]:
    """A run of decoded events of one schema: JSON Lines, or Parquet rows (a row that does not fit the
    columns is refused, and the rows around it are runs of their own)."""
    if events.rows is None:
        lines = [events.event_line(event) for event in run]
        if envelope:
            lines = _envelopes(batch, first, [line[:-1] for line in lines])
        yield _joined(lines, batch, first)
        return
    try:
        yield _rows(batch, first, events.rows(run, batch, first, schema), schema)
        return
    except ValueError:
        pass  # find which rows do not fit, one by one
    start = 0
    for index, event in enumerate(run):
        try:
            events.rows([event], batch, first + index, schema)
        except ValueError as err:
            if index > start:
                yield _rows(batch, first + start, events.rows(run[start:index], batch, first + start, schema), schema)
            yield _refused(batch, first + index, str(err), events)
            start = index + 1
    if start < len(run):
        yield _rows(batch, first + start, events.rows(run[start:], batch, first + start, schema), schema)


def _rows(batch: Batch, first: int, rows: Any, schema: Hashable) -> Lines:
    """Parquet rows of records ``first ...`` of ``batch``; ``ends`` counts their value bytes."""
    sizes = (len(value or b"") for value in batch.values[first : first + rows.num_rows])
    return Lines(b"", list(accumulate(sizes)), batch, first, rows, schema)


def _joined(lines: list[bytes], batch: Batch, first: int) -> Lines:
    return Lines(b"".join(lines), list(accumulate(map(len, lines))), batch, first)


def _envelopes(batch: Batch, first: int, events: list[bytes]) -> list[bytes]:
    """Envelopes of ``events`` (one-line JSON, no newline), records ``first, first+1, ...`` of ``batch``."""
    return [envelope_line(batch.partition, batch.meta(first + i), event) for i, event in enumerate(events)]


def _refused(batch: Batch, index: int, error: str, events: Events | None = None) -> Refused:
    meta = batch.meta(index)
    line = dead_letter_line(batch.partition, meta.offset, meta.timestamp, meta.key, batch.values[index], error)
    if events is None or events.dead_letter_rows is None:
        return Refused(meta.offset, error, Lines(line, [len(line)], batch, index))
    rows = events.dead_letter_rows([orjson.loads(line)])
    return Refused(meta.offset, error, Lines(b"", [len(batch.values[index] or b"")], batch, index, rows, "dead letter"))


def to_line(value: bytes | None) -> bytes:
    """One UTF-8 JSON line (newline included) for a record value.

    Every line in a file is a JSON object (:func:`json_object`). A value already on one line is kept
    byte for byte (the producer's number formatting and key order survive, and re-serialising was half
    the export's per-event cost); a value spread over lines (pretty-printed) is re-serialised compactly
    onto one.
    """
    obj = json_object(value)
    assert value is not None  # json_object refused a tombstone
    if b"\n" in value or b"\r" in value:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    return value + b"\n"


def to_block(values: list[bytes | None]) -> bytes | None:
    """The JSON Lines of a whole batch, if every value is a one-line JSON object (else ``None``).

    The common case costs one parse per value and two copies per batch, all in C: the values are
    parsed and dropped (only their types are kept), then joined. Anything else (a tombstone, bad
    JSON, a non-object, a value spread over lines) returns ``None``: the caller goes value by value
    with :func:`to_line`, which says what is wrong with which one.
    """
    try:
        if set(map(type, map(orjson.loads, values))) != {dict}:
            return None
    except orjson.JSONDecodeError:
        return None
    block = b"\n".join([*values, b""])  # type: ignore[list-item]  # every value is bytes here
    if block.count(b"\n") != len(values) or b"\r" in block:
        return None
    return block


def dead_letter_line(
    partition: int, offset: int, timestamp: int, key: bytes | None, value: bytes | None, error: str
) -> bytes:
    """The dead-letter line: the raw record, base64-encoded, and why it was refused."""
    return orjson.dumps(
        {
            "partition": partition,
            "offset": offset,
            "timestamp": timestamp,
            "key_b64": None if key is None else base64.b64encode(key).decode(),
            "value_b64": None if value is None else base64.b64encode(value).decode(),
            "error": error,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def envelope_line(partition: int, meta: RecordMeta, value: bytes) -> bytes:
    """``format: envelope``: the event (one line of JSON, no newline) inside its record's coordinates.

    ``{"partition", "offset", "timestamp", "key", "headers", "value"}``, so downstream code can
    deduplicate by (partition, offset), join on keys and read headers. A key or header value that is
    not UTF-8 is base64 under ``key_b64`` / ``headers_b64`` instead (as in dead letters); a header
    name that repeats maps to the list of its values, in order. The value is spliced in as produced.
    """
    envelope: dict[str, Any] = {"partition": partition, "offset": meta.offset, "timestamp": meta.timestamp}
    is_text, key = _text_or_b64(meta.key)
    envelope["key" if is_text else "key_b64"] = key
    texts: dict[str, Any] = {}
    binaries: dict[str, Any] = {}
    for name, raw in meta.headers:
        is_text, text = _text_or_b64(raw)
        into = texts if is_text else binaries
        if name in into:
            previous = into[name]
            into[name] = [*previous, text] if isinstance(previous, list) else [previous, text]
        else:
            into[name] = text
    envelope["headers"] = texts
    if binaries:
        envelope["headers_b64"] = binaries
    envelope["value"] = orjson.Fragment(value)
    return orjson.dumps(envelope, option=orjson.OPT_APPEND_NEWLINE)


def _text_or_b64(raw: bytes | None) -> tuple[bool, str | None]:
    """``(True, text)`` when ``raw`` is UTF-8 (or absent), else ``(False, base64 of raw)``."""
    if raw is None:
        return True, None
    try:
        return True, raw.decode("utf-8")
    except UnicodeDecodeError:
        return False, base64.b64encode(raw).decode()
