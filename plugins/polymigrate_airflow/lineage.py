"""OpenLineage for execute tasks: the core says what a run changed (``polymigrate.lineage``), this
turns it into the provider's ``OperatorLineage`` (output datasets with schema, type and lifecycle
facets, and the migration versions as the ``polymigrate`` run facet).

Off unless the OpenLineage provider is installed and configured (``[openlineage] transport`` or
``config_path``, as Airflow's own lineage): then an execute task reads its target's schema once
after applying, which costs a catalog query, never a migration's failure.
"""

from __future__ import annotations

import logging
from typing import Any

from attrs import define

log = logging.getLogger(__name__)

_LIFECYCLE = {"created": "CREATE", "altered": "ALTER", "written": "OVERWRITE", "renamed": "RENAME", "dropped": "DROP"}
_TYPES = {"table": "TABLE", "view": "VIEW", "collection": "COLLECTION", "index": "INDEX", "alias": "ALIAS",
          "keys": "KEY_PATTERN"}


def enabled() -> bool:
    """Whether Airflow would emit lineage at all (provider installed and a transport configured)."""
    try:
        from airflow.providers.openlineage.conf import is_disabled
    except ImportError:
        return False
    try:
        return not is_disabled()
    except Exception:  # noqa: BLE001  a broken [openlineage] section must not fail a migration
        log.warning("OpenLineage configuration could not be read: no lineage", exc_info=True)
        return False


def collect(run: Any, region: str, technology: str, result: Any) -> dict[str, Any] | None:
    """What this execute changed (``TargetLineage.to_dict``), read from the target after the run;
    None when lineage is off, in a dry run, when nothing was applied, or when it cannot be read."""
    if result.dry_run or not result.applied or not enabled():
        return None
    from polymigrate import lineage
    from polymigrate.executor import placeholders_for

    try:
        with run.target(region, technology) as adapter:
            found = lineage.of_target(adapter, run.catalog.applicable(technology), result.applied,
                                      placeholders_for(run.run_context(region)))
    except Exception:  # noqa: BLE001  the migration succeeded; its lineage is a report about it
        log.warning("%s/%s: lineage could not be read; the migration itself succeeded", region, technology,
                    exc_info=True)
        return None
    return found.to_dict() if found else None


def _run_facet_class():
    from openlineage.client.facet_v2 import RunFacet

    @define
    class PolymigrateRunFacet(RunFacet):
        """The migrations an execute task applied (``polymigrate`` run facet)."""

        domain: str
        environment: str
        region: str
        technology: str
        phase: str | None
        versions: list[str]
        scripts: list[str]

    return PolymigrateRunFacet


def operator_lineage(found: dict[str, Any] | None, *, domain: str, environment: str, region: str,
                     technology: str, phase: str | None):
    """The provider's ``OperatorLineage`` for ``collect``'s result (empty when there is none)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    if not found:
        return OperatorLineage()
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import dataset_type_dataset, lifecycle_state_change_dataset, schema_dataset

    outputs = []
    for d in found["datasets"]:
        facets: dict[str, Any] = {
            "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType=_TYPES.get(d["kind"], d["kind"].upper()),
                                                                        subType=technology),
            # the last action is the one the dataset is left in (created then altered: it exists now)
            "lifecycleStateChange": lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
                lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange(_LIFECYCLE[d["actions"][-1]])),
        }
        if d["fields"]:
            facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=[
                schema_dataset.SchemaDatasetFacetFields(name=f["name"], type=f["type"] or None) for f in d["fields"]])
        outputs.append(OutputDataset(namespace=found["namespace"], name=d["name"], facets=facets))
    run_facet = _run_facet_class()(domain=domain, environment=environment, region=region, technology=technology,
                                   phase=phase, versions=list(found["versions"]), scripts=list(found["scripts"]))
    return OperatorLineage(outputs=outputs, run_facets={"polymigrate": run_facet})


class Lineage:
    """Mixed into the execute operators: the provider's ``DefaultExtractor`` calls
    ``get_openlineage_facets_on_complete`` after a successful ``execute``, on the same object, where
    ``observability.migrated`` left what ``collect`` found (``_lineage``)."""

    def get_openlineage_facets_on_complete(self, task_instance: Any):
        return operator_lineage(getattr(self, "_lineage", None), domain=self.domain, environment=self.environment,
                                region=self.region, technology=self.technology, phase=self.phase)
