"""The core's notification decisions (polymigrate.notify): routes from the specs, one message per
failed task on its final try, nothing for a quiet night or an unrouted domain."""

from polymigrate.notify import (approval_message, completed_message, drift_message, failure_message,
                                is_final_try, routes)
from polymigrate.spec.models import Domain, Environment, Notify, Policy, Region

REGIONS = {"eu": Region(name="eu")}


def env(name="production", **notify):
    policy = Policy(promotion_from="staging") if name == "production" else Policy()
    return Environment(name=name, regions=REGIONS, policy=policy, notify=Notify(**notify))


def domain(**notify):
    return Domain(name="orders", owners=["orders-team@example.com"], notify=Notify(**notify))


def test_routes_owners_domain_then_environment_each_once():
    d = domain(email=["dba@example.com", "orders-team@example.com"], webhooks=["orders_slack"])
    e = env(email=["oncall@example.com"], webhooks=["oncall_slack", "orders_slack"])
    assert routes(d, e, "run_failed") == (("orders-team@example.com", "dba@example.com", "oncall@example.com"),
                                          ("orders_slack", "oncall_slack"))


def test_routes_filtered_by_events_and_owners_switch():
    d = domain(events=["approval_requested"])
    e = env(email=["oncall@example.com"], events=["run_failed", "rehearsal_failed"], owners=False)
    assert routes(d, e, "run_failed") == (("oncall@example.com",), ())
    assert routes(d, e, "approval_requested") == ((), ())  # the environment keeps owners out here


def test_transient_failure_tells_nobody_until_the_final_try():
    assert not is_final_try(retryable=True, try_number=1, max_tries=2)
    assert not is_final_try(retryable=True, try_number=2, max_tries=2)
    assert is_final_try(retryable=True, try_number=3, max_tries=2)
    assert is_final_try(retryable=False, try_number=1, max_tries=2)  # a permanent error never retries
    kw = dict(step="execute", error="boom", region="eu", technology="postgresql", run_id="r1")
    assert failure_message(domain(), env(), retryable=True, try_number=1, max_tries=2, **kw) is None
    assert failure_message(domain(), env(), retryable=True, try_number=3, max_tries=2, **kw) is not None


def test_failure_message_names_where_the_error_and_the_link():
    error = ("V2__add_total.sql, statement 1: column \"totl\" does not exist\n"
             "  ALTER TABLE orders ADD CHECK (totl > 0)\nFix: name an existing column")
    m = failure_message(domain(), env(), step="execute", error=error, retryable=False, try_number=1, max_tries=2,
                        region="eu", technology="postgresql", link="http://airflow/log", run_id="manual__1")
    assert m.event == "run_failed" and m.emails == ("orders-team@example.com",)
    assert m.subject == "[polymigrate] orders production/eu/postgresql: migration failed"
    for part in ("V2__add_total.sql", "ALTER TABLE orders", "Fix: name an existing column", "Link: http://airflow/log",
                 "Region: eu", "Run: manual__1"):
        assert part in m.text


def test_failure_kinds_verify_and_nightly_rehearsal():
    kw = dict(error="x", retryable=False, try_number=1, max_tries=0)
    assert failure_message(domain(), env(), step="verify", **kw).event == "verify_failed"
    assert failure_message(domain(), env("staging"), step="execute", run_type="scheduled", **kw).event == "rehearsal_failed"
    only_rehearsals = env("staging", email=["oncall@example.com"], events=["rehearsal_failed"])
    assert failure_message(Domain(name="orders"), only_rehearsals, step="plan", run_type="manual", **kw) is None


def test_completed_only_where_promoted_and_drift_only_when_found():
    assert completed_message(domain(), env("staging"), region="eu", versions={"postgresql": "1"}) is None
    m = completed_message(domain(), env(), region="eu", versions={"postgresql": "2", "redis": None}, run_id="r")
    assert m.event == "production_completed" and "Now at: postgresql 2, redis -" in m.text
    assert drift_message(domain(), env(), result={"count": 0, "targets": {}}) is None
    m = drift_message(domain(), env(), result={"count": 2, "targets": {"eu/postgresql": {"differences": 2}}})
    assert "eu/postgresql: 2 difference(s)" in m.text


def test_approval_request_carries_summary_and_link():
    m = approval_message(domain(), env(), summary="3 migrations, risk high", link="http://airflow/required_actions",
                         run_id="r")
    assert m.event == "approval_requested" and "risk high" in m.text and "required_actions" in m.text


def test_a_verify_that_only_warned_is_told_as_verify_failed():
    from polymigrate.notify import verify_warned_message

    m = verify_warned_message(domain(), env(), region="eu", failed=1, checks=5)
    assert m.event == "verify_failed" and "1 of 5 check(s) failed in eu" in m.text
