"""A seam in the export's read path: run a callback as each batch leaves the reader, whichever client reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from strm_provider.hooks.kafka import StrmKafkaHook
from strm_provider.offsets import CREATED_METADATA, PLAN_METADATA


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


class CommitSeam:
    """Wraps the group's consumer; calls ``before()`` ahead of the export's final commit (the one that moves
    the group forward), not ahead of the plan's record of its intent or a new exporter's pin."""

    def __init__(self, consumer: Any, before: Callable[[], None]) -> None:
        self._consumer = consumer
        self._before = before

    def commit(self, offsets: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        if not any(o.metadata.startswith((PLAN_METADATA, CREATED_METADATA)) for o in offsets.values()):
            self._before()
        return self._consumer.commit(offsets, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def before_commits(before: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every consumer the Kafka hook builds from now on call ``before()`` ahead of a commit."""
    real = StrmKafkaHook.consumer

    def consumer(self: StrmKafkaHook, *args: Any, **kwargs: Any) -> CommitSeam:
        return CommitSeam(real(self, *args, **kwargs), before)

    monkeypatch.setattr(StrmKafkaHook, "consumer", consumer)
