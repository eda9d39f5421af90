"""A downstream reader's scan of the exported files: one DuckDB query of one column, over JSON Lines or Parquet.

``python -m bench.scan FORMAT GLOB`` (FORMAT ``jsonl`` or ``parquet``) runs :data:`QUERY` in this fresh process
and prints, as JSON, the bytes the process read meanwhile (``rchar`` of ``/proc/self/io``: every ``read`` and
``pread`` of every thread, page cache or not; DuckDB is imported and connected before the first reading, so its
own libraries are not counted), the query's wall time and its result. :func:`scan` runs it a few times per
format and keeps the median time (the bytes read are the same each time).

``rchar`` is what the reader asks of its storage: for files on S3 or GCS, the bytes it would fetch (DuckDB
reads a Parquet file's footer, then only the column chunks a query needs; a JSON Lines file whole).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: the column read: the events' type, counted
COLUMN = "eventType"
QUERY = f"SELECT {COLUMN}, count(*) AS events FROM {{source}} GROUP BY {COLUMN} ORDER BY {COLUMN}"
SOURCES = {
    "jsonl": "read_json('{glob}', format = 'newline_delimited')",
    "parquet": "read_parquet('{glob}')",
}


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def _query(kind: str, glob: str) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    con.execute("SELECT 1").fetchall()
    sql = QUERY.format(source=SOURCES[kind].format(glob=glob))
    before = _rchar()
    start = time.perf_counter()
    rows = con.execute(sql).fetchall()
    seconds = time.perf_counter() - start
    read = _rchar() - before
    return {"bytes_read": read, "seconds": seconds, "rows": [list(r) for r in rows], "sql": sql}


def scan(files: dict[str, list[Path]], runs: int = 3) -> dict[str, Any]:
    """For each format, :data:`QUERY` over its ``files`` (one directory each) in ``runs`` fresh processes:
    bytes read, median seconds, the files' bytes, and whether every format gave the same answer."""
    out: dict[str, Any] = {}
    for kind, paths in files.items():
        folder = paths[0].parent
        ending = ".jsonl" if kind == "jsonl" else ".parquet"
        glob = str(folder / f"*{ending}")
        results = []
        for _ in range(runs):
            proc = subprocess.run(
                [sys.executable, "-m", "bench.scan", kind, glob],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            results.append(json.loads(proc.stdout))
        file_bytes = sum(p.stat().st_size for p in paths)
        read = [r["bytes_read"] for r in results]
        out[kind] = {
            "files": len(paths),
            "file_mb": round(file_bytes / 1e6, 1),
            "read_mb": round(statistics.median(read) / 1e6, 2),
            "read_mb_each_run": [round(r / 1e6, 2) for r in read],
            "read_share_of_files": round(statistics.median(read) / file_bytes, 4),
            "seconds": round(statistics.median(r["seconds"] for r in results), 3),
            "seconds_each_run": [round(r["seconds"], 3) for r in results],
            "sql": results[0]["sql"],
            "answer": results[0]["rows"],
        }
    answers = {json.dumps(v["answer"]) for v in out.values()}
    return {"query": QUERY.format(source="<files>"), "same_answer": len(answers) == 1, "formats": out}


if __name__ == "__main__":
    print(json.dumps(_query(sys.argv[1], sys.argv[2])))
