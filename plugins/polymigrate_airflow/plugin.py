"""The Airflow plugin entry point (registered in pyproject.toml under ``airflow.plugins``).

It adds the audit page to the API server (``fastapi_apps``, mounted under ``/polymigrate``) and a
"Migration audit" entry in the Browse menu (``external_views``) that shows it inside the UI, and
registers the rehearsal timetable scheduled environments use (``timetables``).
Plugins load when the API server starts; the page reads the audit store per request.
"""

from airflow.plugins_manager import AirflowPlugin

from polymigrate_airflow.timetables import RehearsalTimetable

URL_PREFIX = "/polymigrate"


def _fastapi_apps() -> list[dict]:
    from polymigrate_airflow.ui.app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "polymigrate audit"}]


class PolymigratePlugin(AirflowPlugin):
    name = "polymigrate"
    timetables = [RehearsalTimetable]
    fastapi_apps = _fastapi_apps()
    external_views = [{
        "name": "Migration audit",
        "href": URL_PREFIX + "/",
        "url_route": "polymigrate-audit",
        "destination": "nav",
        "category": "browse",
    }]
