"""Batch exporters: YAML files in the folder the DAG file reads (``strm_provider.config.exporters_dir``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from strm_provider.config import ExporterConfig, LoadResult, exporters_dir, format_interval, load_exporters


def folder() -> Path:
    return exporters_dir()


def load() -> LoadResult:
    return load_exporters(folder())


def path_for(cfg: ExporterConfig) -> Path:
    return folder() / f"{cfg.name}.yaml"


def write(cfg: ExporterConfig) -> Path:
    """Write atomically: a hidden temp file in the same folder, then ``os.replace``.

    The DAG processor ignores dot files, so it never parses a half-written exporter.
    """
    target = path_for(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cfg.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(cfg.to_yaml_dict(), out, sort_keys=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def describe(cfg: ExporterConfig) -> dict[str, Any]:
    """A batch exporter as ``strm get batch-exporter`` prints it."""
    return {
        "ref": {"name": cfg.name},
        "streamRef": {"name": cfg.stream},
        "dataConnectorRef": {"name": cfg.data_connector},
        "interval": format_interval(cfg.interval),
        "pathPrefix": cfg.path_prefix,
    }
