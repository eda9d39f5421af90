"""The ``strm`` command line: data connectors, batch exporters and streams, managing what Airflow runs.

Data connectors are Airflow connections (local metadata database, or a remote Airflow's REST API);
batch exporters are YAML files in the folder the DAG file reads. Errors are one line: bad input
exits 2 naming the argument, a refusal by the outside world (storage, Kafka, Airflow) exits 1.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

__all__ = ["main"]


def _quiet_airflow() -> None:
    """Airflow logs INFO lines on import; a CLI prints only its answer (and never a credential)."""
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def _airflow_logs_to_stderr() -> None:
    """Airflow's own log lines (a log it could not fetch, say) go to stderr: stdout holds only the answer,
    which scripts parse (``-o json``)."""
    import airflow  # noqa: F401  (configures logging on import)

    if not sys.warnoptions:
        # Airflow turns its deprecation warnings on when imported (some, about moved imports, are FutureWarnings);
        # they speak to DAG authors, not to people running strm (Python's -W or PYTHONWARNINGS still shows them)
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category)

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            # a new handler rather than setStream: some of Airflow's console handlers pick their stream
            # themselves each time they write
            to_stderr = logging.StreamHandler(sys.stderr)
            to_stderr.setLevel(handler.level)
            to_stderr.setFormatter(handler.formatter)
            root.removeHandler(handler)
            root.addHandler(to_stderr)
            handler = to_stderr
        handler.addFilter(_one_line)


def _one_line(record: logging.LogRecord) -> bool:
    """An error Airflow logs while the CLI reads (a worker's log server that does not answer, say) is one
    line with its cause, not a traceback: ``strm`` speaks to people, and the cause is all they can act on."""
    if record.exc_info and record.exc_info[1] is not None:
        err = record.exc_info[1]
        record.msg, record.args = f"{record.getMessage()}: {type(err).__name__}: {err}", None
        record.exc_info = record.exc_text = None
    return True


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
