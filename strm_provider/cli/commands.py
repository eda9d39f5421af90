"""The ``strm`` commands, on top of Airflow connections and exporter YAML files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from strm_provider.cli import connectors as dc
from strm_provider.cli import exporters as bx
from strm_provider.cli.output import OUTPUT, emit_json, emit_table
from strm_provider.cli.store import ConnectorStore, Duplicate, open_store
from strm_provider.config import LoadedExporter, exporters_dir

#: the DAG file ``strm install-dag`` copies, as this package ships it
DAG_FILE = Path(__file__).resolve().parent.parent / "dags" / "strm_exporters.py"

KAFKA_CONNECTION = click.option(
    "--kafka-connection",
    default="strm_kafka_default",
    show_default=True,
    help="Airflow connection (type strm_kafka) of the Kafka cluster",
)
NO_VALIDATE = click.option(
    "--validate/--no-validate",
    default=True,
    help="Write the empty .strm_test_<uuid>.jsonl to prove the credentials (default: on)",
)


def store(ctx: click.Context) -> ConnectorStore:
    """The connector store, opened once per invocation (local database or remote REST API)."""
    root = ctx.find_root()
    if "store" not in root.meta:
        root.meta["store"] = open_store(root.params.get("airflow_url"))
    return root.meta["store"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--airflow-url",
    envvar="STRM_AIRFLOW_URL",
    metavar="URL",
    help="Manage a remote Airflow through its REST API (token in STRM_AIRFLOW_TOKEN, or "
    "STRM_AIRFLOW_USERNAME/STRM_AIRFLOW_PASSWORD); default: the local Airflow metadata database",
)
@click.version_option(package_name="strm-airflow-provider")
def cli(airflow_url: str | None) -> None:
    """Data connectors and batch exporters, run by Airflow."""


@cli.group()
def create() -> None:
    """Create a data connector, a batch exporter or a stream."""


@cli.group(name="list")
def list_() -> None:
    """List data connectors or batch exporters."""


@cli.group()
def get() -> None:
    """Show one data connector or batch exporter."""


@cli.group()
def delete() -> None:
    """Delete data connectors or batch exporters."""


@cli.group()
def simulate() -> None:
    """Produce demo events."""


# ----- data connectors --------------------------------------------------------------------------
@create.command("data-connector")
@click.argument("kind", metavar="TYPE", type=click.Choice(dc.KINDS))
@click.argument("name")
@click.argument("bucket", metavar="BUCKET")
@click.option(
    "--credentials-file",
    type=click.Path(dir_okay=False),
    help="s3: aws iam create-access-key output or S3-compatible JSON; gcs: service-account key",
)
@click.option("--assume-role-arn", help="s3: a role to assume for writing")
@click.option("--endpoint-url", help="s3/gcs: a private endpoint (or a local test server)")
@click.option("--region", help="s3: the bucket's region (else found with GetBucketLocation)")
@click.option("--storage-account-uri", help="azure-blob-storage: e.g. https://foo.blob.core.windows.net")
@click.option("--tenant-id", help="azure-blob-storage: the tenant ID")
@click.option("--client-id", help="azure-blob-storage: the application (client) ID")
@click.option(
    "--client-secret",
    envvar="STRM_AZURE_CLIENT_SECRET",
    help="azure-blob-storage: the client secret (or env STRM_AZURE_CLIENT_SECRET)",
)
@click.option(
    "--test-prefix",
    default="",
    help="Where validation writes (and Airflow's Test button): the path prefix your policy allows",
)
@NO_VALIDATE
@OUTPUT
@click.pass_context
def create_data_connector(ctx: click.Context, kind: str, name: str, bucket: str, **opts: Any) -> None:
    """Create data connector NAME of TYPE (s3, gcs, azure-blob-storage) for BUCKET (or container)."""
    from strm_provider.config import check_prefix

    dc.check_name(name)
    try:
        test_prefix = check_prefix(opts["test_prefix"])
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--test-prefix'") from None
    _only_for(kind, opts)
    if kind == "s3":
        spec = dc.s3_spec(
            name,
            bucket,
            dc.read_credentials(opts["credentials_file"]),
            role_arn=opts["assume_role_arn"],
            endpoint_url=opts["endpoint_url"],
            region=opts["region"],
        )
    elif kind == "gcs":
        spec = dc.gcs_spec(
            name, bucket, dc.read_credentials(opts["credentials_file"]), endpoint_url=opts["endpoint_url"]
        )
    else:
        spec = dc.azure_spec(
            name,
            bucket,
            account_uri=opts["storage_account_uri"],
            tenant_id=opts["tenant_id"],
            client_id=opts["client_id"],
            client_secret=opts["client_secret"],
        )
    if test_prefix:
        spec.extra["test_prefix"] = test_prefix
    target = store(ctx)
    if target.get(name) is not None:
        raise click.BadParameter(
            f"a connection named '{name}' already exists in the {target.where}", param_hint="'NAME'"
        )
    if opts["validate"]:
        from strm_provider.cli.store import validate_new

        _validated(lambda: validate_new(spec, test_prefix), name, "--test-prefix")
    try:
        target.create(spec)
    except Duplicate:
        raise click.BadParameter(
            f"a connection named '{name}' already exists in the {target.where}", param_hint="'NAME'"
        ) from None
    _show(spec.describe(), opts["output"] or "json", _connector_table)


_ONLY = {
    "assume_role_arn": ("s3",),
    "region": ("s3",),
    "endpoint_url": ("s3", "gcs"),
    "credentials_file": ("s3", "gcs"),
    "storage_account_uri": ("azure-blob-storage",),
    "tenant_id": ("azure-blob-storage",),
    "client_id": ("azure-blob-storage",),
    "client_secret": ("azure-blob-storage",),
}


def _only_for(kind: str, opts: dict[str, Any]) -> None:
    for key, kinds in _ONLY.items():
        if opts.get(key) and kind not in kinds:
            flag = "--" + key.replace("_", "-")
            if key == "client_secret":
                continue  # may come from the environment; ignored for other types
            raise click.BadParameter(f"only applies to {' and '.join(kinds)} connectors", param_hint=f"'{flag}'")


def _validated(write: Any, name: str, prefix_flag: str) -> str:
    """Run the validation write; a failure becomes one line naming the connector and the cause."""
    from strm_provider.hooks import StorageError

    try:
        return write()
    except StorageError as err:
        raise click.ClickException(
            f"validation of data connector '{name}' failed, nothing was created: {err} "
            f"(fix the credentials or {prefix_flag}, or skip the check with --no-validate)"
        ) from None
    except Exception as err:
        raise click.ClickException(
            f"validation of data connector '{name}' failed, nothing was created: {type(err).__name__} "
            "(or skip the check with --no-validate)"
        ) from None


def _connector_table(items: list[dict[str, Any]]) -> None:
    rows = []
    for item in items:
        if "s3Bucket" in item:
            rows.append([item["ref"]["name"], "s3", item["s3Bucket"]["bucketName"], ""])
        elif "googleCloudStorageBucket" in item:
            rows.append([item["ref"]["name"], "gcs", item["googleCloudStorageBucket"]["bucketName"], ""])
        else:
            box = item.get("azureBlobStorageContainer", {})
            rows.append(
                [item["ref"]["name"], "azure-blob-storage", box.get("containerName", ""), box.get("storageAccountUri")]
            )
    emit_table(["NAME", "TYPE", "BUCKET/CONTAINER", "STORAGE ACCOUNT"], rows)


def _show(item: dict[str, Any], output: str, table: Any) -> None:
    if output == "json":
        emit_json(item)
    else:
        table([item])


@list_.command("data-connectors")
@OUTPUT
@click.pass_context
def list_data_connectors(ctx: click.Context, output: str | None) -> None:
    """List data connectors (Airflow connections of the strm_* storage types)."""
    items = [spec.describe() for spec in store(ctx).list()]
    if (output or "table") == "json":
        emit_json({"dataConnectors": items})
    else:
        _connector_table(items)


def _connector(target: ConnectorStore, name: str, hint: str = "'NAME'") -> dc.ConnectorSpec:
    spec = target.get(name)
    if spec is None or spec.conn_type not in dc.CONN_TYPES:
        names = ", ".join(s.name for s in target.list()) or "none"
        what = (
            "no data connector"
            if spec is None
            else f"connection '{name}' (type {spec.conn_type}) is not a data connector;"
        )
        raise click.BadParameter(
            f"{what} named '{name}' in the {target.where} (data connectors: {names})"
            if spec is None
            else f"{what} expected one of types {', '.join(dc.CONN_TYPES)}",
            param_hint=hint,
        )
    return spec


@get.command("data-connector")
@click.argument("name")
@OUTPUT
@click.pass_context
def get_data_connector(ctx: click.Context, name: str, output: str | None) -> None:
    """Show data connector NAME (never its credentials)."""
    _show(_connector(store(ctx), name).describe(), output or "json", _connector_table)


@delete.command("data-connector")
@click.argument("name")
@click.option("--recursive", is_flag=True, help="Also delete the batch exporters that use it")
@click.pass_context
def delete_data_connector(ctx: click.Context, name: str, recursive: bool) -> None:
    """Delete data connector NAME; refuses while batch exporters use it, unless --recursive."""
    target = store(ctx)
    _connector(target, name)
    dependents = sorted((cfg.name, path) for path, cfg in bx.load().configs.values() if cfg.data_connector == name)
    if dependents and not recursive:
        raise click.BadParameter(
            f"data connector '{name}' is used by batch exporters {', '.join(n for n, _ in dependents)}; "
            "delete them first, or pass --recursive to delete them too",
            param_hint="'NAME'",
        )
    for _, path in dependents:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    target.delete(name)
    if dependents:
        names = ", ".join(n for n, _ in dependents)
        click.echo(f"Data Connector and dependent entities have been deleted: {name} (batch exporters {names})")
    else:
        click.echo(f"Data Connector has been deleted: {name}")


# ----- batch exporters --------------------------------------------------------------------------
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
    loaded = bx.load()
    if cfg.name in loaded.configs or bx.path_for(cfg).exists():
        raise click.BadParameter(
            f"a batch exporter named '{cfg.name}' exists already"
            + ("" if opts["name"] else "; choose another with --name"),
            param_hint="'--name'",
        )
    spec = _connector(target, cfg.data_connector, "'--data-connector'")
    from strm_provider.cli.kafka import check_stream, kafka_hook, pin_start

    hook = kafka_hook(target, cfg.kafka_connection)
    check_stream(hook, cfg.stream)
    if opts["validate"]:
        _validated(lambda: target.write_test_file(spec, cfg.path_prefix), spec.name, "--path-prefix")
    pin_start(hook, cfg.stream, cfg.group_id, include_existing_events=cfg.include_existing_events)
    cfg = cfg.model_copy(update={"asset_uri": spec.asset_uri(cfg.path_prefix)})
    bx.write(cfg)
    _show(bx.describe(cfg), opts["output"] or "json", _exporter_table)


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
    loaded = bx.load()
    _warn_broken(loaded.errors)
    items = [bx.describe(e.config) for e in sorted(loaded.configs.values(), key=lambda e: e.config.name)]
    if not items:
        click.echo(f"No batch exporters in {bx.folder()} (the folder set by STRM_EXPORTERS_DIR)", err=True)
    if (output or "table") == "json":
        emit_json({"batchExporters": items})
    else:
        _exporter_table(items)


def _exporter(name: str) -> LoadedExporter:
    loaded = bx.load()
    if name not in loaded.configs:
        names = ", ".join(sorted(loaded.configs)) or "none"
        raise click.BadParameter(f"no batch exporter named '{name}' (batch exporters: {names})", param_hint="'NAME'")
    return loaded.configs[name]


@get.command("batch-exporter")
@click.argument("name")
@OUTPUT
def get_batch_exporter(name: str, output: str | None) -> None:
    """Show batch exporter NAME."""
    _show(bx.describe(_exporter(name).config), output or "json", _exporter_table)


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


# ----- streams and demo events --------------------------------------------------------------------
def _kafka_hook(ctx: click.Context, kafka_connection: str, bootstrap_servers: str | None) -> Any:
    """The hook every Kafka client of a command comes from: the Kafka connection's, or PLAINTEXT brokers."""
    from strm_provider.cli.kafka import kafka_hook, plaintext_hook

    hook = plaintext_hook(bootstrap_servers) if bootstrap_servers else kafka_hook(store(ctx), kafka_connection)
    try:
        hook.client_config()
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--kafka-connection'") from None
    return hook


BOOTSTRAP = click.option(
    "--bootstrap-servers", metavar="HOST:PORT,...", help="Use these brokers instead of the Kafka connection (PLAINTEXT)"
)
STREAM_NAME = click.argument("stream")


def _check_stream(stream: str) -> str:
    from strm_provider.config import TOPIC_RE

    if not TOPIC_RE.match(stream):
        raise click.BadParameter(
            f"expected a Kafka topic name (letters, digits, '.', '_', '-'), got {stream!r}", param_hint="'STREAM'"
        )
    return stream


@create.command("stream")
@STREAM_NAME
@click.option("--partitions", type=click.IntRange(1, 10_000), default=5, show_default=True)
@KAFKA_CONNECTION
@BOOTSTRAP
@click.pass_context
def create_stream_cmd(
    ctx: click.Context, stream: str, partitions: int, kafka_connection: str, bootstrap_servers: str | None
) -> None:
    """Create STREAM (a Kafka topic) on the cluster of the Kafka connection."""
    from strm_provider.cli.kafka import client, create_stream

    _check_stream(stream)
    hook = _kafka_hook(ctx, kafka_connection, bootstrap_servers)
    admin = client(hook.admin)
    try:
        if not create_stream(admin, stream, partitions):
            raise click.BadParameter(f"stream '{stream}' exists already", param_hint="'STREAM'")
    finally:
        admin.close()
    emit_json({"ref": {"name": stream}, "partitions": partitions})


@simulate.command("random-events")
@STREAM_NAME
@click.option("--rate", type=click.FloatRange(min=0.001), default=10.0, show_default=True, help="Events per second")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events (default: until Ctrl-C)")
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="Partitions of the stream when it has to be created",
)
@KAFKA_CONNECTION
@BOOTSTRAP
@click.pass_context
def random_events(
    ctx: click.Context,
    stream: str,
    rate: float,
    count: int | None,
    partitions: int,
    kafka_connection: str,
    bootstrap_servers: str | None,
) -> None:
    """Send random clickstream events to STREAM (created if missing)."""
    from strm_provider.cli.kafka import client, create_stream, partitions_of, simulate

    _check_stream(stream)
    hook = _kafka_hook(ctx, kafka_connection, bootstrap_servers)
    consumer = client(hook.consumer)
    try:
        existing = partitions_of(consumer, stream)
    finally:
        consumer.close()
    if not existing:
        admin = client(hook.admin)
        try:
            create_stream(admin, stream, partitions)
        finally:
            admin.close()
        click.echo(f"created stream '{stream}' with {partitions} partitions", err=True)
        existing = list(range(partitions))
    producer = client(hook.producer)
    try:
        simulate(producer, stream, existing, rate=rate, count=count)
    finally:
        producer.close()


@cli.command("install-dag")
@click.argument("dags_folder", required=False, type=click.Path(file_okay=False, path_type=Path))
def install_dag(dags_folder: Path | None) -> None:
    """Copy the DAG file that runs every batch exporter into DAGS_FOLDER (default: Airflow's [core] dags_folder).

    Run it again after upgrading this package: the file is overwritten with the installed version.
    """
    if dags_folder is None:
        from airflow.configuration import conf

        dags_folder = Path(conf.get("core", "dags_folder"))
    dags_folder.mkdir(parents=True, exist_ok=True)
    target = dags_folder / DAG_FILE.name
    target.write_bytes(DAG_FILE.read_bytes())
    click.echo(f"Wrote {target}; it reads batch exporters from {exporters_dir(dags_folder)}")
