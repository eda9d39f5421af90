"""The rolling file writer: JSON Lines streamed into storage, cut into files at deterministic points.

A file's name is made from its first record (:mod:`strm_provider.naming`), and files rotate at
``max_bytes``/``max_events`` (and where the next line belongs to another folder of a templated
prefix) whatever the batch sizes, so a retry of the same plan cuts and names the same files. The
export loop (:mod:`strm_provider.export`) hands it the lines :mod:`strm_provider.lines` makes;
reading and committing offsets are not its business.

Compressed files count compressed bytes. How many bytes a compressor has emitted at a given line
depends on how its input was fed, and batches differ between retries; so the input is fed in chunks
that depend on the lines only (:func:`chunk_size` of JSON, cut at the line that fills it), each
compressed in one call and flushed to a byte boundary. The compressed size after each chunk is then
a function of the file's lines, and a file closes after the first chunk that leaves it no room for
another. The same codec library must compress every attempt (the workers of one deployment run one
image), as with any exporter whose cut points depend on compressed output.
"""

from __future__ import annotations

import logging
import threading
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import IO

import zstandard

from strm_provider.hooks.storage import StorageHook
from strm_provider.lines import Lines
from strm_provider.naming import ending, object_key, period_ms
from strm_provider.readers import RecordMeta

log = logging.getLogger(__name__)

#: The most JSON a compressed file's chunk holds before it is compressed and flushed.
MAX_CHUNK = 1024 * 1024
#: gzip's and zstd's usual default levels: what ``gzip`` and ``zstd`` on the command line do.
GZIP_LEVEL = 6
ZSTD_LEVEL = 3


def chunk_size(max_bytes: int) -> int:
    """Bytes of JSON per compressed chunk: 1 MiB, or a sixteenth of a small ``max_bytes`` so that a
    file of a few KiB still holds several chunks."""
    return max(256, min(MAX_CHUNK, max_bytes // 16))


def codec_build(compression: str) -> str:
    """The library build that compresses with ``compression``: a replay must cut with the same one."""
    if compression == "gzip":
        return f"gzip (zlib {zlib.ZLIB_RUNTIME_VERSION})"
    if compression == "zstd":
        libzstd = ".".join(str(n) for n in zstandard.ZSTD_VERSION)
        return f"zstd (libzstd {libzstd}, zstandard {zstandard.__version__})"
    return "none"


class Compressor:
    """One file's gzip or zstd stream, fed a chunk at a time and flushed to a byte boundary after each.

    gzip's header carries no time or name (zlib writes mtime 0), and zstd's frame no content size,
    so the bytes depend on the lines only.
    """

    def __init__(self, compression: str) -> None:
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if compression == "gzip" else None
        self._zstd = None if self._zlib else zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()

    def chunk(self, data: bytes) -> bytes:
        if self._zlib is not None:
            return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        assert self._zstd is not None
        return self._zstd.compress(data) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self, data: bytes) -> bytes:
        if self._zlib is not None:
            return self._zlib.compress(data) + self._zlib.flush(zlib.Z_FINISH)
        assert self._zstd is not None
        return self._zstd.compress(data) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def empty_file(ending: str) -> bytes:
    """The bytes of a file of no events, per ending (:data:`strm_provider.naming.EXTENSIONS`): nothing, an
    empty gzip or zstd stream (which tools read as an empty file, where a zero-byte ``.gz`` is an error),
    or a Parquet file of no rows."""
    if ending == "parquet":
        from strm_provider.parquet import empty_parquet

        return empty_parquet()
    return b"" if ending == "none" else Compressor(ending).finish(b"")


class RollingFile:
    """A sequence of files named from their content, rotated at deterministic boundaries.

    ``key_for`` names a file from its first line's partition and record. With ``period_ms`` (the
    folder period of a templated prefix, :func:`strm_provider.naming.period_ms`) a file also holds
    the lines of one period only.
    """

    def __init__(
        self,
        storage: StorageHook,
        key_for: Callable[[int, RecordMeta], str],
        max_bytes: int,
        max_events: int | None,
        before_close: Callable[[], None] | None = None,
        compression: str = "none",
        period_ms: int | None = None,
    ) -> None:
        self._before_close = before_close
        self._compression = compression
        self._chunk_size = chunk_size(max_bytes)
        self._compressor: Compressor | None = None
        self._pending = bytearray()  # JSON of the current chunk, not yet compressed
        self._period_ms = period_ms
        self._period = 0
        self._storage = storage
        self._key_for = key_for
        self._max_bytes = max_bytes
        self._max_events = max_events
        self._cm: AbstractContextManager[IO[bytes]] | None = None
        self._out: IO[bytes] | None = None
        self._bytes = 0  # of the current file, as stored (compressed when it is)
        self._events = 0
        self._finishing: tuple[threading.Thread, list[BaseException]] | None = None
        self.keys: list[str] = []
        self.total_bytes = 0  # of JSON Lines, before compression
        self.total_stored_bytes = 0  # of the closed files, as stored (compressed when compressed)
        self.total_events = 0

    def write(self, lines: Lines) -> None:
        """Append ``lines``, rotating files where needed.

        Equivalent to appending the lines one at a time (a file takes lines while it stays within
        ``max_bytes`` and ``max_events``, and always takes its first line), but the cut points are
        found by bisection and each run of lines goes out as one slice of the block, so how the
        records were batched changes no cut point.
        """
        ends = lines.ends
        periods = None if self._period_ms is None else [max(ts, 0) // self._period_ms for ts in lines.timestamps()]
        done = 0
        while done < len(ends):
            if self._out is not None and periods is not None and periods[done] != self._period:
                self.close(wait=False)
            if self._out is None:
                self._open(lines, done)
                if periods is not None:
                    self._period = periods[done]
            take = self._room(ends, done, periods)
            if take <= 0:
                if self._events:
                    self.close(wait=False)
                    continue
                take = 1  # an empty file always takes its first line, however long
            take = min(take, len(ends) - done)
            self._append(lines, done, take)
            done += take

    def _room(self, ends: list[int], done: int, periods: list[int] | None) -> int:
        """How many lines from ``done`` on the current file takes before the limits (or its period) end it."""
        base = ends[done - 1] if done else 0
        if self._compressor is None:
            take = bisect_right(ends, base + self._max_bytes - self._bytes, lo=done) - done
        else:  # up to the line that fills the chunk
            take = bisect_left(ends, base + self._chunk_size - len(self._pending), lo=done) + 1 - done
        if self._max_events is not None:
            take = min(take, self._max_events - self._events)
        if periods is not None and take > 1:
            period, stop = periods[done], min(done + take, len(ends))
            take = next((i for i in range(done + 1, stop) if periods[i] != period), stop) - done
        return take

    def _append(self, lines: Lines, start: int, count: int) -> None:
        """Add lines ``start .. start + count`` of ``lines`` to the current file (to its chunk when compressed)."""
        assert self._out is not None
        base = lines.ends[start - 1] if start else 0
        data = memoryview(lines.block)[base : lines.ends[start + count - 1]]
        if self._compressor is None:
            self._out.write(data)
            self._bytes += len(data)
        else:
            self._pending += data
        self._events += count
        self.total_bytes += len(data)
        self.total_events += count
        if self._compressor is not None and len(self._pending) >= self._chunk_size:
            self._flush_chunk()

    def _open(self, lines: Lines, index: int) -> None:
        key = self._key_for(lines.partition, lines.record(index))
        self._cm = self._storage.open_writer(key)
        self._out = self._cm.__enter__()
        self._bytes = self._events = 0
        self._compressor = Compressor(self._compression) if self._compression != "none" else None
        self.keys.append(key)

    def _flush_chunk(self) -> None:
        """Compress the full chunk into the file; close the file if another chunk might not fit."""
        assert self._compressor is not None and self._out is not None
        data = self._compressor.chunk(bytes(self._pending))
        self._pending.clear()
        self._out.write(data)
        self._bytes += len(data)
        if self._bytes + self._chunk_size > self._max_bytes:
            self.close(wait=False)

    def close(self, wait: bool = True) -> None:
        """Finish the current upload (unless ``before_close`` refuses: then abort it).

        A rotation passes ``wait=False``: the file's last parts upload in the background while the
        next file fills (at most one file finishes that way at a time). The final ``close()``, which
        comes before any commit, waits for every upload and raises the first failure.
        """
        if self._cm is not None and self._before_close is not None:
            try:
                self._before_close()
            except BaseException as err:
                self.abort(err)
                raise
        if self._compressor is not None and self._out is not None:
            tail = self._compressor.finish(bytes(self._pending))
            self._out.write(tail)
            self._bytes += len(tail)
        if self._out is not None:  # the file's size as stored is final now
            self.total_stored_bytes += self._bytes
        self._compressor = None
        self._pending.clear()
        cm, self._cm, self._out = self._cm, None, None
        try:
            self._wait_finishing()
        except BaseException as err:  # the file before failed: abandon this one too, or its upload waits forever
            _abandon(cm, err)
            raise
        if cm is None:
            return
        if wait:
            cm.__exit__(None, None, None)
            return
        errors: list[BaseException] = []

        def finish() -> None:
            try:
                cm.__exit__(None, None, None)
            except BaseException as err:  # raised in the exporting thread by _wait_finishing
                errors.append(err)

        thread = threading.Thread(target=finish, name="finish-upload", daemon=True)
        thread.start()
        self._finishing = (thread, errors)

    def _wait_finishing(self) -> None:
        if self._finishing is not None:
            (thread, errors), self._finishing = self._finishing, None
            thread.join()
            if errors:
                raise errors[0]

    def abort(self, err: BaseException) -> None:
        """Abandon the current upload: no object appears under its name."""
        self._compressor = None
        self._pending.clear()
        cm, self._cm, self._out = self._cm, None, None
        _abandon(cm, err)
        try:
            self._wait_finishing()  # a file already complete on our side finishes; nothing is committed
        except BaseException:
            log.debug("background upload raised", exc_info=True)


class SetWriter:
    """The files of one partition set: its events and its dead letters.

    A file is named after its first record and where the set's other partitions stand at that point
    (their planned end once read, else their planned start: :meth:`read_up_to`), so its name is a
    function of its content. Leaving the ``with`` block completes every upload (``before_close``
    may refuse first), or, on an error, abandons them: no file of a failed export appears.
    """

    def __init__(
        self,
        storage: StorageHook,
        *,
        stream: str,
        path_prefix: str,
        partitions: list[int],
        starts: dict[int, int],
        max_bytes: int,
        max_events: int | None,
        compression: str,
        before_close: Callable[[], None],
        file_format: str = "jsonl",
        name_style: str = "standard",
    ) -> None:
        self._stream = stream
        self._path_prefix = path_prefix
        self._partitions = sorted(partitions)
        self._ending = ending(file_format, compression)
        self._name_style = name_style
        self._starts = dict(starts)
        kind: type[RollingFile] = RollingFile
        if file_format == "parquet":
            from strm_provider.parquet import ParquetFile  # builds on this module

            kind = ParquetFile
        files = partial(
            kind,
            storage,
            max_bytes=max_bytes,
            max_events=max_events,
            before_close=before_close,
            compression=compression,
        )
        self.events = files(self._key_for(dead_letter=False), period_ms=period_ms(path_prefix))
        self.dead_letters = files(self._key_for(dead_letter=True))  # whatever their time, in one folder

    def _key_for(self, *, dead_letter: bool) -> Callable[[int, RecordMeta], str]:
        def key(partition: int, first: RecordMeta) -> str:
            starts = {**self._starts, partition: first.offset}
            return object_key(
                self._path_prefix,
                self._stream,
                first.timestamp,
                starts,
                self._partitions,
                dead_letter=dead_letter,
                compression=self._ending,
                name_style=self._name_style,
            )

        return key

    def read_up_to(self, partition: int, end: int) -> None:
        """``partition`` is read up to ``end``: files opened from now on name it there."""
        self._starts[partition] = end

    def __enter__(self) -> SetWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> None:
        if err is not None:
            self._abort(err)
            return
        try:
            self.events.close()
            self.dead_letters.close()
        except BaseException as failure:
            self._abort(failure)
            raise

    def _abort(self, err: BaseException) -> None:
        self.events.abort(err)
        self.dead_letters.abort(err)


def _abandon(cm: AbstractContextManager[IO[bytes]] | None, err: BaseException) -> None:
    """Exit an open upload with ``err``: it is abandoned, and no object appears under its name."""
    if cm is not None:
        try:
            cm.__exit__(type(err), err, err.__traceback__)
        except BaseException:
            log.debug("abandoned upload raised", exc_info=True)
