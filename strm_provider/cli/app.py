"""The ``strm`` command line's frame: the root group, its verbs, the options and helpers every noun shares.

The commands live with what users name: :mod:`~strm_provider.cli.data_connectors`,
:mod:`~strm_provider.cli.batch_exporters` and :mod:`~strm_provider.cli.streams`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from strm_provider.cli.output import emit_json
from strm_provider.cli.store import ConnectorStore, open_store
from strm_provider.config import exporters_dir
from strm_provider.connection_types import KAFKA_DEFAULT

#: the DAG file ``strm install-dag`` copies, as this package ships it
DAG_FILE = Path(__file__).resolve().parent.parent / "dags" / "strm_exporters.py"

KAFKA_CONNECTION = click.option(
    "--kafka-connection",
    default=KAFKA_DEFAULT,
    show_default=True,
    help="Airflow connection (type strm_kafka) of the Kafka cluster",
)
VALIDATE = click.option(
    "--validate/--no-validate",
    default=True,
    help="Write the empty .strm_test_<uuid>.jsonl (an exporter's: with its files' ending) to prove the "
    "credentials, and for an exporter that reads schemas, check the Schema Registry (default: on)",
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
    help="Manage a remote Airflow through its REST API, v2 on Airflow 3 or v1 on Airflow 2 as the server has "
    "(token in STRM_AIRFLOW_TOKEN, or STRM_AIRFLOW_USERNAME/STRM_AIRFLOW_PASSWORD: exchanged for a JWT on "
    "Airflow 3, HTTP basic auth on Airflow 2); default: the local Airflow metadata database",
)
@click.version_option(package_name="strm-airflow-provider")
def cli(airflow_url: str | None) -> None:
    """Data connectors and batch exporters, run by Airflow."""


def _verb(name: str, help_text: str) -> click.Group:
    """A verb of ``strm``: a group whose commands are the nouns it acts on, each added by the noun's module."""
    group = click.Group(name, help=help_text)
    cli.add_command(group)
    return group


create = _verb("create", "Create a data connector, a batch exporter or a stream.")
list_ = _verb("list", "List data connectors or batch exporters.")
get = _verb("get", "Show one data connector or batch exporter.")
delete = _verb("delete", "Delete data connectors or batch exporters.")
reset = _verb("reset", "Move a batch exporter to another position in its stream.")
simulate = _verb("simulate", "Produce demo events.")
monitor = _verb("monitor", "Show the health of batch exporters.")
logs = _verb("logs", "Show the task logs of a batch exporter's runs.")


def validated(write: Any, name: str, what: str = "") -> str:
    """Run the validation write; a failure becomes one line naming the connector and the cause (which names
    the object refused, or the bucket where the bucket is the cause), and ``what`` the file stood for."""
    from strm_provider.hooks import StorageError

    try:
        return write()
    except StorageError as err:
        raise click.ClickException(
            f"validation of data connector '{name}' failed, nothing was created: {err} "
            f"({what + '; ' if what else ''}or skip the check with --no-validate)"
        ) from None
    except Exception as err:
        raise click.ClickException(
            f"validation of data connector '{name}' failed, nothing was created: {type(err).__name__} "
            "(or skip the check with --no-validate)"
        ) from None


def show(item: dict[str, Any], output: str, table: Any) -> None:
    if output == "json":
        emit_json(item)
    else:
        table([item])


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
