"""Every STRM batch exporter as an Airflow DAG: ``strm install-dag`` puts this file in your DAGs folder.

Exporters are YAML files in ``$STRM_EXPORTERS_DIR`` (default: ``exporters/`` beside this file);
``strm create batch-exporter`` writes them there. A broken file becomes a DAG of its own whose run
fails naming the file, the field and the reason; the other exporters keep their schedule.
"""

from pathlib import Path

from strm_provider.dag_factory import build_dags

# absolute(), not resolve(): a DAGs folder may hold this file as a symlink, and "beside" means there
globals().update(build_dags(beside=Path(__file__).absolute().parent))
