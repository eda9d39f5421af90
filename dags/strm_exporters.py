"""Every STRM batch exporter as an Airflow DAG: copy this file into your DAGs folder.

Exporters are YAML files in ``$STRM_EXPORTERS_DIR`` (default: ``exporters/`` beside this file);
``strm create batch-exporter`` writes them there. Broken files show up as import errors naming the
file and the field; the other exporters keep running.
"""

from pathlib import Path

from strm_provider.dag_factory import build_dags

globals().update(build_dags(beside=Path(__file__).resolve().parent))
