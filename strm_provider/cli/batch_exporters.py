"""``strm create|list|get|delete batch-exporter``: batch exporters as YAML files in the folder the DAG file reads.

Reading and writing the files is :mod:`strm_provider.config`; here is what the commands add: the JSON
``strm`` prints, and the checks against Kafka and the data connector before a file is written.
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from strm_provider.cli.app import KAFKA_CONNECTION, NO_VALIDATE, create, delete, get, list_, show, store, validated
from strm_provider.cli.data_connectors import data_connector
from strm_provider.cli.output import OUTPUT, emit_json, emit_table
from strm_provider.config import (
    ExporterConfig,
    LoadedExporter,
    exporter_path,
    exporters_dir,
    format_interval,
    load_exporters,
    write_exporter,
)


def describe(cfg: ExporterConfig) -> dict[str, Any]:
    """A batch exporter as ``strm get batch-exporter`` prints it."""
    return {
        "ref": {"name": cfg.name},
        "streamRef": {"name": cfg.stream},
        "dataConnectorRef": {"name": cfg.data_connector},
        "interval": format_interval(cfg.interval),
        "pathPrefix": cfg.path_prefix,
    }


@create.command("batch-exporter")
@click.argument("stream")
@click.option("--data-connector", help="Name of the data connector (optional when exactly one exists)")
@click.option("--path-prefix", default="", help="Prefix of the file names in the bucket, e.g. events")
@click.option("--interval", default="60s", show_default=True, help="Seconds (60) or a duration (60s, 5m, 1h)")
@click.option("--name", help="Name of the exporter (default: <data connector>-<stream>)")
@click.option(
    "--partition-sets",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Parallel export tasks (files) per run",
)
@click.option(
    "--include-existing-events/--no-include-existing-events",
    default=False,
    help="Also export what the stream holds already (default: only events from now on)",
)
@KAFKA_CONNECTION
@NO_VALIDATE
@OUTPUT
@click.pass_context
def create_batch_exporter(ctx: click.Context, stream: str, **opts: Any) -> None:
    """Create a batch exporter of STREAM to a data connector: an exporter YAML the DAG file turns into a DAG."""
    from pydantic import ValidationError

    from strm_provider.config import ExporterConfig, check_prefix, parse_interval

    try:
        interval = parse_interval(opts["interval"])
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--interval'") from None
    try:
        prefix = check_prefix(opts["path_prefix"])
    except ValueError as err:
        raise click.BadParameter(f"{err}, got {opts['path_prefix']!r}", param_hint="'--path-prefix'") from None
    target = store(ctx)
    connector_name = opts["data_connector"]
    if not connector_name:
        existing = target.list()
        if len(existing) != 1:
            raise click.BadParameter(
                f"required: there are {len(existing)} data connectors "
                f"({', '.join(s.name for s in existing) or 'none'}); name one",
                param_hint="'--data-connector'",
            )
        connector_name = existing[0].name
    fields: dict[str, Any] = {
        "stream": stream,
        "data_connector": connector_name,
        "path_prefix": prefix,
        "interval": interval,
        "partition_sets": opts["partition_sets"],
        "include_existing_events": opts["include_existing_events"],
        "kafka_connection": opts["kafka_connection"],
    }
    if opts["name"]:
        fields["name"] = opts["name"]
    try:
        cfg = ExporterConfig.model_validate(fields)
    except ValidationError as err:
        item = err.errors()[0]
        field = str(item["loc"][0]) if item["loc"] else "name"
        hint = {"stream": "'STREAM'", "name": "'--name'", "data_connector": "'--data-connector'"}.get(
            field, f"'--{field.replace('_', '-')}'"
        )
        raise click.BadParameter(item["msg"].removeprefix("Value error, "), param_hint=hint) from None
    loaded = load_exporters()
    if cfg.name in loaded.configs or exporter_path(cfg).exists():
        raise click.BadParameter(
            f"a batch exporter named '{cfg.name}' exists already"
            + ("" if opts["name"] else "; choose another with --name"),
            param_hint="'--name'",
        )
    spec = data_connector(target, cfg.data_connector, "'--data-connector'")
    from strm_provider.cli.streams import check_stream, kafka_hook, pin_start

    hook = kafka_hook(target, cfg.kafka_connection)
    check_stream(hook, cfg.stream)
    if opts["validate"]:
        validated(lambda: target.write_test_file(spec, cfg.path_prefix), spec.name, "--path-prefix")
    pin_start(hook, cfg.stream, cfg.group_id, include_existing_events=cfg.include_existing_events)
    cfg = cfg.model_copy(update={"asset_uri": spec.asset_uri(cfg.path_prefix)})
    write_exporter(cfg)
    show(describe(cfg), opts["output"] or "json", _exporter_table)


def _exporter_table(items: list[dict[str, Any]]) -> None:
    emit_table(
        ["NAME", "STREAM", "DATA CONNECTOR", "INTERVAL", "PATH PREFIX"],
        [
            [i["ref"]["name"], i["streamRef"]["name"], i["dataConnectorRef"]["name"], i["interval"], i["pathPrefix"]]
            for i in items
        ],
    )


def _warn_broken(errors: list[str]) -> None:
    for error in errors:
        click.echo(f"Warning: skipped a broken exporter file: {error}", err=True)


@list_.command("batch-exporters")
@OUTPUT
def list_batch_exporters(output: str | None) -> None:
    """List batch exporters (the YAML files in the exporters folder)."""
    loaded = load_exporters()
    _warn_broken(loaded.errors)
    items = [describe(e.config) for e in sorted(loaded.configs.values(), key=lambda e: e.config.name)]
    if not items:
        click.echo(f"No batch exporters in {exporters_dir()} (the folder set by STRM_EXPORTERS_DIR)", err=True)
    if (output or "table") == "json":
        emit_json({"batchExporters": items})
    else:
        _exporter_table(items)


def _exporter(name: str) -> LoadedExporter:
    loaded = load_exporters()
    if name not in loaded.configs:
        names = ", ".join(sorted(loaded.configs)) or "none"
        raise click.BadParameter(f"no batch exporter named '{name}' (batch exporters: {names})", param_hint="'NAME'")
    return loaded.configs[name]


@get.command("batch-exporter")
@click.argument("name")
@OUTPUT
def get_batch_exporter(name: str, output: str | None) -> None:
    """Show batch exporter NAME."""
    show(describe(_exporter(name).config), output or "json", _exporter_table)


@delete.command("batch-exporter")
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
def delete_batch_exporter(names: tuple[str, ...]) -> None:
    """Delete batch exporters; checks every NAME first, so nothing is deleted when one is unknown."""
    paths = [_exporter(name).path for name in dict.fromkeys(names)]
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    deleted = ", ".join(dict.fromkeys(names))
    click.echo(f"Batch Exporter{' has' if len(paths) == 1 else 's have'} been deleted: {deleted}")
