"""Peak memory of one export task as the backlog grows (figures, not assertions).

``.venv/bin/python bench/memory.py [--events 1000000,4000000] [--methods ...]`` runs :mod:`bench.run` once
per backlog size with the export task methods (the kafka-python and the confluent reader into JSON Lines, and
the same events as Avro into Parquet with zstd), each in a fresh process whose peak RSS is polled from /proc,
and prints one table. If the export's memory is bounded, the peaks are the same for every size.

What bounds it: one partition read at a time (the confluent reader fetches the next one meanwhile)
with fetches of at most 4 MiB per partition, polls of 10,000 records, files streamed to storage
through a pipe (S3: at most 3 parts of 16 MiB in memory per file being uploaded); Parquet adds a row
group of at most 65,536 rows or 32 MiB of record values, held until written. Writes
``bench/memory.json`` (the figures of methods not measured this time are kept):
``{"broker": "apache-kafka <version>", "machine": {...},
"methods": {"<method>": {"<events>": {"peak_rss_mb", "events_per_s", "backlog_mb"}}}}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench import run
from bench.report import LABELS

REPO = Path(__file__).resolve().parent.parent

METHODS = ("export_task", "export_task_confluent", "export_task_avro_parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", default="1000000,4000000", help="comma-separated backlog sizes in events")
    parser.add_argument("--partitions", type=int, default=run.PARTITIONS)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "memory.json")
    args = parser.parse_args()
    chosen = [m for m in METHODS if m in args.methods.split(",")]
    rows: list[dict[str, Any]] = []
    broker = ""
    for events in (int(n) for n in args.events.split(",")):
        report = run.bench(
            argparse.Namespace(
                events=events,
                partitions=args.partitions,
                methods=",".join(chosen),
                keep=False,
                out=None,
            )
        )
        broker = report["broker"]
        backlog_mb = report["event_bytes_avg"] * events / 1e6
        for method in chosen:
            row = report["methods"][method]
            rows.append(
                {
                    "events": events,
                    "backlog_mb": round(backlog_mb),
                    "method": method,
                    **{k: row.get(k) for k in ("events_per_s", "peak_rss_mb", "error")},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    kept = json.loads(args.out.read_text())["methods"] if args.out.exists() else {}
    methods = kept | {
        method: {
            str(r["events"]): {k: r.get(k) for k in ("peak_rss_mb", "events_per_s", "backlog_mb")}
            for r in rows
            if r["method"] == method
        }
        for method in chosen
    }
    out = {"broker": broker, "machine": report["machine"], "methods": methods}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{broker}\n| method | events | backlog MB | events/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (METHODS.index(r["method"]), r["events"])):
        rate = f"{r['events_per_s']:,.0f}" if r.get("events_per_s") else f"failed: {r.get('error')}"
        rss = f"{r['peak_rss_mb']:,.0f}" if r.get("peak_rss_mb") else ""
        print(f"| {LABELS[r['method']]} | {r['events']:,} | {r['backlog_mb']:,} | {rate} | {rss} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
