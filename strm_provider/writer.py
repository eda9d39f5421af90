"""The rolling file writer: JSON Lines streamed into storage, cut into files at deterministic points.

A file's name is made from its first record (:mod:`strm_provider.naming`), and files rotate at
``max_bytes``/``max_events`` whatever the batch sizes, so a retry of the same plan cuts and names the
same files. The export loop (:mod:`strm_provider.export`) feeds it; offsets are not its business.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections.abc import Callable
from contextlib import AbstractContextManager
from itertools import accumulate
from typing import IO

from strm_provider.hooks.storage import StorageHook
from strm_provider.readers import Batch

log = logging.getLogger(__name__)


class RollingFile:
    """A sequence of files named from their content, rotated at deterministic boundaries."""

    def __init__(
        self,
        storage: StorageHook,
        key_for: Callable[[int, dict[int, int]], str],
        max_bytes: int,
        max_events: int | None,
        before_close: Callable[[], None] | None = None,
    ) -> None:
        self._before_close = before_close
        self._storage = storage
        self._key_for = key_for
        self._max_bytes = max_bytes
        self._max_events = max_events
        self._cm: AbstractContextManager[IO[bytes]] | None = None
        self._out: IO[bytes] | None = None
        self._bytes = 0
        self._events = 0
        self._finishing: tuple[threading.Thread, list[BaseException]] | None = None
        self.keys: list[str] = []
        self.total_bytes = 0
        self.total_events = 0

    def write_block(self, block: bytes, ends: list[int], batch: Batch, first: int, cursor: dict[int, int]) -> None:
        """Append the lines of ``block`` (line ``i`` ends at byte ``ends[i]``), made from ``batch``'s
        records ``first, first+1, ...``, rotating files where needed.

        Equivalent to appending the lines one at a time (a file takes lines while it stays within
        ``max_bytes`` and ``max_events``, and always takes its first line), but the cut points are
        found by bisection and each run of lines goes out as one slice of the block. A file a line
        opens is named from that record's timestamp and ``cursor`` with the record's own offset.
        """
        view = memoryview(block)
        done = 0
        while done < len(ends):
            if self._out is None:
                meta = batch.meta(first + done)
                key = self._key_for(meta.timestamp, {**cursor, batch.partition: meta.offset})
                self._cm = self._storage.open_writer(key)
                self._out = self._cm.__enter__()
                self._bytes = self._events = 0
                self.keys.append(key)
            base = ends[done - 1] if done else 0
            take = bisect_right(ends, base + self._max_bytes - self._bytes, lo=done) - done
            if self._max_events is not None:
                take = min(take, self._max_events - self._events)
            if take <= 0:
                if self._events:
                    self.close(wait=False)
                    continue
                take = 1  # an empty file always takes its first line, however long
            size = ends[done + take - 1] - base
            self._out.write(view[base : base + size])
            self._bytes += size
            self._events += take
            self.total_bytes += size
            self.total_events += take
            done += take

    def write_lines(self, lines: list[bytes], batch: Batch, first: int, cursor: dict[int, int]) -> None:
        """:meth:`write_block` for separate lines."""
        self.write_block(b"".join(lines), list(accumulate(map(len, lines))), batch, first, cursor)

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
        cm, self._cm, self._out = self._cm, None, None
        self._wait_finishing()
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
        cm, self._cm, self._out = self._cm, None, None
        if cm is not None:
            try:
                cm.__exit__(type(err), err, err.__traceback__)
            except BaseException:
                log.debug("abandoned upload raised", exc_info=True)
        try:
            self._wait_finishing()  # a file already complete on our side finishes; nothing is committed
        except BaseException:
            log.debug("background upload raised", exc_info=True)
