"""docker-compose.yaml, deploy/helm/ and `make cluster` (scripts/cluster.sh) describe one deployment:
the same Airflow components running the same commands, the settings of deploy/airflow.env everywhere,
CeleryExecutor, one Airflow version, and a connection for every target the development environment
names. No Docker or Kubernetes here: the files are read, as their tools would read them."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from polymigrate.connections import AUDIT_CONN_ID, SCHEMES, env_var, technology_of
from polymigrate.spec.loader import load_project

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_ENV = ROOT / "deploy" / "airflow.env"
CLUSTER = ROOT / "scripts" / "cluster.sh"
HELM = {"celery": ROOT / "deploy" / "helm" / "values-celery.yaml",
        "kubernetes": ROOT / "deploy" / "helm" / "values-kubernetes.yaml"}
# compose service -> the technology it serves as a target
SERVES = {"postgres": "postgresql", "mongo": "mongodb", "redis": "redis", "elasticsearch": "elasticsearch"}
ENVIRONMENT = "development"  # the environment whose targets compose runs


def settings() -> dict[str, str]:
    out = {}
    for n, line in enumerate(AIRFLOW_ENV.read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            m = re.fullmatch(r"(AIRFLOW__[A-Z0-9_]+__[A-Z0-9_]+)=(.*)", line.strip())
            assert m, f"deploy/airflow.env:{n}: not an AIRFLOW__SECTION__KEY=value line: {line!r}"
            out[m.group(1)] = m.group(2)
    return out


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def airflow_services() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if name.startswith("airflow-")}


def service_of(component: str) -> str:
    return "airflow-apiserver" if component == "api-server" else f"airflow-{component}"  # Airflow's compose names


def cluster_components() -> list[str]:
    m = re.search(r'^COMPONENTS="([^"]+)"$', CLUSTER.read_text(), re.M)
    assert m, 'scripts/cluster.sh: no COMPONENTS="…" line'
    return m.group(1).split()


def cluster_command(component: str) -> list[str]:
    """The airflow subcommand scripts/cluster.sh runs for a component (its `command_of` case arm),
    without options: `worker-*) echo "$AIRFLOW celery worker --celery-hostname …"` gives celery worker."""
    for patterns, args in re.findall(r'^\s*([\w|*-]+)\)\s*echo "\$AIRFLOW ([^"]*)"', CLUSTER.read_text(), re.M):
        for p in patterns.split("|"):
            if fnmatch.fnmatch(component, p) or p.rstrip("*").rstrip("-") == component:
                words = args.replace("$1", component).split()
                return words[:next((i for i, w in enumerate(words) if w.startswith("-")), len(words))]
    pytest.fail(f"scripts/cluster.sh: no command_of arm runs {component}")


def command(service: dict) -> list[str]:
    cmd = service.get("command")
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


def helm(kind: str) -> dict:
    return yaml.safe_load(HELM[kind].read_text())


def conn_technology(value: str) -> tuple[str | None, str | None, str]:
    """(technology, host, target within the host) of an AIRFLOW_CONN_* value, URI or JSON form."""
    if value.lstrip().startswith("{"):
        d = json.loads(value)
        tech = SCHEMES.get(d.get("conn_type", ""))
        where = str((d.get("extra") or {}).get("db", 0)) if tech == "redis" else str(d.get("schema") or "")
        return tech, d.get("host"), where
    parts = urlsplit(value)
    return technology_of(value), parts.hostname, parts.path.lstrip("/")


# --- the components ------------------------------------------------------------------------------

def test_every_cluster_component_is_a_compose_service_running_the_same_airflow_command():
    services = airflow_services()
    components = cluster_components()
    assert {"api-server", "scheduler", "dag-processor", "triggerer", "worker"} <= set(components)
    for component in components:
        name = service_of(component)
        assert name in services, f"docker-compose.yaml has no {name} for `make cluster`'s {component}"
        assert command(services[name]) == cluster_command(component), name
    # nothing runs in compose that `make cluster` does not (the init job aside)
    assert set(services) - {"airflow-init"} == {service_of(c) for c in components}


def test_the_metadata_database_is_migrated_once_before_the_components_start():
    services = airflow_services()
    assert command(services["airflow-init"]) == ["db", "migrate"]
    for component in cluster_components():
        dep = services[service_of(component)].get("depends_on", {})
        assert dep.get("airflow-init", {}).get("condition") == "service_completed_successfully", component
    assert re.search(r'"\$AIRFLOW" db migrate', CLUSTER.read_text()), "scripts/cluster.sh never runs airflow db migrate"


def test_the_worker_scales():
    worker = airflow_services()[service_of("worker")]
    assert "container_name" not in worker and "ports" not in worker, "a fixed name or host port stops --scale"


def test_every_airflow_service_uses_the_shared_settings_file_and_overrides_none_of_them():
    shared = settings()
    for name, service in airflow_services().items():
        env_file = service.get("env_file")
        assert (env_file if isinstance(env_file, list) else [env_file]) == ["deploy/airflow.env"], name
        overridden = {k: v for k, v in (service.get("environment") or {}).items() if k in shared and str(v) != shared[k]}
        assert not overridden, f"{name} overrides deploy/airflow.env: {overridden}"
    cluster = [ln for ln in CLUSTER.read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert any("deploy/airflow.env" in ln for ln in cluster), "scripts/cluster.sh does not read deploy/airflow.env"
    assert not [ln for ln in cluster if re.search(r"AIRFLOW__(CORE__EXECUTOR|CELERY__[A-Z_]+)=", ln)
                and not re.search(r"AIRFLOW__CELERY__(BROKER_URL|RESULT_BACKEND)=", ln)], \
        "scripts/cluster.sh sets an executor or Celery setting of its own instead of deploy/airflow.env's"


def test_the_executor_is_celery_everywhere_and_kubernetes_in_its_own_values():
    assert settings()["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for service in airflow_services().values():
        assert (service.get("environment") or {}).get("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor") == "CeleryExecutor"
    assert helm("celery")["executor"] == "CeleryExecutor"
    assert helm("kubernetes")["executor"] == "KubernetesExecutor"


def test_celery_and_the_execution_api_point_at_the_services_that_serve_them():
    services = compose()["services"]
    for name, service in airflow_services().items():
        env = service["environment"]
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        assert broker.scheme == "redis" and broker.hostname in services, name
        backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        assert backend.scheme == "db+postgresql" and backend.hostname == "postgres", name
        api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert api.hostname == service_of("api-server") and api.path == "/execution/", name
        assert f"{api.port}:{api.port}" in services[service_of("api-server")]["ports"], name
        # a secret comes from the environment of `docker compose`, never from this file
        assert re.fullmatch(r"\$\{AIRFLOW_JWT_SECRET:\?[^}]+\}", env["AIRFLOW__API_AUTH__JWT_SECRET"]), name


# --- Helm ----------------------------------------------------------------------------------------

def helm_setting(values: dict, key: str):
    section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
    if (section, option) == ("core", "executor"):
        return values.get("executor")
    return (values.get("config", {}).get(section) or {}).get(option)


@pytest.mark.parametrize("kind", sorted(HELM))
def test_the_helm_values_carry_every_setting_of_the_shared_file(kind):
    values = helm(kind)
    for key, value in settings().items():
        celery_only = key.startswith(("AIRFLOW__CELERY__", "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__"))
        if kind == "kubernetes" and (celery_only or key == "AIRFLOW__CORE__EXECUTOR"):
            assert helm_setting(values, key) in (None, "KubernetesExecutor"), key
            continue
        assert str(helm_setting(values, key)) == value, f"{HELM[kind].name}: {key} should be {value}"


@pytest.mark.parametrize("kind", sorted(HELM))
def test_the_helm_values_run_the_triggerer_and_the_dag_processor_and_take_connections_from_a_secret(kind):
    values = helm(kind)
    assert values["triggerer"]["enabled"] is True
    assert values["dagProcessor"]["enabled"] is True
    refs = yaml.safe_load(values["extraEnvFrom"])
    assert [r["secretRef"]["name"] for r in refs] == ["polymigrate-connections"]
    assert values["data"]["metadataSecretName"]


def test_one_airflow_version_in_the_image_the_constraints_and_the_helm_values():
    dockerfile = (ROOT / "Dockerfile").read_text()
    image = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:([\d.]+)-python3\.11$", dockerfile, re.M)
    assert image, "Dockerfile: no ARG AIRFLOW_IMAGE=apache/airflow:<version>-python3.11"
    pinned = re.search(r"^apache-airflow==([\d.]+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert image.group(1) == pinned
    for kind in HELM:
        assert helm(kind)["airflowVersion"] == pinned, kind


# --- connections ---------------------------------------------------------------------------------

def development_targets() -> dict[str, tuple[str, str]]:
    """AIRFLOW_CONN_* variable -> (region, technology) for every target of the environment whose
    technology compose serves."""
    project = load_project(ROOT / "migration_specs")
    env = project.environments[ENVIRONMENT]
    techs = {t for d in project.domains.values() for t in d.technologies} & set(SERVES.values())
    assert techs == set(SERVES.values()), "the samples no longer use every technology compose serves"
    return {env_var(env.connection_id(r, t)): (r, t) for r in env.regions for t in techs}


def test_compose_has_a_connection_for_every_development_target_on_the_service_of_its_technology():
    targets = development_targets()
    assert len({r for r, _ in targets.values()}) >= 2, "one region cannot show that regions get their own targets"
    for name, service in airflow_services().items():
        env = service["environment"]
        missing = sorted(set(targets) - set(env))
        assert not missing, f"{name} lacks {missing}"
        seen: dict[tuple, str] = {}
        for var, (region, tech) in targets.items():
            got, host, where = conn_technology(env[var])
            assert got == tech, f"{var} is a {got} connection"
            assert SERVES.get(host) == tech, f"{var} points at {host}, which does not serve {tech}"
            if tech != "elasticsearch":  # one search server: index names, not servers, per region
                assert (tech, where) not in seen, f"{var} shares its target with {seen.get((tech, where))}"
                seen[(tech, where)] = var
        audit = env[env_var(AUDIT_CONN_ID)]
        assert conn_technology(audit)[:2] == ("postgresql", "postgres")
        assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).path.strip("/") not in \
            {w for (t, w) in seen if t == "redis"}, "the broker shares a Redis DB with a target"


def test_every_postgresql_database_compose_names_is_created_on_first_start():
    services = compose()["services"]
    init = ROOT / "deploy" / "compose" / "postgres-init.sql"
    mounts = [v.split(":")[0] for v in services["postgres"].get("volumes", [])]
    assert "./deploy/compose/postgres-init.sql" in mounts
    created = set(re.findall(r"^CREATE DATABASE (\w+);$", init.read_text(), re.M))
    env = airflow_services()["airflow-scheduler"]["environment"]
    named = {urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).path.strip("/"),
             urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"]).path.strip("/")}
    for value in env.values():
        tech, host, where = conn_technology(str(value)) if str(value).startswith(("postgresql://", "{")) else (None, None, "")
        if tech == "postgresql":
            named.add(where)
    assert named - {""} <= created, f"not created by {init.name}: {sorted(named - created)}"
