"""``strm create|list|get|delete|monitor|logs|reset batch-exporter``: batch exporters as YAML files in the
folder the DAG file reads.

Reading, checking and writing the files is :mod:`strm_provider.config`; what monitor shows is
:mod:`~strm_provider.cli.health`, the runs and logs it and logs read :mod:`~strm_provider.cli.runs`.
Here is what the commands add: the JSON ``strm`` prints, the checks against Kafka and the data connector
before a file is written, and the exporter's progress record in Airflow, which create, delete and reset
keep in step with Kafka.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, get_args

import click
from pydantic import ValidationError

from strm_provider.cli.app import (
    KAFKA_CONNECTION,
    VALIDATE,
    create,
    delete,
    get,
    list_,
    logs,
    monitor,
    reset,
    show,
    store,
    validated,
)
from strm_provider.cli.data_connectors import data_connector
from strm_provider.cli.output import OUTPUT, emit_json, emit_table
from strm_provider.cli.reset import IsoDateTime, PartitionOffsets
from strm_provider.cli.store import ConnectorStore
from strm_provider.config import (
    COMPRESSIONS,
    BrokenExporter,
    ExporterConfig,
    FileFormat,
    Format,
    LoadedExporter,
    LoadResult,
    ValueFormat,
    exporter_path,
    exporters_dir,
    field_problems,
    format_interval,
    load_exporters,
    write_exporter,
)
from strm_provider.connection_settings import MASKED
from strm_provider.naming import EXTENSIONS, join_key

#: the fields :func:`describe` shows under their documented keys; every other field the YAML holds follows
#: under its own name in camelCase
DOCUMENTED = (
    "name",
    "stream",
    "streams",
    "stream_pattern",
    "data_connector",
    "bucket",
    "interval",
    "path_prefix",
    "compression",
    "format",
)


def describe(cfg: ExporterConfig) -> dict[str, Any]:
    """A batch exporter as ``strm get batch-exporter`` prints it: the documented keys (the file layout options
    only when set, so an exporter without them prints exactly the documented shape), then every other
    field its YAML holds, so that what the file says is all visible."""
    described: dict[str, Any] = {
        "ref": {"name": cfg.name},
        "streamRef": _stream_ref(cfg),
        "dataConnectorRef": {"name": cfg.data_connector},
        **({"bucket": cfg.bucket} if cfg.bucket else {}),
        "interval": format_interval(cfg.interval),
        "pathPrefix": cfg.path_prefix,
    }
    if cfg.compression != "none" or cfg.file_format == "parquet":  # a Parquet file's default is zstd
        described["compression"] = cfg.compression
    if cfg.format != "value":
        described["format"] = cfg.format
    for key, value in cfg.to_yaml_dict().items():
        if key not in DOCUMENTED:
            described[_camel(key)] = value
    return described


def _stream_ref(cfg: ExporterConfig) -> dict[str, Any]:
    """``{"name": stream}``; ``{"names": [...]}`` of a list of streams; ``{"pattern": regex}`` of a pattern."""
    if cfg.stream_pattern is not None:
        return {"pattern": cfg.stream_pattern}
    return {"name": cfg.stream} if cfg.stream is not None else {"names": cfg.streams}


def _streams_shown(ref: dict[str, Any]) -> str:
    """The STREAM column: the stream, the streams joined by commas, or the pattern between slashes."""
    if "pattern" in ref:
        return f"/{ref['pattern']}/"
    return str(ref.get("name") or ",".join(ref.get("names") or []))


class SchemaFile(click.ParamType):
    """``--schema FILE``: an Avro schema (``.avsc``) or a JSON Schema (``.json``), read into the dict the
    exporter file holds inline; whether it is a record or object schema is the model's to say."""

    name = "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            self.fail(f"cannot read {value}: {getattr(err, 'strerror', None) or type(err).__name__}", param, ctx)
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as err:
            self.fail(
                f"{value} is not JSON ({err.msg} at line {err.lineno} column {err.colno}); expected an Avro "
                "record schema (.avsc) or a JSON Schema (.json)",
                param,
                ctx,
            )
        if not isinstance(schema, dict):
            self.fail(
                f"{value} holds a JSON {type(schema).__name__}; expected an Avro record schema (type: record) or a "
                "JSON Schema (type: object)",
                param,
                ctx,
            )
        return schema


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(word.capitalize() for word in rest)


@create.command("batch-exporter")
@click.argument("streams", metavar="STREAM...", nargs=-1)
@click.option(
    "--stream-pattern",
    help="Instead of STREAM: a regular expression; every topic it matches whole is exported, topics created later "
    "too (needs --name)",
)
@click.option("--data-connector", help="Name of the data connector (optional when exactly one exists)")
@click.option(
    "--bucket",
    help="Bucket or container, when the data connector is an aws, google_cloud_platform or wasb connection "
    "(ours name their own)",
)
@click.option(
    "--path-prefix",
    default="",
    help="Folder of the files in the bucket, e.g. events; {date} and {hour} are filled from each event's "
    "time (UTC): events/dt={date}/hour={hour}; {stream} with the topic the events come from",
)
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
@click.option(
    "--value-format",
    type=click.Choice(get_args(ValueFormat)),
    default="json",
    show_default=True,
    help="How the stream's values are encoded: json as produced, or avro, protobuf or json_schema framed by a "
    "Schema Registry (the Kafka connection's schema_registry_url), decoded by the exporter",
)
@click.option(
    "--file-format",
    type=click.Choice(get_args(FileFormat)),
    default="jsonl",
    show_default=True,
    help="jsonl: JSON Lines; parquet: Parquet files, their columns from the records' schemas (or --schema)",
)
@click.option(
    "--schema",
    "value_schema",
    type=SchemaFile(),
    help="parquet with --value-format json: the columns, an Avro record schema (.avsc) or a JSON Schema "
    "(.json) file, written into the exporter file",
)
@click.option(
    "--schema-subject",
    metavar="SUBJECT",
    help="parquet with --value-format json: the columns from a Schema Registry subject (an Avro or JSON Schema) "
    "instead of --schema, with --schema-version",
)
@click.option(
    "--schema-version",
    type=click.IntRange(1),
    help="The version of --schema-subject: the exporter keeps these columns when the subject gets a new version",
)
@click.option(
    "--compression",
    type=click.Choice(list(dict.fromkeys(c for allowed in COMPRESSIONS.values() for c in allowed))),
    help="jsonl: none (default), gzip (.jsonl.gz) or zstd (.jsonl.zst), compressed while streaming; "
    "parquet: zstd (default), snappy, gzip or none, inside the file",
)
@click.option(
    "--format",
    type=click.Choice(get_args(Format)),
    default="value",
    show_default=True,
    help="value: each line (row) is the event; envelope: partition, offset, timestamp, key, headers and the event",
)
@click.option(
    "--name-style",
    type=click.Choice(["standard", "compact"]),
    default="standard",
    show_default=True,
    help="File names: standard (2026-12-05T22:59:07Z-…), or compact, without colons (20261205T225907Z-…) "
    "for tools that refuse them",
)
@KAFKA_CONNECTION
@VALIDATE
@OUTPUT
@click.pass_context
def create_batch_exporter(ctx: click.Context, streams: tuple[str, ...], **opts: Any) -> None:
    """Create a batch exporter of STREAM (or of several streams, or of the topics --stream-pattern matches) to a
    data connector: an exporter YAML the DAG file turns into a DAG."""
    from strm_provider.cli.streams import check_stream, kafka_hook, pin_start
    from strm_provider.naming import fixed_part, with_stream

    target = store(ctx)
    opts["data_connector"] = opts["data_connector"] or _only_connector(target)
    subject = _subject(opts)
    if subject is not None:
        opts["value_schema"] = subject
    if not streams and not opts["stream_pattern"]:
        raise click.UsageError("name a STREAM (or several), or give --stream-pattern")
    source = {"stream": streams[0]} if len(streams) == 1 else {"streams": list(streams)} if streams else {}
    # a refused value_schema is the option's that gave it
    cfg = _new_exporter(ctx, {**opts, **source}, {"value_schema": "schema_subject"} if subject else {})
    if cfg.name in load_exporters().configs or exporter_path(cfg).exists():
        raise click.BadParameter(
            f"a batch exporter named '{cfg.name}' exists already"
            + ("" if opts["name"] else "; choose another with --name"),
            param_hint="'--name'",
        )
    if subject is None and cfg.value_schema is not None:
        _check_columns(cfg.value_schema, _param(ctx, "value_schema"))
    spec = _connector_for(target, cfg)
    hook = kafka_hook(target, cfg.kafka_connection)
    for stream in cfg.streams or [cfg.stream] if cfg.stream_pattern is None else []:
        check_stream(hook, stream)
    if opts["validate"]:
        _check_registry(ctx, hook, cfg, target.where)
        first = cfg.stream or (cfg.streams or [cfg.name])[0]
        validated(
            lambda: target.write_test_file(spec, with_stream(cfg.path_prefix, first), cfg.bucket, cfg.ending),
            spec.name,
            f"the exporter writes its files as {join_key(cfg.path_prefix, '*' + EXTENSIONS[cfg.ending])}, "
            "and so did the validation",
        )
    if cfg.stream is not None:
        pinned, topic_id = pin_start(
            hook, cfg.stream, cfg.group_id, include_existing_events=cfg.include_existing_events
        )
        record_start(target, cfg, pinned, topic_id)
    else:
        record_created(target, cfg)
    cfg = cfg.model_copy(update={"asset_uri": spec.asset_uri(fixed_part(cfg.path_prefix), cfg.bucket)})
    write_exporter(cfg)
    show(describe(cfg), opts["output"] or "json", _exporter_table)


def _subject(opts: dict[str, Any]) -> dict[str, Any] | None:
    """``value_schema: {subject, version}`` of ``--schema-subject`` and ``--schema-version``, or None."""
    subject, version = opts.pop("schema_subject"), opts.pop("schema_version")
    if subject is None:
        if version is not None:
            raise click.BadParameter("goes with --schema-subject", param_hint="'--schema-version'")
        return None
    if opts["value_schema"] is not None:
        raise click.BadParameter("give --schema or --schema-subject, not both", param_hint="'--schema-subject'")
    if version is None:
        raise click.BadParameter(
            "required with --schema-subject (the version whose columns the files keep)", param_hint="'--schema-version'"
        )
    return {"subject": subject, "version": version}


def _param(ctx: click.Context, name: str) -> click.Parameter:
    return next(param for param in ctx.command.params if param.name == name)


def _check_columns(schema: dict[str, Any], param: click.Parameter) -> None:
    """Refuse an Avro record schema or JSON Schema whose types Parquet columns cannot hold before anything is
    written: the exporter's runs would fail on it."""
    from strm_provider.parquet import arrow_schema

    try:
        if schema.get("type") == "record":
            import fastavro

            arrow_schema("avro", fastavro.parse_schema(schema))
        else:
            arrow_schema("json_schema", schema)
    except Exception as err:  # fastavro's parse errors, UnsupportedSchema, a malformed JSON Schema
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise click.BadParameter(f"not a schema of Parquet columns: {detail}", param=param) from None


def _check_registry(ctx: click.Context, hook: Any, cfg: ExporterConfig, where: str) -> None:
    """An exporter of framed records, or of JSON events with the columns of a registry subject, reads schemas
    from the Schema Registry its Kafka connection names: refuse (nothing created) unless it names one that
    answers with the connection's credentials, and holds the subject's version."""
    subject = cfg.value_schema if cfg.value_schema and "subject" in cfg.value_schema else None
    if cfg.value_format == "json" and subject is None:
        return
    from strm_provider.schema_registry import RegistryUnavailable, UnknownSchema

    skip = "or skip the check with --no-validate"
    needs = f"value_format {cfg.value_format}" if subject is None else "--schema-subject"
    try:
        if not (hook.settings.schema_registry_url or "").strip():
            raise click.ClickException(
                f"Kafka connection '{cfg.kafka_connection}' names no Schema Registry, which {needs} needs: set its "
                f"extra schema_registry_url (e.g. http://registry:8081), {skip}"
            )
        # a remote Airflow's REST API masks the extras whose names read like secrets'
        masked = [
            name
            for name in ("schema_registry_password", "schema_registry_token")
            if getattr(hook.settings, name) == MASKED
        ]
        if masked:
            raise click.ClickException(
                f"{where} does not reveal the Kafka connection's {masked[0]}, so the Schema Registry cannot be "
                "checked from here: run this command where the connection is readable (e.g. on the Airflow host), "
                + skip
            )
        registry = hook.schema_registry()
    except ValueError as err:  # a registry setting the connection's model refuses
        raise click.ClickException(f"Kafka: {err}") from None
    try:
        registry.check()
        if subject is not None:
            param = _param(ctx, "schema_subject")
            registered = registry.version(subject["subject"], subject["version"])
            if registered.schema_type not in ("AVRO", "JSON"):
                raise click.BadParameter(
                    f"{subject['subject']} version {subject['version']} is a {registered.schema_type} schema; "
                    "the columns of JSON events come from an Avro or JSON Schema",
                    param=param,
                )
            _check_columns(json.loads(registered.text), param)
    except UnknownSchema as err:
        raise click.BadParameter(f"{err} at {registry.url}", param=_param(ctx, "schema_subject")) from None
    except RegistryUnavailable as err:
        raise click.ClickException(f"{err}; nothing was created ({skip})") from None
    finally:
        registry.close()


def _only_connector(target: ConnectorStore) -> str:
    """The data connector an exporter writes to when none is named: the one there is."""
    existing = target.list()
    if len(existing) != 1:
        raise click.BadParameter(
            f"required: there are {len(existing)} data connectors "
            f"({', '.join(s.name for s in existing) or 'none'}); name one",
            param_hint="'--data-connector'",
        )
    return existing[0].name


def _new_exporter(ctx: click.Context, params: dict[str, Any], given_by: dict[str, str] | None = None) -> ExporterConfig:
    """The exporter the command's parameters describe, validated by the model its file is read with: a bad
    value is refused with the parameter that gave it (the field's own, or its parameter in ``given_by``) and
    the message its file would get for it."""
    # each parameter named as a field sets it; one not given leaves the field's default (the name's:
    # <data connector>-<stream>)
    given = {key: value for key, value in params.items() if value not in (None, "")}
    try:
        return ExporterConfig.model_validate({k: v for k, v in given.items() if k in ExporterConfig.model_fields})
    except ValidationError as err:
        field, message = next(iter(field_problems(err).items()))
        # the default name is checked once every field is valid, as the whole exporter's
        field = "name" if field == "(file)" else field
        if field in ("stream", "streams"):  # the STREAM... arguments give either
            raise click.BadParameter(message, ctx, param_hint="'STREAM'") from None
        param = _param(ctx, (given_by or {}).get(field, field))
        raise click.BadParameter(message, ctx, param) from None


def record_start(target: ConnectorStore, cfg: ExporterConfig, pinned: dict[int, int], topic_id: str | None) -> None:
    """Keep the pinned start as the exporter's record in Airflow, so its first run finds Kafka and Airflow
    agreeing. Where nothing was pinned (a fresh group that starts at the earliest offsets), a record left
    by an earlier exporter of the same name is removed: the first run would take it for offsets Kafka forgot."""
    from strm_provider import progress
    from strm_provider.planning import Progress

    key = progress.variable_key(cfg.group_id)
    if pinned:
        record = Progress(cfg.stream, dict(pinned), topic_id)
        target.set_variable(key, progress.dumps(record), progress.description(cfg.group_id))
    else:
        target.delete_variable(key)


def record_created(target: ConnectorStore, cfg: ExporterConfig) -> None:
    """Keep when an exporter of several streams was created as its record in Airflow: its first run exports every
    stream from its first event since then (or from the earliest, with ``include_existing_events``), whenever
    that run comes and whichever streams match by then."""
    import time

    from strm_provider import progress
    from strm_provider.planning import StreamsProgress

    record = StreamsProgress(int(time.time() * 1000))
    target.set_variable(progress.variable_key(cfg.group_id), progress.dumps(record), progress.description(cfg.group_id))


def forget_progress(target: ConnectorStore, configs: list[ExporterConfig]) -> list[str]:
    """Delete the exporters' records in Airflow; the names of those that had one."""
    from strm_provider import progress

    return [cfg.name for cfg in configs if target.delete_variable(progress.variable_key(cfg.group_id))]


def _connector_for(target: Any, cfg: ExporterConfig) -> Any:
    """The exporter's data connector: ours, which names its bucket, or an official provider's connection,
    for which the exporter names it (``--bucket``)."""
    from strm_provider.connection_types import PROVIDER_DATA_CONNECTORS
    from strm_provider.hooks import StorageError, check_bucket

    spec = target.get(cfg.data_connector)
    if spec is None or spec.conn_type not in PROVIDER_DATA_CONNECTORS:
        spec = data_connector(target, cfg.data_connector, "'--data-connector'")
    try:
        check_bucket(spec.name, spec.conn_type, cfg.bucket)
    except StorageError as err:
        raise click.BadParameter(str(err), param_hint="'--bucket'") from None
    return spec


def _exporter_table(items: list[dict[str, Any]]) -> None:
    emit_table(
        [
            "NAME",
            "STREAM",
            "DATA CONNECTOR",
            "INTERVAL",
            "PATH PREFIX",
            "VALUE FORMAT",
            "FILE FORMAT",
            "COMPRESSION",
            "FORMAT",
        ],
        [
            [
                i["ref"]["name"],
                _streams_shown(i["streamRef"]),
                i["dataConnectorRef"]["name"],
                i["interval"],
                i["pathPrefix"],
                i.get("valueFormat", "json"),
                i.get("fileFormat", "jsonl"),
                i.get("compression", "none"),
                i.get("format", "value"),
            ]
            for i in items
        ],
    )


class Invalid(NamedTuple):
    """An exporter file that does not validate, by the name ``strm`` gives it (its file name without the
    extension), and the DAG Airflow runs in its place."""

    name: str
    broken: BrokenExporter
    dag_id: str

    @property
    def reason(self) -> str:
        """Why the file is invalid, without the file's path in front (shown beside it)."""
        return self.broken.error.removeprefix(f"{self.broken.path}: ")


def invalid_exporters(loaded: LoadResult) -> dict[str, Invalid]:
    """Every broken file of ``loaded`` by its name, with the id the DAG file gives its stand-in DAG."""
    from strm_provider.dag_factory import broken_dag_ids

    ids = broken_dag_ids(loaded)
    invalid: dict[str, Invalid] = {}
    for broken in loaded.broken:
        invalid.setdefault(broken.path.stem, Invalid(broken.path.stem, broken, ids[broken.path]))
    return invalid


def describe_invalid(item: Invalid) -> dict[str, Any]:
    return {"ref": {"name": item.name}, "state": "INVALID", "file": str(item.broken.path), "error": item.reason}


def _invalid_table(items: list[dict[str, Any]]) -> None:
    emit_table(
        ["NAME", "STATE", "FILE", "PROBLEM"], [[i["ref"]["name"], i["state"], i["file"], i["error"]] for i in items]
    )


def _none_found() -> None:
    click.echo(f"No batch exporters in {exporters_dir()} (the folder set by STRM_EXPORTERS_DIR)", err=True)


@list_.command("batch-exporters")
@OUTPUT
def list_batch_exporters(output: str | None) -> None:
    """List batch exporters (the YAML files in the exporters folder); files that do not validate follow,
    each with the field and the reason (JSON: ``invalidBatchExporters``, present only when there are any)."""
    loaded = load_exporters()
    items = [describe(e.config) for e in sorted(loaded.configs.values(), key=lambda e: e.config.name)]
    invalid = [describe_invalid(i) for _, i in sorted(invalid_exporters(loaded).items())]
    if not items and not invalid:
        _none_found()
    if (output or "table") == "json":
        # a list of their own: a script reading batchExporters finds every documented key on every item
        emit_json({"batchExporters": items, **({"invalidBatchExporters": invalid} if invalid else {})})
        return
    if items or not invalid:
        _exporter_table(items)
    if invalid:
        if items:
            click.echo("")
        _invalid_table(invalid)


def _named(loaded: LoadResult, name: str) -> LoadedExporter | Invalid:
    """Exporter NAME, or the file of that name that does not validate; a bad parameter when there is neither."""
    if name in loaded.configs:
        return loaded.configs[name]
    invalid = invalid_exporters(loaded).get(name)
    if invalid is not None:
        return invalid
    names = ", ".join(sorted(loaded.configs)) or "none"
    raise click.BadParameter(f"no batch exporter named '{name}' (batch exporters: {names})", param_hint="'NAME'")


def _exporter(name: str) -> LoadedExporter:
    """Exporter NAME, which must be valid: a file that does not validate is named with its reason."""
    found = _named(load_exporters(), name)
    if isinstance(found, Invalid):
        raise click.ClickException(f"batch exporter '{name}' is invalid: {found.broken.path}: {found.reason}")
    return found


@get.command("batch-exporter")
@click.argument("name")
@OUTPUT
def get_batch_exporter(name: str, output: str | None) -> None:
    """Show batch exporter NAME."""
    show(describe(_exporter(name).config), output or "json", _exporter_table)


@delete.command("batch-exporter")
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@click.pass_context
def delete_batch_exporter(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Delete batch exporters and their progress records in Airflow; checks every NAME first, so nothing is
    deleted when one is unknown."""
    loaded = [_exporter(name) for name in dict.fromkeys(names)]
    # the records first: if Airflow refuses, nothing is deleted and the command can simply be run again
    recorded = forget_progress(store(ctx), [e.config for e in loaded])
    for exporter in loaded:
        with contextlib.suppress(FileNotFoundError):
            exporter.path.unlink()
    deleted = ", ".join(dict.fromkeys(names))
    click.echo(f"Batch Exporter{' has' if len(loaded) == 1 else 's have'} been deleted: {deleted}")
    if recorded:  # a line of its own: the first stays what scripts already read
        plural = len(recorded) > 1
        click.echo(
            f"Progress record{'s' if plural else ''} in Airflow {'have' if plural else 'has'} been deleted: "
            + ", ".join(recorded)
        )


@monitor.command("batch-exporter")
@click.argument("name", required=False)
@click.option("--watch", is_flag=True, help="Refresh until interrupted (Ctrl-C)")
@click.option("--every", type=click.IntRange(1), default=5, show_default=True, help="Seconds between refreshes")
@OUTPUT
@click.pass_context
def monitor_batch_exporter(ctx: click.Context, name: str | None, watch: bool, every: int, output: str | None) -> None:
    """Health of every batch exporter, or of NAME: state, last run, lag per partition; below the table, a
    run's plan not yet committed and offsets Kafka had forgotten that a run took from Airflow's record.

    The last run is the last one that ended, also while the next one runs: when it ended, its events, their
    JSON BYTES (the events as JSON Lines), STORED BYTES (the files as stored, compressed when they are) and
    DEAD LETTERS (records that were not events; below the table, how many each reason refused; JSON:
    lastRun.deadLetters and lastRun.deadLetterReasons).

    \b
    HEALTHY    the last run succeeded and ended within two intervals
    RUNNING    a run is going; when the last run failed, its failing task, when it failed and its
               error are shown
    RETRYING   a task failed and waits for its next try (the task, when it failed and its error
               are shown)
    UNHEALTHY  the last run failed (the failing task, when it failed and its error are shown), or
               no run ended for over two intervals
    INVALID    the exporter file does not validate (the file, the field and why are shown); Airflow
               runs a stand-in DAG whose one task fails, and nothing is exported until it is fixed
    PAUSED     paused in Airflow
    WAITING    no run yet
    """
    from strm_provider.cli.health import health_table
    from strm_provider.cli.runs import open_runs

    loaded = load_exporters()
    configs, invalid = _monitored(loaded, name)
    if name is None and not configs and not invalid:
        _none_found()
    runs = open_runs(store(ctx))
    while True:
        items = _health_items(ctx, runs, configs, invalid)
        if watch and (output or "table") == "table":
            click.clear()
        if (output or "table") == "json":
            emit_json(items[0] if name is not None else {"batchExporters": items})
        else:
            health_table(items)
        if not watch:
            return
        time.sleep(every)


def _monitored(loaded: LoadResult, name: str | None) -> tuple[list[ExporterConfig], list[Invalid]]:
    """The exporters to report on: NAME (valid or not), or every one."""
    if name is None:
        return [e.config for e in loaded.configs.values()], list(invalid_exporters(loaded).values())
    found = _named(loaded, name)
    return ([], [found]) if isinstance(found, Invalid) else ([found.config], [])


def _health_items(ctx: click.Context, runs: Any, configs: list[ExporterConfig], invalid: list[Invalid]) -> list[Any]:
    """Every row, valid exporters and invalid files together, by name."""
    from strm_provider.cli.health import invalid_report, report

    rows = [report(runs, store(ctx), cfg) for cfg in configs]
    rows += [invalid_report(runs, i.name, str(i.broken.path), i.reason, i.dag_id) for i in invalid]
    return sorted(rows, key=lambda row: row["ref"]["name"])


@reset.command("batch-exporter")
@click.argument("name")
@click.option("--to-earliest", is_flag=True, help="The earliest events the stream still holds")
@click.option("--to-latest", is_flag=True, help="The end of the stream: only events that arrive from now on")
@click.option(
    "--to-datetime",
    type=IsoDateTime(),
    help="The first event at or after this time (UTC unless it names an offset, e.g. 2026-12-04T10:00:00+01:00); "
    "a partition with no event since then goes to its end",
)
@click.option(
    "--to-offsets",
    type=PartitionOffsets(),
    help="PARTITION:OFFSET pairs, e.g. 0:120,1:98; partitions not given keep their offset",
)
@click.option("--stream", help="Which of its streams to move, for an exporter of several streams")
@click.option("--execute", is_flag=True, help="Apply the change (default: only show what it would do)")
@OUTPUT
@click.pass_context
def reset_batch_exporter(
    ctx: click.Context,
    name: str,
    stream: str | None,
    to_earliest: bool,
    to_latest: bool,
    to_datetime: datetime | None,
    to_offsets: dict[int, int] | None,
    execute: bool,
    output: str | None,
) -> None:
    """Move batch exporter NAME to another position in its stream: its next run exports from there.

    Give exactly one of --to-earliest, --to-latest, --to-datetime, --to-offsets. Without --execute nothing
    changes: per partition, it shows where the exporter stands in Kafka and in Airflow's record, where it
    would go, and how many events that exports again or skips. Refused while a run is in progress; pause
    the exporter first (`airflow dags pause strm_export_NAME`) so that no run starts meanwhile.
    """
    from strm_provider.cli.reset import choose, reset_exporter

    target = choose(to_earliest, to_latest, to_datetime, to_offsets)
    cfg = _exporter(name).config
    if cfg.several_streams and stream is None:
        raise click.UsageError(f"batch exporter '{name}' reads {cfg.describe_streams()}: name one with --stream")
    if stream is not None and not cfg.several_streams and stream != cfg.stream:
        raise click.BadParameter(f"batch exporter '{name}' reads stream '{cfg.stream}' only", param_hint="'--stream'")
    reset_exporter(store(ctx), cfg, target, execute=execute, output=output or "table", stream=stream)


def _dag_of(name: str) -> str:
    """The DAG of exporter NAME, or of the stand-in DAG Airflow runs for an invalid file of that name."""
    found = _named(load_exporters(), name)
    return found.dag_id if isinstance(found, Invalid) else found.config.dag_id


@logs.command("batch-exporter")
@click.argument("name")
@click.option("--run-id", help="The run whose logs to show (default: the latest)")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends")
@click.pass_context
def logs_batch_exporter(ctx: click.Context, name: str, run_id: str | None, follow: bool) -> None:
    """The task logs of batch exporter NAME's latest run (or --run-id): the plan, then every export.

    Read through Airflow's log reader (local) or its REST API (--airflow-url), secrets masked. For an
    exporter file that does not validate, the logs of the DAG Airflow runs in its place.
    """
    from strm_provider.cli.runs import open_runs, print_logs

    dag_id = _dag_of(name)
    runs = open_runs(store(ctx))
    run = runs.run(dag_id, run_id) if run_id else runs.latest(dag_id)
    if run is None:
        what = f"run '{run_id}'" if run_id else "run yet"
        raise click.ClickException(f"batch exporter '{name}' has no {what} (DAG {dag_id})")
    click.echo(f"run {run.run_id}: {run.state}")
    print_logs(runs, dag_id, run, follow)
