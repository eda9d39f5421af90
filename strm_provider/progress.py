"""Where an exporter's progress is kept in Airflow: one Variable per exporter, beside Kafka's offsets.

Kafka forgets a group's committed offsets ``offsets.retention.minutes`` (7 days by default) after
their last commit; Airflow's metadata database does not. The plan task keeps there, before anything
is uploaded, the offsets it planned from and the plan in flight (:class:`~strm_provider.planning.Progress`),
so a run never takes "no offsets in Kafka" for "new exporter" and a failed run is replayed whole.
Tasks reach the Variable through Airflow's ``Variable`` (the Task SDK's on Airflow 3); the CLI through its
store (local database or REST API).
"""

from __future__ import annotations

import json
from typing import Any

from strm_provider.planning import PlanRefused, Progress, StreamsProgress

#: an exporter's record: of its one stream, or of each of its streams
Record = Progress | StreamsProgress

#: the Variable of the exporter whose consumer group is ``<group id>`` is ``strm.progress.<group id>``
KEY_PREFIX = "strm.progress."


def variable_key(group_id: str) -> str:
    return f"{KEY_PREFIX}{group_id}"


def description(group_id: str) -> str:
    return f"Where the batch exporter of Kafka group '{group_id}' stands; kept by its runs, moved by `strm reset`."


def parse(raw: str | None, key: str) -> Record | None:
    """The record stored under ``key`` (``None`` when there is none); one line naming the Variable when unreadable."""
    if raw is None or raw == "":
        return None
    try:
        data: Any = json.loads(raw)
        return StreamsProgress.from_json(data) if "streams" in data else Progress.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise PlanRefused(
            f"Airflow Variable '{key}': expected the exporter's progress record (JSON with stream, committed "
            f"and plan), got something else ({type(err).__name__}: {err}); delete it and settle the exporter "
            "with `strm reset batch-exporter NAME`"
        ) from None


def dumps(record: Record) -> str:
    return json.dumps(record.to_json(), separators=(",", ":"))


def load(group_id: str) -> Record | None:
    """The exporter's record, read in a task (through the Task SDK on Airflow 3)."""
    from airflow.providers.common.compat.sdk import Variable

    key = variable_key(group_id)
    # the default by position: Airflow 3 names it ``default``, Airflow 2 ``default_var``
    return parse(Variable.get(key, None), key)


def save(group_id: str, record: Record) -> None:
    """Keep the exporter's record, from a task (through the Task SDK on Airflow 3)."""
    from airflow.providers.common.compat.sdk import Variable

    Variable.set(variable_key(group_id), dumps(record), description=description(group_id))
