"""The command layer: every policy and gate decision, the same wherever a migration is run from.

As alembic's ``command`` module is for alembic, this package is what the command line and the
Airflow operators call; they only turn their input (options, a task's context) into a call and its
outcome into theirs (an exit code, an Airflow exception). Nothing here imports Airflow.

* ``project``: loading specs, one domain's catalog, one environment;
* ``planning``: plans read from each target's ledger;
* ``context``: ``Run`` (scope, ``RunParams``, ``Who``, audit sink, ``Connector``), ``Grant``;
* ``gates``: the gates a target passes, in one order (``before_target``: approval, contract approval,
  contract soak, window), promotion and dependencies;
* ``approval``: asking, each answer, the re-check from the audit store, the command line's authority;
  ``contract_approval``: the contract phase's own approval; ``summary``: the text an approver reads;
* ``validation``: the validate step (files and lint as the approval summary);
* ``verbs``: validate, lint, plan, migrate, verify, undo, baseline, repair, adopt, info, and the whole
  DAG sequence in one process (``migrate_environment``);
* ``verification``: the verify step (``verify_region``: ledgers against the plan, then each target's checks);
* ``noop``: what plan hands to execute tasks with nothing pending (one ledger read, no specs);
* ``failures``: a failed step on record, so a run's outcome reads failed;
* ``drift``: schema snapshots and drift kept in the audit store; ``diff``: generated migrations;
* ``adhoc``: ``--url`` runs, refused against the targets of a policy-bound environment.
"""

from polymigrate.commands.context import (Connector, EnvironmentConnector, Grant, Run, RunParams, UsageError, Who,
                                          audit_sink, open_run)
from polymigrate.commands.planning import Connect, plan_domain, plan_table
from polymigrate.commands.project import Validated, all_migrations, environment_of, load_domain, validate_project

__all__ = ["Connect", "Connector", "EnvironmentConnector", "Grant", "Run", "RunParams", "UsageError", "Validated", "Who", "all_migrations",
           "audit_sink", "environment_of", "load_domain", "open_run", "plan_domain", "plan_table", "validate_project"]
