"""The spec tree the demo's DAGs read: a copy of migration_specs under .demo/specs, consistent for every
DAG (development's runs, staging's nightly rehearsal, any DAG triggered by hand) and saying why in
every plan's log, not only in the demo's console:

* a technology the demo has no server for is not served by its environments (``technologies``),
  with the reason in ``left_out``;
* one OpenSearch server cannot give each target a ledger and indices of its own (migrations name
  their indices; two regions on one server would share them), so it serves one target only:
  development's first region; the others say so (``regions.<r>.technologies`` and ``left_out``);
* files the servers here cannot run (FerretDB lacks ``collMod``, validators, timeseries…) are left
  out of every domain's copy, each listed in ``left_out`` with the server's reason.

MongoDB on one FerretDB serves every target: each has a database of its own (the connection's).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

SINGLE_TARGET = {"elasticsearch": "one OpenSearch server on this machine, and each target needs a ledger and "
                                  "indices of its own: the demo gives it to {first} (a deployment has one per region)"}


def server_gaps(project, domain: str, technology: str, url: str, environment: str) -> dict[str, str]:
    """The domain's files of ``technology`` this server cannot run, each with why ({} when it runs them
    all), asked file by file of the adapter's own preflight."""
    from polymigrate.adapters import adapter_class
    from polymigrate.catalog import discover_domain
    from polymigrate.errors import MigrationError
    from polymigrate.executor import placeholders_for
    from polymigrate.ledger import RunContext

    d = project.domains[domain]
    files = discover_domain(d).applicable(technology)
    if not files:
        return {}
    adapter = adapter_class(technology).from_url(url, domain=domain, settings=d.technologies.get(technology))
    gaps: dict[str, str] = {}
    try:
        values = placeholders_for(RunContext(domain=domain, environment=environment, region="demo"))
        for m in files:
            try:
                adapter.preflight([(m, m.render(values))])
            except MigrationError as exc:
                first = str(exc).strip().splitlines()[0]
                first = first.split(f"{m.path}", 1)[-1].lstrip(":0123456789 ")  # the script is named already
                gaps[m.script] = first.split("; nothing of this file was run")[0].split(": statement:")[0].rstrip(":")
    finally:
        adapter.close()
    return gaps


def scope(project, environments: tuple[str, ...], first_env: str, available: set[str],
          unavailable: dict[str, str], extra: dict[str, tuple[str, str]], say) -> dict[str, dict[str, str]]:
    """Environment -> its ``left_out`` (technology, ``region/technology`` and ``domain/technology/script``
    keys, each with why); ``say`` tells the console the same."""
    left: dict[str, dict[str, str]] = {e: {} for e in environments if e in project.environments}
    first_region = next(iter(project.environments[first_env].regions))
    for tech, why in unavailable.items():
        for env in left:
            left[env][tech] = why
    for tech, why in SINGLE_TARGET.items():
        if tech not in available:
            continue
        why = why.format(first=f"{first_env}/{first_region}")
        for env in left:
            if env != first_env:
                left[env][tech] = why
            else:
                left[env].update({f"{r}/{tech}": why for r in project.environments[env].regions if r != first_region})
        say(f"{tech}: served in {first_env}/{first_region} only: {why}")
    files: dict[str, str] = {}
    for domain in sorted(project.domains):
        for tech in [t for t in project.domains[domain].technology_order() if t in extra]:
            gaps = server_gaps(project, domain, tech, extra[tech][0], first_env)
            if not gaps:
                continue
            say(f"{domain}: running {tech} without {len(gaps)} file(s) this server cannot run, left out of the demo's "
                f"copy of the specs for every DAG, each plan's log says which (point {extra[tech][1]} at a real "
                "server, e.g. docker compose's, to run them):")
            for script, why in gaps.items():
                print(f"         {script}: {why}", flush=True)
                files[f"{domain}/{tech}/{script}"] = f"{why} (this demo's {tech} server)"
    for env in left:
        left[env].update(files)
    return left


def drop_retention_enforced_by(domain_yaml: Path, tech: str, removed: str, script: str) -> None:
    """A label's retention whose enforcement (a TTL index, a time-series expiry) is made by a file left out
    cannot be verified here: the copy keeps the label and drops its retention, saying why on its line, so
    verify checks what this server can run instead of failing every rehearsal on a file it never got."""
    lines = domain_yaml.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(rf"\s+{re.escape(tech)}:([\w.-]+?)\.[\w.]+:\s*\{{(.*)\}}\s*$", line)
        if not m or "retention:" not in m.group(2) or f'"{m.group(1)}"' not in removed:
            continue
        kept = ", ".join(p for p in (x.strip() for x in m.group(2).split(",")) if not p.startswith(("retention:", "purged_by:")))
        lines[i] = (line[:line.index("{")] + "{" + kept + "}  # retention left out by make demo: "
                    f"{script}, which enforces it, is left out\n")
    domain_yaml.write_text("".join(lines), encoding="utf-8")


def write_copy(source: Path, copy: Path, project, left_out: dict[str, dict[str, str]], available: set[str],
               seed_skip: dict[str, str] | None = None) -> Path:
    """The copy under ``copy`` (rebuilt on every start): files left out removed, the sample's seed files
    added (scripts/demo_seed.py; not those of ``seed_skip``), and each environment the demo serves
    saying what it serves and what it leaves out."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    files = {k for keys in left_out.values() for k in keys if k.count("/") >= 2}
    for key in sorted(files):
        domain, tech, script = key.split("/", 2)
        folder = copy / Path(project.domains[domain].technology_dir(tech)).relative_to(source)
        removed = (folder / script).read_text(encoding="utf-8")
        (folder / script).unlink()
        drop_retention_enforced_by(copy / domain / "domain.yaml", tech, removed, script)
    import demo_seed  # the sample's data, written by its first run (scripts/demo_seed.py says why there)

    demo_seed.write_seed_files(copy, seed_skip)
    order = ("postgresql", "mongodb", "elasticsearch", "redis")
    for env_file in sorted((copy / "environments").glob("*.yaml")):
        if env_file.name.startswith("_"):
            continue
        env = env_file.stem
        data = yaml.safe_load(env_file.read_text(encoding="utf-8")) or {}
        if env in left_out:
            served = [t for t in order if t in available and t not in left_out[env]]
            data["technologies"] = served
            for key in [k for k in left_out[env] if k.count("/") == 1]:
                region, tech = key.split("/")  # (an empty `regions:` would replace the defaults' regions)
                regions = data.setdefault("regions", {})
                regions[region] = {**(regions.get(region) or {}),
                                   "technologies": [t for t in served if t != tech]}
            data["left_out"] = dict(sorted(left_out[env].items()))
        else:  # no connections here; the files are gone for its DAGs too, said the same way
            data["left_out"] = {k: v for k, v in sorted(next(iter(left_out.values()), {}).items()) if k in files}
        env_file.write_text(f"# Written by make demo (scripts/demo_specs.py) from {source / 'environments' / env_file.name}: "
                            "what this machine serves, and why the rest is left out.\n"
                            + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return copy
