"""Where a Parquet export's memory goes, without Kafka or storage (figures, not assertions).

``.venv/bin/python bench/parquet_memory.py [--events 200000] [--group-rows 65536] [--pool jemalloc]``
decodes the benchmark's events (bench/backlog.py) as the export does for Parquet: batches of 10,000 events as
Python dicts (what the Avro decoder gives), each a ``pyarrow.RecordBatch`` (``from_pylist``, as
``strm_provider.parquet.to_rows``), slices gathered into row groups and written by a ``pyarrow.parquet``
``ParquetWriter`` with zstd to a sink that drops the bytes. It prints, as JSON, this process's RSS and its
high-water mark after the imports, after the first batch of dicts, and at the end; Arrow's pool (bytes allocated
now and at most); and the bytes of one row group's Arrow data.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any


def _status() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


class _Drop(io.RawIOBase):
    def __init__(self) -> None:
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--group-rows", type=int, default=65_536)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--compression", default="zstd")
    parser.add_argument("--pool", default="default", help="default, jemalloc, mimalloc or system")
    parser.add_argument("--no-pandas", action="store_true", help="keep pyarrow from importing pandas")
    args = parser.parse_args()
    if args.no_pandas:
        from bench.workers import block_pandas

        block_pandas()

    import fastavro
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.backlog import AVRO_SCHEMA, event_dicts
    from strm_provider.parquet import arrow_schema

    if args.pool != "default":
        pa.set_memory_pool(getattr(pa, f"{args.pool}_memory_pool")())
    figures: dict[str, Any] = {
        "pool": pa.default_memory_pool().backend_name,
        "group_rows": args.group_rows,
        "batch": args.batch,
    }
    figures["compression"] = args.compression
    figures["no_pandas"] = args.no_pandas
    figures["after_imports"] = _status()
    schema = arrow_schema("avro", fastavro.parse_schema(AVRO_SCHEMA))
    sink = _Drop()
    writer = pq.ParquetWriter(sink, schema, compression=args.compression)
    group: list[pa.RecordBatch] = []
    rows = 0
    source = event_dicts(args.events)
    started = time.perf_counter()
    done = 0
    while done < args.events:
        events = [next(source) for _ in range(min(args.batch, args.events - done))]
        done += len(events)
        if "after_first_batch_of_dicts" not in figures:
            figures["after_first_batch_of_dicts"] = _status()
        batch = pa.RecordBatch.from_pylist(events, schema=schema)
        del events
        group.append(batch)
        rows += batch.num_rows
        if rows >= args.group_rows:
            table = pa.Table.from_batches(group)
            figures.setdefault("row_group_arrow_mb", round(table.nbytes / 1e6, 1))
            writer.write_table(table, row_group_size=len(table))
            del table
            group.clear()
            rows = 0
            figures.setdefault("after_first_row_group", _status())
    if group:
        writer.write_table(pa.Table.from_batches(group))
        group.clear()
    writer.close()
    figures["end"] = _status()
    figures["arrow_pool_mb"] = {
        "allocated_now": round(pa.total_allocated_bytes() / 1e6, 1),
        "max": round(pa.default_memory_pool().max_memory() / 1e6, 1),
    }
    figures["parquet_mb"] = round(sink.written / 1e6, 1)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
