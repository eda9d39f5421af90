"""The ``strm`` command line: data connectors, batch exporters and streams, managing what Airflow runs.

Data connectors are Airflow connections (local metadata database, or a remote Airflow's REST API);
batch exporters are YAML files in the folder the DAG file reads. Errors are one line: bad input
exits 2 naming the argument, a refusal by the outside world (storage, Kafka, Airflow) exits 1.
"""

from __future__ import annotations

import os
import sys

import click

__all__ = ["main"]


def _quiet_airflow() -> None:
    """Airflow logs INFO lines on import; a CLI prints only its answer (and never a credential)."""
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def _airflow_logs_to_stderr() -> None:
    """Airflow's own log lines (a log it could not fetch, say) go to stderr: stdout holds only the answer,
    which scripts parse (``-o json``)."""
    import logging

    import airflow  # noqa: F401  (configures logging on import)

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``strm`` console script."""
    _quiet_airflow()
    _airflow_logs_to_stderr()
    from strm_provider.cli import batch_exporters, data_connectors, streams  # noqa: F401  (they add the commands)
    from strm_provider.cli.app import cli

    try:
        cli.main(args=argv, prog_name="strm", standalone_mode=False)
    except click.UsageError as err:
        click.echo(f"Error: {err.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"Error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except click.Abort:
        click.echo("Aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    return 0
