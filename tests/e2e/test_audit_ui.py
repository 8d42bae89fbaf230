"""The audit page in a real ``airflow api-server``, driven by headless Chromium.

The API server runs in its own AIRFLOW_HOME with the simple auth manager and a known password,
reads the audit store through the ``polymigrate_audit`` connection (an AIRFLOW_CONN_ variable),
and the store is seeded with the events the sample domains' runs record. Chromium is driven over
the DevTools protocol so the test can log in (the session cookie), read the page, click the
export link and see the file land, and save a screenshot to tests/artifacts/.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from polymigrate.audit import PostgresAuditStore
from scripts import airflow_local as local
from tests.e2e.harness import ARTIFACTS, ApiServer
from tests.audit_seed import seed_sample_history

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow, pytest.mark.engine("chromium")]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "audit-e2e-password"


def wait_until(check, timeout: float, what: str):
    return local.wait_until(what, check, timeout, interval=0.3)


@pytest.fixture
def audit_url(pg_url):
    store = PostgresAuditStore(pg_url)
    store.ensure_schema()
    expected = seed_sample_history(store)
    store.close()
    return pg_url, expected


@pytest.fixture
def api_server(audit_url, tmp_path):
    url, expected = audit_url
    with ApiServer(tmp_path, users={"admin": PASSWORD}, extra={"AIRFLOW_CONN_POLYMIGRATE_AUDIT": url}) as server:
        yield server.base, expected


def test_audit_page_in_the_api_server_shows_the_matrix_and_exports(api_server, browser, tmp_path):
    base, expected = api_server
    page_url = f"{base}/polymigrate/"

    # Airflow's authentication guards the page and its export.
    api = local.Client(base)
    assert api.send("GET", "/polymigrate/").status_code in (401, 403)
    assert api.send("GET", "/polymigrate/export?format=csv").status_code in (401, 403)
    api.login("admin", PASSWORD)
    token = api.token

    tools, top = browser
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    top.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    tools.call("Page.enable")
    tools.call("Network.enable")
    tools.call("Network.setCookie", name="_token", value=token, url=base, httpOnly=True)
    tools.call("Emulation.setDeviceMetricsOverride", width=1440, height=1000, deviceScaleFactor=1, mobile=False)
    tools.navigate(page_url)

    assert tools.evaluate("document.title") == "polymigrate · audit"
    rows = tools.evaluate("[...document.querySelectorAll('#matrix tr[data-domain]')]"
                          ".map(r => [r.dataset.domain, r.dataset.environment, r.dataset.region])")
    assert {d for d, _, _ in rows} == set(expected["domains"])
    failed = tools.evaluate(f"document.querySelector('#matrix tr[data-domain=\"{expected['failed'][0]}\"]"
                            f"[data-environment=\"production\"][data-region=\"{expected['failed'][2]}\"]').innerText")
    assert "failed" in failed
    assert tools.evaluate("document.querySelectorAll('#history tr').length") > 10
    assert tools.evaluate("!!document.querySelector('svg.chart')")
    # the staging trend of each file next to production's estimate
    domain, env = expected["trend"]
    trend = tools.evaluate(f"document.querySelector('table.trend[data-domain=\"{domain}\"][data-environment=\"{env}\"]')?.innerText")
    assert trend and "Last runs in staging" in trend and "not yet" not in trend.split("\n")[1], trend

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = tools.call("Page.captureScreenshot", format="png")  # the first screen: matrix, filters, chart
    (ARTIFACTS / "audit_ui.png").write_bytes(base64.b64decode(shot["data"]))

    # The export link downloads the selection as a file.
    tools.evaluate("document.getElementById('export-csv').click()")
    done = wait_until(lambda: [p for p in downloads.iterdir() if p.suffix == ".csv"], 30, "the CSV download")
    text = done[0].read_text(encoding="utf-8")
    assert done[0].name.startswith("polymigrate-audit-") and text.startswith("id,at,kind,domain")
    assert len(text.strip().splitlines()) > 10

    # The nav entry Airflow's own UI shows for the plugin, embedding the page.
    status, plugins = api.get("/api/v2/plugins")
    assert status == 200, plugins
    views = [v for p in plugins["plugins"] for v in p["external_views"]]
    assert {"name": "Migration audit", "href": "/polymigrate/"}.items() <= views[0].items()
    tools.navigate(f"{base}/plugin/polymigrate-audit")
    frame = "document.querySelector('iframe[src$=\"/polymigrate/\"]')"
    wait_until(lambda: tools.evaluate(f"!!{frame}"), 60, "the audit page embedded in Airflow's UI")
    wait_until(lambda: tools.evaluate(f"{frame}.contentDocument?.querySelectorAll('#matrix tr[data-domain]').length"),
               30, "the matrix inside Airflow's UI")
    shot = tools.call("Page.captureScreenshot", format="png")
    (ARTIFACTS / "audit_ui_in_airflow.png").write_bytes(base64.b64decode(shot["data"]))
