"""``strm create|list|get|delete data-connector``: data connectors as Airflow connections.

What a connector is made of (flags, credential files, the JSON ``strm`` prints) is
:mod:`strm_provider.cli.connector_specs`; where it is stored, :mod:`strm_provider.cli.store`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from strm_provider.cli import connector_specs as dc
from strm_provider.cli.app import VALIDATE, create, delete, get, list_, show, store, validated
from strm_provider.cli.output import OUTPUT, emit_json, emit_table
from strm_provider.cli.store import ConnectorStore, Duplicate
from strm_provider.config import load_exporters
from strm_provider.connection_settings import SSE_CHOICES
from strm_provider.naming import EXTENSIONS


@create.command("data-connector")
@click.argument("kind", metavar="TYPE", type=click.Choice(dc.KINDS))
@click.argument("name")
@click.argument("bucket", metavar="BUCKET")
@click.option(
    "--credentials-file",
    type=click.Path(dir_okay=False),
    help="s3: aws iam create-access-key output or S3-compatible JSON (none: AWS S3 as the worker's own "
    "identity, from the AWS default credential chain); gcs: service-account key (none: Application Default "
    "Credentials)",
)
@click.option("--assume-role-arn", help="s3: a role to assume for writing")
@click.option("--endpoint-url", help="s3/gcs: a private endpoint (or a local test server)")
@click.option("--region", help="s3: the bucket's region (else found with GetBucketLocation)")
@click.option(
    "--sse",
    type=click.Choice(SSE_CHOICES),
    help="s3 (AWS): server-side encryption of every object written (none: the bucket's default)",
)
@click.option("--kms-key-id", help="s3 (AWS) with --sse aws:kms: the KMS key id or ARN (else the aws/s3 key)")
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
    help="Where validation writes (and Airflow's Test button): an exporter's path prefix, {date}/{hour} "
    "included, e.g. events/dt={date}",
)
@click.option(
    "--test-compression",
    type=click.Choice(list(EXTENSIONS)),
    default="none",
    show_default=True,
    help="The ending of the validation file (and the Test button's): that of the exporters' files, "
    ".jsonl, .jsonl.gz, .jsonl.zst or .parquet",
)
@VALIDATE
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
    spec = _spec(kind, name, bucket, opts)
    spec.extra |= {"test_prefix": test_prefix} if test_prefix else {}
    spec.extra |= {"test_compression": opts["test_compression"]} if opts["test_compression"] != "none" else {}
    spec.checked()
    target = store(ctx)
    if target.get(name) is not None:
        raise click.BadParameter(
            f"a connection named '{name}' already exists in the {target.where}", param_hint="'NAME'"
        )
    if opts["validate"]:
        from strm_provider.cli.store import validate_new

        validated(lambda: validate_new(spec, test_prefix, compression=opts["test_compression"]), name)
    try:
        target.create(spec)
    except Duplicate:
        raise click.BadParameter(
            f"a connection named '{name}' already exists in the {target.where}", param_hint="'NAME'"
        ) from None
    show(spec.describe(), opts["output"] or "json", _connector_table)


def _spec(kind: str, name: str, bucket: str, opts: dict[str, Any]) -> dc.ConnectorSpec:
    """The connection ``strm create data-connector KIND`` describes with its flags and credentials file."""
    creds = dc.read_credentials(opts["credentials_file"]) if opts["credentials_file"] else None
    if kind == "s3":
        options = ("assume_role_arn", "endpoint_url", "region", "sse", "kms_key_id")
        given = {"role_arn" if key == "assume_role_arn" else key: opts[key] for key in options}
        return dc.s3_spec(name, bucket, creds, **given)
    if kind == "gcs":
        return dc.gcs_spec(name, bucket, creds, endpoint_url=opts["endpoint_url"])
    return dc.azure_spec(
        name,
        bucket,
        account_uri=opts["storage_account_uri"],
        tenant_id=opts["tenant_id"],
        client_id=opts["client_id"],
        client_secret=opts["client_secret"],
    )


_ONLY = {
    "assume_role_arn": ("s3",),
    "region": ("s3",),
    "sse": ("s3",),
    "kms_key_id": ("s3",),
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


def _connector_table(items: list[dict[str, Any]]) -> None:
    rows = []
    for item in items:
        if "s3Bucket" in item:
            rows.append([item["ref"]["name"], "s3", item["s3Bucket"]["bucketName"], ""])
        elif "googleCloudStorageBucket" in item:
            rows.append([item["ref"]["name"], "gcs", item["googleCloudStorageBucket"]["bucketName"], ""])
        elif "error" in item:
            rows.append([item["ref"]["name"], "?", "", item["error"]])
        else:
            box = item.get("azureBlobStorageContainer", {})
            rows.append(
                [item["ref"]["name"], "azure-blob-storage", box.get("containerName", ""), box.get("storageAccountUri")]
            )
    emit_table(["NAME", "TYPE", "BUCKET/CONTAINER", "STORAGE ACCOUNT"], rows)


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


def data_connector(target: ConnectorStore, name: str, hint: str = "'NAME'") -> dc.ConnectorSpec:
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
    show(data_connector(store(ctx), name).describe(), output or "json", _connector_table)


@delete.command("data-connector")
@click.argument("name")
@click.option("--recursive", is_flag=True, help="Also delete the batch exporters that use it")
@click.pass_context
def delete_data_connector(ctx: click.Context, name: str, recursive: bool) -> None:
    """Delete data connector NAME; refuses while batch exporters use it, unless --recursive."""
    target = store(ctx)
    data_connector(target, name)
    exporters = sorted(
        (e for e in load_exporters().configs.values() if e.config.data_connector == name), key=lambda e: e.config.name
    )
    dependents = [(e.config.name, e.path) for e in exporters]
    if dependents and not recursive:
        raise click.BadParameter(
            f"data connector '{name}' is used by batch exporters {', '.join(n for n, _ in dependents)}; "
            "delete them first, or pass --recursive to delete them too",
            param_hint="'NAME'",
        )
    from strm_provider.cli.batch_exporters import forget_progress

    for _, path in dependents:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    forgotten = forget_progress(target, [e.config for e in exporters])
    target.delete(name)
    if dependents:
        names = ", ".join(n for n, _ in dependents)
        click.echo(f"Data Connector and dependent entities have been deleted: {name} (batch exporters {names})")
    else:
        click.echo(f"Data Connector has been deleted: {name}")
    if forgotten:
        click.echo(f"Progress record in Airflow has been deleted: {', '.join(forgotten)}")
