"""Exporter config files: defaults, and bad files that become failing DAGs of their own without breaking the others.

That the scheduler keeps running the valid exporters meanwhile is proven on the real DAG processor and
scheduler in ``test_stack.py``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from strm_provider.config import ConfigError, ExporterConfig, load_exporter, parse_interval


def test_defaults_follow_the_documentation() -> None:
    cfg = ExporterConfig(stream="demo", data_connector="s3")
    assert cfg.name == "s3-demo"  # <data_connector>-<stream>, as the documentation names it
    assert cfg.interval == 60 and cfg.partition_sets == 1 and cfg.path_prefix == ""
    assert cfg.kafka_connection == "strm_kafka_default" and cfg.include_existing_events is False
    assert cfg.dag_id == "strm_export_s3-demo" and cfg.group_id == "strm-exporter-s3-demo"


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("60", 60), (45, 45)])
def test_intervals(text: str | int, seconds: int) -> None:
    assert parse_interval(text) == seconds


def _bag(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRM_EXPORTERS_DIR", str(folder))
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    return bag.dags, bag.import_errors


BAD = {
    "missing.yaml": ("data_connector: s3\n", "field 'stream': required field is missing"),
    "unknown.yaml": ("stream: a\ndata_connector: s3\ncolour: red\n", "field 'colour': unknown field"),
    "interval.yaml": (
        "stream: a\ndata_connector: s3\nname: i\ninterval: 10x\n",
        "field 'interval': expected a duration",
    ),
    "dotdot.yaml": ("stream: a\ndata_connector: s3\nname: d\npath_prefix: a/../b\n", "field 'path_prefix'"),
    "slash.yaml": ("stream: a\ndata_connector: s3\nname: s\npath_prefix: /abs\n", "field 'path_prefix'"),
    "notyaml.yaml": ("stream: [unclosed\n", "not readable YAML"),
    "python.yaml": ("!!python/object/apply:os.system ['true']\n", "not readable YAML"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_refused_naming_file_and_field(tmp_path: Path, name: str) -> None:
    text, expected = BAD[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        load_exporter(tmp_path / name)
    assert str(tmp_path / name) in str(err.value) and expected in str(err.value)


def test_bad_files_are_failing_dags_and_good_dags_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s3-clicks.yaml").write_text("stream: clicks\ndata_connector: s3\npath_prefix: events\n")
    for name, (text, _) in BAD.items():
        (tmp_path / name).write_text(text)
    # claims the same default name; sorts first, yet the file named after the exporter keeps it
    (tmp_path / "dup.yaml").write_text("stream: clicks\ndata_connector: s3\npath_prefix: elsewhere\n")
    dags, errors = _bag(tmp_path, monkeypatch)
    assert errors == {}
    good = dags["strm_export_s3-clicks"]
    # one partition set: one task plans and exports
    assert good.max_active_runs == 1 and [t.task_id for t in good.tasks] == ["export"]
    assert good.get_task("export").path_prefix == "events" and good.get_task("export").partition_set is None
    for name, (_, expected) in {**BAD, "dup.yaml": ("", "field 'name': duplicate exporter name 's3-clicks'")}.items():
        dag = dags[f"strm_export_{Path(name).stem}"]
        assert [t.task_id for t in dag.tasks] == ["check_config"], name
        assert dag.schedule == timedelta(seconds=60) and not dag.catchup
        (error,) = dag.get_task("check_config").op_args
        assert str(tmp_path / name) in error and expected in error, (name, error)
        assert expected in dag.description
    # the broken file's own interval paces its failing DAG when that field is readable
    (tmp_path / "paced.yaml").write_text("stream: a\ninterval: 5m\n")
    assert _bag(tmp_path, monkeypatch)[0]["strm_export_paced"].schedule == timedelta(minutes=5)


def test_all_good_means_no_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.yaml").write_text("stream: a\ndata_connector: s3\ninterval: 5m\npartition_sets: 3\n")
    dags, errors = _bag(tmp_path, monkeypatch)
    dag = dags["strm_export_s3-a"]
    assert errors == {}
    assert dag.schedule == timedelta(minutes=5)
    assert [t.task_id for t in dag.tasks] == ["plan", "export"]
    assert "strm" in dag.tags and dag.catchup is False


def test_a_task_builds_only_its_own_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow parses the DAG file to run one task with the parsing context naming its DAG: only that
    exporter's file is read; its neighbours, broken ones included, cost nothing. Without a context (the DAG
    processor) every file is read; a stand-in for a broken file, or an exporter named otherwise than its file,
    still finds its DAG."""
    (tmp_path / "clicks.yaml").write_text("stream: clicks\ndata_connector: s3\nname: clicks\npartition_sets: 2\n")
    (tmp_path / "views.yaml").write_text("stream: views\ndata_connector: s3\nname: views\n")
    (tmp_path / "odd-file.yaml").write_text("stream: odd\ndata_connector: s3\nname: odd\n")
    (tmp_path / "broken.yaml").write_text("stream: [unclosed\n")
    everything = {"strm_export_clicks", "strm_export_views", "strm_export_odd", "strm_export_broken"}
    assert {d for d in _bag(tmp_path, monkeypatch)[0] if d.startswith("strm_")} == everything
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "export")
    for dag_id, built in (
        ("strm_export_clicks", {"strm_export_clicks"}),
        ("strm_export_views", {"strm_export_views"}),
        ("strm_export_odd", everything),
        ("strm_export_broken", everything),
    ):
        monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)
        dags, errors = _bag(tmp_path, monkeypatch)
        assert {d for d in dags if d.startswith("strm_")} == built and errors == {}, dag_id
        assert dag_id in dags
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "strm_export_clicks")
    assert [t.task_id for t in _bag(tmp_path, monkeypatch)[0]["strm_export_clicks"].tasks] == ["plan", "export"]


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "a//b", "a/b*", "events/{day}", "events/{hour"])
@pytest.mark.parametrize("operator", ["plan", "export"])
def test_an_operator_refuses_a_prefix_for_the_reason_an_exporter_file_gives(
    tmp_path: Path, prefix: str, operator: str
) -> None:
    from strm_provider.operators import KafkaExportPlanOperator, KafkaToStorageOperator

    (tmp_path / "p.yaml").write_text(f"stream: a\ndata_connector: s3\npath_prefix: '{prefix}'\n")
    with pytest.raises(ConfigError) as from_file:
        load_exporter(tmp_path / "p.yaml")
    reason = str(from_file.value).partition("field 'path_prefix': ")[2]
    assert reason, str(from_file.value)
    cls = KafkaExportPlanOperator if operator == "plan" else KafkaToStorageOperator
    task = cls(task_id=operator, stream="a", storage_conn_id="s3", group_id="g", path_prefix=prefix)
    with pytest.raises(ValueError) as from_operator:
        task.execute({})  # refused before any connection is looked up
    assert str(from_operator.value) == f"path_prefix: {reason}"
