"""Adopting a migrate-mongo project: its changelog copied into the ledger (``MongoAdapter.adopt``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from polymigrate.adapters.base import AdoptReport
from polymigrate.catalog import Kind, Migration, parse_name
from polymigrate.checksums import flyway_checksum
from polymigrate.errors import PermanentError
from polymigrate.ledger import RunContext, Status

log = logging.getLogger("polymigrate.mongo")


@dataclass
class ImportReport:
    imported: list[str]
    already: list[str]
    changed: list[str]   # applied by migrate-mongo from different file contents (fileHash differs)
    missing: list[str]   # in the changelog, no file here


class MongoAdoption:
    """Part of ``MongoAdapter``: ``adopt`` (the ``Adapter`` verb) and the migrate-mongo import behind it."""

    def adopt(self, ctx: RunContext, migrations: list[Migration], *, source: str | None = None) -> AdoptReport:
        """migrate-mongo's changelog: ``source`` is the collection (``changelogCollectionName``,
        default ``changelog``) in this database."""
        collection = source or "changelog"
        r = self.import_migrate_mongo(ctx, migrations, collection=collection)
        return AdoptReport(f"{self.db.name}.{collection}", len(r.imported), r.already, r.changed, r.missing)

    def import_migrate_mongo(self, ctx: RunContext, migrations: list[Migration], *,
                             collection: str = "changelog") -> ImportReport:
        """Copy migrate-mongo's changelog (``{fileName, appliedAt, fileHash?, migrationBlock?}``) of this
        database into the ledger, so nothing migrate-mongo applied runs again (as flyway-import does).

        Each entry matches the file of the same name among ``migrations``; its checksum is that file's,
        unless migrate-mongo recorded a ``fileHash`` (``useFileHash``) that differs from the file now:
        then the row says the file changed, and the next run stops until `repair` (Flyway's rule).
        Entries without a file here are imported as they are (and reported: restore the file or
        `repair`). Importing twice is a no-op.
        """
        report = ImportReport([], [], [], [])
        by_name = {m.path.name: m for m in migrations if m.kind is Kind.VERSIONED}
        source = f"{self.db.name}.{collection}"
        with self._held(ctx) as lease:
            self._ensure()
            if collection not in self.db.list_collection_names():
                raise PermanentError(f"no migrate-mongo changelog collection {source} on {self.target}",
                                     hint="pass the changelogCollectionName of migrate-mongo-config.js with --collection")
            entries = sorted(self.db[collection].find({}), key=lambda d: (d.get("appliedAt") or datetime.min,
                                                                          str(d.get("fileName"))))
            for e in entries:
                name = str(e.get("fileName") or "")
                try:
                    parsed = parse_name("mongodb", name)
                except ValueError:
                    parsed = None
                if parsed is None:
                    log.warning("%s: changelog entry %r is not a {version}-{description}.js name; skipped", source, name)
                    continue
                _, version, description = parsed
                m = by_name.get(name)
                recorded = e.get("fileHash")
                checksum = m.checksum if m else None
                if m is not None and recorded and recorded != m.sha256:
                    checksum = flyway_checksum(f"migrate-mongo fileHash {recorded}")  # never the file's: CHANGED
                    report.changed.append(name)
                if m is None:
                    report.missing.append(name)
                applied = e.get("appliedAt") if isinstance(e.get("appliedAt"), datetime) else None
                row = {"_id": self.ledger.row_id(version), "domain": self.domain, "version": str(version),
                       "description": m.description if m else description, "type": "MONGO_JS",
                       "script": m.script if m else name, "checksum": checksum, "sha256": recorded or (m.sha256 if m else None),
                       "installed_rank": self.ledger.next_rank(), "installed_on": applied or datetime.now(timezone.utc).replace(tzinfo=None),
                       "installed_by": "migrate-mongo", "execution_time": 0, "success": True,
                       "status": Status.SUCCESS.value, "run_id": ctx.run_id, "environment": ctx.environment,
                       "region": ctx.region, "plan_hash": ctx.plan_hash, "attempt": None, "fence": lease.token,
                       "progress": {"imported_from": source, "migration_block": e.get("migrationBlock")},
                       "history": []}
                (report.imported if self.ledger.insert_done(row) else report.already).append(name)
        return report
