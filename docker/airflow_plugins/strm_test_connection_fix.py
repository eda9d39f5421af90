"""Backport of apache/airflow#73298 for Airflow 3.3.2: the UI's Test button on a connection without a port.

The UI posts ``port: Number(null)``, i.e. ``0``, for a connection whose port is empty; 3.3.2's API
then sees "a different port than the stored one" and answers 400 instead of testing. Every STRM data
connector has no port, so without this the Test button never works. Upstream treats ``0`` like blank;
so does this, and nothing else. Loaded from the plugins folder by ``make up`` and docker-compose.yaml;
drop it once Airflow includes the fix.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

try:
    from airflow.api_fastapi.core_api.routes.public import connections as _routes
except ImportError:  # not an API server build with that module: nothing to fix
    _routes = None

if _routes is not None and hasattr(_routes, "_same_endpoint"):
    _original = _routes._same_endpoint

    def _same_endpoint(requested: str | int | None, stored: str | int | None) -> bool:
        def norm(value: str | int | None) -> str | int | None:
            return None if value in (None, "", 0) else value

        return norm(requested) == norm(stored) or _original(requested, stored)

    _routes._same_endpoint = _same_endpoint


class StrmTestConnectionFix(AirflowPlugin):
    """Registers nothing; importing this module applies the backport."""

    name = "strm_test_connection_fix"
