"""What differs between the Airflow lines this provider supports and ``airflow.providers.common.compat`` does
not cover: the one place that asks which Airflow runs (as each official provider's ``version_compat``)."""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version

AIRFLOW_VERSION = Version(version("apache-airflow"))
AIRFLOW_V_3_0_PLUS = AIRFLOW_VERSION.release >= (3, 0)
AIRFLOW_V_3_1_PLUS = AIRFLOW_VERSION.release >= (3, 1)
