"""The samples reach production honestly, in a real ``airflow standalone``: ``common`` and
``social-commerce`` rehearse in staging, then run in production under production's own policy
(two approvals from dba/release_manager, four-eyes, lint blocking at medium, destructive changes
only when waived, promotion from staging), with no emergency override.

``social-commerce`` holds a waived contract step (the full_name DROP COLUMN): it needs the stricter
approval, three DBAs; the columns it drops are labelled personal data, so it is a regulated change
and a compliance reviewer (cora) signs it off as well. Then a compliance reviewer exports the
production runs, with the compliance section naming the regulated change and who signed it off.

The spec tree is a copy of migration_specs/ with three test-only changes to the environment files,
none to the policy: two regions each (time), no execution window (the test runs at any hour), and
``technologies: [postgresql, redis]`` (this machine serves no MongoDB to these DAGs).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import psycopg
import pytest
import redis
import yaml

from tests.conftest import REDIS_URL
from tests.e2e.harness import ARTIFACTS, ROOT, People, Standalone

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

USERS = {"admin": "admin-pass-1", "ann": "ann-pass-22", "bob": "bob-pass-333", "cid": "cid-pass-4444",
         "dev1": "dev1-pass-55555", "cora": "cora-pass-666666"}
REGIONS = ("western_europe", "north_africa")
REDIS_DBS = {("staging", "western_europe"): 21, ("staging", "north_africa"): 22,
             ("production", "western_europe"): 23, ("production", "north_africa"): 24}


def copy_specs(dest: Path) -> Path:
    shutil.copytree(ROOT / "migration_specs", dest)
    for env in ("staging", "production"):
        path = dest / "environments" / f"{env}.yaml"
        data = yaml.safe_load(path.read_text())
        data["regions"] = list(REGIONS)
        data["technologies"] = ["postgresql", "redis"]
        data["policy"].pop("window", None)
        data["policy"]["retries"] = 0
        data["policy"].pop("schedule", None)  # triggered by the test, not at 02:00
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


class Release(People):
    """``People`` on the sample DAGs: triggers, whole runs, approvals given in turn."""

    reader, default_timeout = "admin", 600

    def __init__(self, airflow: Standalone):
        super().__init__(airflow.base, airflow.users, airflow.log, proc=airflow.proc, interval=2)

    def trigger(self, user: str, dag: str) -> str:
        self.unpause(dag, self.default_timeout)
        return self.start_run(user, dag)

    def tis(self, dag: str, run: str) -> dict[str, str]:
        return {task: ti["state"] for task, ti in self.task_instances(dag, run).items()}

    def finish(self, dag: str, run: str) -> str:
        state = self.wait(f"{dag} {run} to finish", lambda: self.ended_state(dag, run), 900)
        assert state == "success", (dag, self.tis(dag, run), self.failed_logs(dag, run))
        return state

    def failed_logs(self, dag: str, run: str) -> str:
        out = []
        for task, state in self.tis(dag, run).items():
            if state == "failed":
                r = self.call("admin", "GET", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/logs/1?full_content=true")
                out.append(f"--- {task}: {r.text[-2500:]}")
        return "\n".join(out)


@pytest.fixture
def airflow(tmp_path, make_pg_database):
    specs = copy_specs(tmp_path / "specs")
    conns = {}
    dbs = {}
    for env in ("staging", "production"):
        for region in REGIONS:
            dbs[(env, region)] = make_pg_database(f"pm_prod_{env[:4]}_{region[:5]}")
            conns[f"AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_{env.upper()}_{region.upper()}"] = dbs[(env, region)]
            host, port = REDIS_URL.split("//")[1].split(":")
            conns[f"AIRFLOW_CONN_POLYMIGRATE_REDIS_{env.upper()}_{region.upper()}"] = json.dumps(
                {"conn_type": "redis", "host": host, "port": int(port), "extra": {"db": REDIS_DBS[(env, region)]}})
    caches = [redis.Redis.from_url(f"{REDIS_URL}/{n}") for n in REDIS_DBS.values()]
    for c in caches:
        c.flushdb()
        c.set("social:user:1:profile", '{"name": "ada"}')  # something for the sample Lua migration to move
    audit = make_pg_database("pm_prod_audit")
    try:
        with Standalone(tmp_path, metadata=make_pg_database("pm_prod_airflow"), users=USERS, timeout=600,
                        extra={"POLYMIGRATE_SPECS": str(specs), "AIRFLOW_CONN_POLYMIGRATE_AUDIT": audit, **conns}
                        ) as standalone:
            api = Release(standalone)
            api.dbs, api.audit = dbs, audit
            yield api
    finally:
        for c in caches:
            c.flushdb()
            c.close()


def test_common_and_social_commerce_rehearse_in_staging_then_pass_production_s_policy(airflow, browser):
    api = airflow
    # 1. The nightly rehearsal (here triggered): staging approves automatically.
    for domain in ("common", "social_commerce"):
        dag = f"migrate__{domain}__staging"
        api.finish(dag, api.trigger("dev1", dag))

    # 2. Production, triggered by a developer; approvers chosen by production's policy.
    dag = "migrate__common__production"
    run = api.trigger("dev1", dag)
    api.settle_request(dag, run, "common's approval request")
    body = api.hitl_detail(dag, run)["body"]
    assert "needs **2** approval(s)" in body and "already succeeded in staging: **everything pending**" in body, body
    api.parks[(dag, run, "approve")] -= 1  # approve() waits for the same open request again
    api.approve_in_turn(dag, run, ["ann", "bob"])
    api.finish(dag, run)
    assert api.call("admin", "GET", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/approve/xcomEntries/return_value"
                    ).json()["value"]["approved_by"] == ["ann", "bob"]

    dag = "migrate__social_commerce__production"
    run = api.trigger("dev1", dag)
    api.settle_request(dag, run, "social-commerce's approval request")
    body = api.hitl_detail(dag, run)["body"]
    # the waived DROP COLUMN raises the bar, and the approvers read the waiver's reason
    assert "needs **3** approval(s)" in body and "high risk or destructive change set" in body, body
    assert "suppressed `ban-drop-column`" in body and "reads and writes full_name only" in body
    # the dropped first/last names are labelled pii: the same request asks for the compliance sign-off
    assert "**Compliance sign-off required**" in body and "drops `postgresql:users.first_name`" in body, body
    api.parks[(dag, run, "approve")] -= 1
    api.approve_in_turn(dag, run, ["ann", "cid", "admin", "cora"])
    # the full_name release: each region's contract phase waits for its own approval (policy.contract_approval),
    # the canary region first; until then the old columns are there
    for region in REGIONS:
        task = f"{region}.approve_contract"
        api.settle_request(dag, run, f"{region}'s contract approval request", task)
        body = api.hitl_detail(dag, run, task)["body"]
        assert f"Contract phase of social-commerce in production / {region}" in body, body
        assert "`tables/V3__drop_users_first_last_name.sql`" in body and "needs **2** approval(s)" in body, body
        with psycopg.connect(api.dbs[("production", region)]) as c:
            assert c.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'social_commerce' "
                             "AND table_name = 'users' AND column_name = 'first_name'").fetchone() == (1,)
        api.parks[(dag, run, task)] -= 1
        api.approve_in_turn(dag, run, ["ann", "bob"], task)
    api.finish(dag, run)
    tis = api.tis(dag, run)
    assert tis["western_europe.contract_postgresql"] == tis["north_africa.migrate_redis"] == "success"

    # 3. Compliance: the production runs, exported as a reviewer would.
    r = api.call("admin", "GET", "/polymigrate/export?format=json&environment=production")
    assert r.status_code == 200, r.text
    runs = {x["domain"]: x for x in r.json()["runs"]}
    assert runs["common"]["triggered_by"] == "dev1" and runs["common"]["approved_by"] == ["ann", "bob"]
    assert runs["social-commerce"]["approved_by"] == ["ann", "cid", "admin"]
    assert runs["social-commerce"]["signed_off_by"] == ["cora"] and not runs["common"]["signed_off_by"]
    gdpr = r.json()["compliance"]["regulations"]["GDPR"]
    assert {(c["region"], c["object"], tuple(c["signed_off_by"])) for c in gdpr} >= {
        ("western_europe", "postgresql:users.first_name", ("cora",)),
        ("western_europe", "postgresql:users.last_name", ("cora",))}
    assert {c["region"] for c in r.json()["compliance"]["regulations"]["Egypt PDPL"]} == {"north_africa"}
    assert runs["social-commerce"]["outcome"] == "succeeded" and not runs["social-commerce"]["overridden_by"]
    assert {m["region"] for m in runs["social-commerce"]["migrations"]} == set(REGIONS)
    html = api.call("admin", "GET", "/polymigrate/export?format=html&environment=production&region=north_africa").text
    assert "No migration was applied" not in html and "@airflow" not in html and "DagRunType" not in html
    assert re.search(r"Approved by</dt><dd>ann, cid, admin</dd>", html)
    matrix = api.call("admin", "GET", "/polymigrate/api/matrix?environment=production").json()["rows"]
    cells = {(row["domain"], row["region"]): row["technologies"]["postgresql"]["version"] for row in matrix}
    assert cells[("common", "north_africa")] == "2.1" and cells[("social-commerce", "western_europe")] == "3"

    # 4. The page a reviewer opens (Browse → Migration audit), in headless Chromium.
    tools, _ = browser
    tools.call("Page.enable")
    tools.call("Network.enable")
    tools.call("Network.setCookie", name="_token", value=api.tokens["admin"], url=api.base, httpOnly=True)
    tools.call("Emulation.setDeviceMetricsOverride", width=1440, height=1100, deviceScaleFactor=1, mobile=False)
    tools.navigate(f"{api.base}/polymigrate/?environment=production")
    rows = tools.evaluate("[...document.querySelectorAll('#matrix tr[data-domain]')].map(r => r.innerText)")
    assert len(rows) == 4 and all("succeeded" in r for r in rows), rows
    page = tools.evaluate("document.body.innerText")
    assert "@airflow" not in page and "DagRunType" not in page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (ARTIFACTS / "compliance_after_production.png").write_bytes(base64.b64decode(shot["data"]))
