"""Reporting: the target ratios of one run, the Markdown table and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {
    "kafka_python_raw": "(a) kafka-python raw",
    "confluent_raw": "(b) confluent-kafka raw",
    "s3_ingest": "(f) S3 upload only",
    "export_task": "(c) export task",
    "export_task_confluent": "(c) export task, confluent reader",
    "export_task_gzip": "(c) export task, confluent reader, gzip",
    "export_task_zstd": "(c) export task, confluent reader, zstd",
    "export_task_avro_jsonl": "(g) export task, Avro in, JSON Lines out",
    "export_task_avro_parquet": "(g) export task, Avro in, Parquet (zstd) out",
    "dag_run": "(d) DAG run",
    "dag_run_confluent": "(d) DAG run, confluent reader",
    "naive_airflow": "(e) naive Airflow",
}


#: name -> (method, what it is compared with: one method or the slower of several, the ratio wanted)
TARGETS = {
    "export_task / kafka_python_raw": ("export_task", ("kafka_python_raw",), 0.8),
    "export_task_confluent / min(confluent_raw, s3_ingest)": (
        "export_task_confluent",
        ("confluent_raw", "s3_ingest"),
        0.6,
    ),
    "export_task_confluent / naive_airflow": ("export_task_confluent", ("naive_airflow",), 3.0),
    "dag_run_confluent / naive_airflow": ("dag_run_confluent", ("naive_airflow",), 1.5),
    "dag_run / naive_airflow": ("dag_run", ("naive_airflow",), 1.0),
}


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | bool]]:
    """Each target ratio of events/s measured in this run, the ratio wanted and whether it was reached."""
    rate = {k: v["events_per_s"] for k, v in results.items() if "error" not in v}
    out: dict[str, dict[str, float | bool]] = {}
    for name, (method, versus, wanted) in TARGETS.items():
        if method in rate and all(v in rate for v in versus):
            ratio = rate[method] / min(rate[v] for v in versus)
            out[name] = {"ratio": round(ratio, 3), "target": wanted, "reached": ratio >= wanted}
    return out


def table(report: dict[str, Any]) -> str:
    rows = [
        "| method | events/s | MB/s | peak RSS MB | seconds | CPU s | servers' CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, row in report["methods"].items():
        if "error" in row:
            rows.append(f"| {LABELS[method]} | failed: {row['error'][:80]} | | | | | |")
            continue
        variants = row.get("variants") or {"": row}
        for variant, v in variants.items():
            label = LABELS[method] + (f", {variant.replace('_', ' ').replace('sets ', 'sets=')}" if variant else "")
            rows.append(
                f"| {label} | {v['events_per_s']:,.0f} | {v['mb_per_s']:,.1f} | {v['peak_rss_mb']:,.0f} | "
                f"{v['seconds']:,.1f} | {v.get('work_cpu_s', v['cpu_s']):,.1f} | {v.get('server_cpu_s', '')} |"
            )
    text = "\n".join(rows)
    methods = report["methods"]
    plain = methods.get("export_task_confluent", {}).get("events_per_s")
    codecs = {m: r for m, r in methods.items() if "compression_ratio" in r}
    if codecs:
        text += "\n\n| compression | JSON ÷ stored bytes | stored MB | events/s vs uncompressed (same reader) |\n"
        text += "|---|---:|---:|---:|\n" + "\n".join(
            f"| {m.rsplit('_', 1)[1]} | {r['compression_ratio']:.2f} | {r['stored_mb']:,.0f} | "
            + (f"{r['events_per_s'] / plain:.2f} |" if plain else "n/a |")
            for m, r in codecs.items()
        )
    avro = {m: r for m, r in methods.items() if "kafka_value_mb" in r}
    if avro:
        text += (
            "\n\n| Avro in | events/s | vs JSON in, JSON Lines out (same run) | stored MB | JSON Lines ÷ stored "
            "| files | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|\n"
        )
        text += "\n".join(
            f"| {LABELS[m]} | {r['events_per_s']:,.0f} | "
            + (f"{r['events_per_s'] / plain:.2f}" if plain else "n/a")
            + f" | {r['stored_mb']:,.0f} | {r['json_lines_mb_per_stored_mb']:.2f} | {r['files']} | "
            f"{r['peak_rss_mb']:,.0f} |"
            for m, r in avro.items()
        )
    scan = report.get("scan") or {}
    if scan.get("formats"):
        text += f"\n\nDuckDB, one column (`{scan['query']}`), same events; answers equal: {scan['same_answer']}\n"
        text += "| files | file MB | MB read (rchar) | share of the files read | query s (median of 3) |\n"
        text += "|---|---:|---:|---:|---:|\n" + "\n".join(
            f"| {kind} | {v['file_mb']:,.1f} | {v['read_mb']:,.2f} | {v['read_share_of_files']:.2%} | "
            f"{v['seconds']:.2f} |"
            for kind, v in scan["formats"].items()
        )
    if report.get("ratios"):
        text += "\n\n| ratio of events/s | measured | target |\n|---|---:|---:|\n" + "\n".join(
            f"| {k} | {v['ratio']:.2f} | ≥ {v['target']} {'✓' if v['reached'] else '✗'} |"
            for k, v in report["ratios"].items()
        )
    return text


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = {
        "kafka_python_raw": "#888888",
        "confluent_raw": "#555555",
        "export_task": "#2e86c1",
        "export_task_confluent": "#1a5276",
        "export_task_gzip": "#117a65",
        "export_task_zstd": "#148f77",
        "export_task_avro_jsonl": "#7d3c98",
        "export_task_avro_parquet": "#a569bd",
        "s3_ingest": "#aaaaaa",
        "dag_run": "#5dade2",
        "dag_run_confluent": "#2874a6",
        "naive_airflow": "#e67e22",
    }
    labels, rates, rss, colors = [], [], [], []
    for method, row in report["methods"].items():
        if "error" in row:
            continue
        for variant, v in (row.get("variants") or {"": row}).items():
            labels.append(LABELS[method] + (f"\n{variant.replace('_', ' ')}" if variant else ""))
            rates.append(v["events_per_s"] / 1000)
            rss.append(v["peak_rss_mb"])
            colors.append(palette[method])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    left.barh(labels, rates, color=colors)
    left.set_xlabel("thousand events/s (higher is better)")
    right.barh(labels, rss, color=colors)
    right.set_xlabel("peak RSS, MB (lower is better)")
    right.set_yticklabels([])
    for axis, values, fmt in ((left, rates, "{:,.0f}k"), (right, rss, "{:,.0f}")):
        axis.invert_yaxis()
        for i, value in enumerate(values):
            axis.text(value, i, " " + fmt.format(value), va="center", fontsize=8)
    m = report["machine"]
    fig.suptitle(
        f"{report['events']:,} events of ~{report['event_bytes_avg']:.0f} B, {report['partitions']} partitions, "
        f"loopback {report['broker']} + S3 (moto); {m['cpus']} cores, {m['memory_gb']} GB"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
