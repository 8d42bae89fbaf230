"""The Airflow plugin entry point (registered in pyproject.toml under ``airflow.plugins``).

It adds the audit page to the API server (``fastapi_apps``, mounted under ``/polymigrate``) and a
"Migration audit" entry in the Browse menu (``external_views``) that shows it inside the UI, and
registers the rehearsal timetable scheduled environments use (``timetables``).
Plugins load when the API server starts; the page reads the audit store per request.

Other Airflow processes load the plugins too: a task process (for its template context's macros),
a DAG parse (for the timetable), the scheduler. Only the API server reads ``fastapi_apps``, so the
audit app is built when that attribute is first read, not when this module is imported: building it
imports FastAPI and Airflow's API stack, 1.7 s of CPU for each process that is the first to load the
plugins (one whose parent did not).
"""

from airflow.sdk.plugins_manager import AirflowPlugin

from polymigrate_airflow.timetables import RehearsalTimetable

URL_PREFIX = "/polymigrate"


def _fastapi_apps() -> list[dict]:
    from polymigrate_airflow.ui.app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "polymigrate audit"}]


class _BuiltOnFirstRead:
    """A plugin attribute whose value is built the first time it is read, then kept."""

    def __init__(self, build):
        self.build, self.value = build, None

    def __get__(self, obj, owner=None):
        if self.value is None:
            self.value = self.build()
        return self.value


class PolymigratePlugin(AirflowPlugin):
    name = "polymigrate"
    timetables = [RehearsalTimetable]
    fastapi_apps = _BuiltOnFirstRead(_fastapi_apps)
    external_views = [{
        "name": "Migration audit",
        "href": URL_PREFIX + "/",
        "url_route": "polymigrate-audit",
        "destination": "nav",
        "category": "browse",
    }]
