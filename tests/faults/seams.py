"""A seam in the export's read path: run a callback as each batch leaves the reader, whichever client reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from strm_provider.hooks.kafka import StrmKafkaHook


class BatchSeam:
    """Wraps a reader; calls ``on_batch(n)`` when the n-th non-empty batch was read, before the export sees it."""

    def __init__(self, reader: Any, on_batch: Callable[[int], None]) -> None:
        self._reader = reader
        self._on_batch = on_batch
        self._count = 0

    def batches(self, *args: Any) -> Iterator[Any]:
        for batch in self._reader.batches(*args):
            if batch.values:
                self._count += 1
                self._on_batch(self._count)
            yield batch

    def prefetch(self, *args: Any) -> None:
        self._reader.prefetch(*args)

    def close(self) -> None:
        self._reader.close()


def on_batches(on_batch: Callable[[int], None], monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Make every reader the Kafka hook builds from now on call ``on_batch`` (undone with ``monkeypatch``)."""
    real = StrmKafkaHook.reader

    def reader(self: StrmKafkaHook, group_id: str) -> BatchSeam:
        return BatchSeam(real(self, group_id), on_batch)

    if monkeypatch is not None:
        monkeypatch.setattr(StrmKafkaHook, "reader", reader)
    else:
        StrmKafkaHook.reader = reader  # type: ignore[method-assign]
