"""The provider as Airflow sees it: registered, its connection types usable from the CLI and the UI form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_VERSION
from tests.exporting import DAGBAG_MODULE, exporter_dag

pytestmark = pytest.mark.compat

AIRFLOW = str(Path(sys.executable).parent / "airflow")
TYPES = ["strm_kafka", "strm_s3", "strm_s3_compatible", "strm_gcs", "strm_azure_blob"]


def airflow(*args: str) -> str:
    done = subprocess.run([AIRFLOW, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def airflow_json(*args: str) -> Any:
    """What ``airflow ... -o json`` prints, without the log lines some lines print before it on stdout
    (Airflow 2's start with ``[<time>]``, so the JSON is the line that decodes to the end of the output)."""
    out = airflow(*args, "-o", "json")
    for start in (0, *(i + 1 for i, char in enumerate(out) if char == "\n")):
        if out[start : start + 1] in ("[", "{"):
            try:
                value, end = json.JSONDecoder().raw_decode(out, start)
            except ValueError:
                continue
            if not out[end:].strip():
                return value
    raise AssertionError(f"no JSON in the output of airflow {' '.join(args)}: {out[-2000:]}")


def test_providers_list_shows_the_provider() -> None:
    providers = airflow_json("providers", "list")
    ours = [p for p in providers if p["package_name"] == "strm-airflow-provider"]
    assert ours and ours[0]["version"] == "0.1.0"


def test_connection_types_are_registered_with_their_hooks() -> None:
    hooks = airflow_json("providers", "hooks")
    by_type = {h["connection_type"]: h for h in hooks}
    for conn_type in TYPES:
        assert by_type[conn_type]["package_name"] == "strm-airflow-provider", by_type.get(conn_type)
        assert by_type[conn_type]["class"].startswith("strm_provider.hooks.")


def test_connections_add_accepts_our_conn_type() -> None:
    airflow(
        "connections",
        "add",
        "provider_test_s3",
        "--conn-type",
        "strm_s3",
        "--conn-login",
        "AKIDEXAMPLE",
        "--conn-password",
        "SECRET-canary-provider",
        "--conn-extra",
        json.dumps({"bucket": "b"}),
    )
    listed = airflow_json("connections", "list")
    ours = [c for c in listed if c["conn_id"] == "provider_test_s3"]
    assert ours and ours[0]["conn_type"] == "strm_s3"
    airflow("connections", "delete", "provider_test_s3")


def form_metadata() -> tuple[dict[str, Any], dict[str, Any]]:
    """The connection form's extra fields and field behaviours, read as the line's UI reads them: the React UI of
    Airflow 3.0 and 3.1 through its own stand-ins for WTForms and Flask AppBuilder (absent beside its API server),
    Airflow 2's form and the form of 3.2 on through the providers manager."""
    if AIRFLOW_V_3_0_PLUS and AIRFLOW_VERSION.release < (3, 2):
        from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

        _hooks, widgets, behaviours = HookMetaService._get_hooks_with_mocked_fab()
        return widgets, behaviours
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    return manager.connection_form_widgets, manager.field_behaviours


def form_field(widget: Any) -> tuple[str, list[str] | None]:
    """An extra field's label and choices as the form shows them: from 3.2 on the JSON schema the provider
    declares (``conn-fields``); on 3.0 and 3.1 the schema the UI's stand-in field built from the hook's
    ``get_connection_form_widgets()``; on Airflow 2 that WTForms field itself."""
    field = widget.field
    if isinstance(field, dict) or hasattr(field, "param"):
        schema = field["schema"] if isinstance(field, dict) else field.param.schema
        return schema["title"], schema.get("enum")
    label = field.kwargs.get("label", field.args[0] if field.args else "")  # unbound: keeps its arguments
    # Airflow 2 takes only text, number, password and checkbox fields: a choice is a text field checked on Save
    checks = [v for v in field.kwargs.get("validators", ()) if hasattr(v, "values")]
    return str(label), list(checks[0].values) if checks else None


def secret(widget: Any) -> bool:
    """Whether the form hides the field's value (3.0 and 3.1's stand-ins carry it as the schema's format)."""
    param = getattr(widget.field, "param", None)
    return widget.is_sensitive or (param is not None and param.schema.get("format") == "password")


def test_ui_form_has_labels_hidden_fields_and_secret_extras() -> None:
    widgets, behaviours = form_metadata()
    if AIRFLOW_V_3_0_PLUS and AIRFLOW_VERSION.release < (3, 1):
        # Airflow 3.0's UI shows a provider's fields only with Flask AppBuilder beside its API server
        # (apache/airflow#55841): the type and its standard fields, unlabelled (README, Supported Airflow versions)
        assert "strm_s3" not in behaviours and "extra__strm_s3__bucket" not in widgets
        return
    assert "host" in behaviours["strm_s3"]["hidden_fields"]
    assert behaviours["strm_s3"]["relabeling"]["login"] == "AWS access key ID"
    assert behaviours["strm_azure_blob"]["relabeling"]["host"] == "Storage account URI"
    assert behaviours["strm_kafka"]["placeholders"]["host"] == "broker1:9092,broker2:9092"
    assert form_field(widgets["extra__strm_s3__bucket"])[0] == "Bucket"
    assert secret(widgets["extra__strm_s3__credentials_json"])
    assert secret(widgets["extra__strm_gcs__keyfile_dict"])
    assert not secret(widgets["extra__strm_gcs__bucket"])
    title, choices = form_field(widgets["extra__strm_kafka__security_protocol"])
    assert title == "Security protocol" and "SASL_SSL" in (choices or [])
    # the Schema Registry of Avro, Protobuf and JSON Schema topics: its secrets are password fields
    registry = {
        "url": "Schema Registry URL",
        "user": "Schema Registry user",
        "password": "Schema Registry password",
        "token": "Schema Registry bearer token",
        "ca": "Schema Registry CA file",
        "cert": "Schema Registry client certificate",
        "key": "Schema Registry client key",
    }
    for name, label in registry.items():
        widget = widgets[f"extra__strm_kafka__schema_registry_{name}"]
        assert form_field(widget)[0] == label
        assert secret(widget) == (name in ("password", "token")), name


WHEEL_CHECK = f"""
import sys
from pathlib import Path
import strm_provider
from {DAGBAG_MODULE} import DagBag
assert Path(strm_provider.__file__).is_relative_to(sys.argv[1]), strm_provider.__file__
bag = DagBag(dag_folder=sys.argv[2])
print(sorted(bag.dag_ids), dict(bag.import_errors))
"""


def test_the_wheel_ships_the_dag_file_and_strm_install_dag_puts_it_in_place(tmp_path: Path) -> None:
    """A pip user has only the wheel: ``strm install-dag`` writes the DAG file, which Airflow parses."""
    repo = Path(__file__).resolve().parent.parent
    uv = str(repo / ".tools" / "bin" / "uv")
    built = subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(repo)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("strm_airflow_provider-*.whl")
    site = tmp_path / "site"
    installed = subprocess.run(
        [uv, "pip", "install", "--no-deps", "--target", str(site), "--python", sys.executable, str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    dags = tmp_path / "dags"
    (dags / "exporters").mkdir(parents=True)
    (dags / "exporters" / "clicks.yaml").write_text(
        "name: clicks\nstream: clicks\ndata_connector: s3\npath_prefix: events\n"
    )
    # the wheel's package, not the repository's: run from elsewhere, the wheel's folder first
    env = {k: v for k, v in os.environ.items() if k != "STRM_EXPORTERS_DIR"} | {"PYTHONPATH": str(site)}
    cli = [sys.executable, "-c", "from strm_provider.cli import main; raise SystemExit(main())"]

    done = subprocess.run([*cli, "install-dag", str(dags)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"Wrote {dags / 'strm_exporters.py'}; it reads batch exporters from {dags / 'exporters'}\n"
    shipped = site / "strm_provider" / "dags" / "strm_exporters.py"
    assert (dags / "strm_exporters.py").read_bytes() == shipped.read_bytes()

    parsed = subprocess.run(
        [sys.executable, "-c", WHEEL_CHECK, str(site), str(dags)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    assert parsed.stdout.splitlines()[-1] == f"['{exporter_dag('clicks')}'] {{}}"
