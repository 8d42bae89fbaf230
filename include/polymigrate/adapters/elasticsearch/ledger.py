"""The ledger of an Elasticsearch/OpenSearch target: one document per row in a hidden index.

Index ``.polymigrate-<domain>`` (the domain's ``ledger`` setting names another), one primary shard,
``auto_expand_replicas: 0-1`` (a single-node cluster stays usable). Row ``r<rank>`` holds a
``LedgerEntry``; the lease document ``lock`` lives beside the rows (``lease``).

A new row and every final status (success, failed, undone) is written with ``refresh=wait_for``, so
whoever searches the index next sees it; checkpoints in between are not waited for (``read``
refreshes the index first, so the next run sees those too). Every write is conditional: a new row is
``op_type=create``, an update carries the ``if_seq_no`` / ``if_primary_term`` the row had when this
run last read or wrote it. Together with the lease's fence right before it, a run that lost the
lock cannot overwrite what its successor wrote: its write fails with 409.
"""

from __future__ import annotations

from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError, check_index_name
from polymigrate.adapters.elasticsearch.lease import LeaseLost
from polymigrate.errors import PermanentError
from polymigrate.ledger import LedgerEntry

LEDGER_PREFIX = ".polymigrate-"
MAX_ROWS = 10_000  # one search page; a domain with more migrations than this has other problems first

_KEYWORD = {"type": "keyword"}
LEDGER_BODY = {
    # a short refresh interval keeps refresh=wait_for writes quick (a tiny index refreshes for free)
    "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1", "hidden": True,
                           "refresh_interval": "200ms"}},
    "mappings": {
        "dynamic": False,  # rows may gain fields later; unmapped ones stay in _source
        "properties": {
            "kind": _KEYWORD, "installed_rank": {"type": "integer"}, "version": _KEYWORD,
            "description": {"type": "text", "fields": {"raw": _KEYWORD}}, "type": _KEYWORD, "script": _KEYWORD,
            "checksum": {"type": "long"}, "installed_by": _KEYWORD, "installed_on": {"type": "date"},
            "execution_time": {"type": "long"}, "success": {"type": "boolean"}, "status": _KEYWORD,
            "domain": _KEYWORD, "sha256": _KEYWORD, "run_id": _KEYWORD, "environment": _KEYWORD,
            "region": _KEYWORD, "plan_hash": _KEYWORD, "progress": {"type": "object", "enabled": False},
            "owner": _KEYWORD, "token": _KEYWORD, "renewed_at": {"type": "date"}, "expires_at": {"type": "date"},
        },
    },
}


def ledger_index(domain: str, override: str | None = None) -> str:
    name = override or f"{LEDGER_PREFIX}{domain.lower()}"
    return check_index_name(name, "ledger index")


class Ledger:
    """Rows of one domain's ledger index, with the version each was last seen at."""

    def __init__(self, api: SearchApi, index: str):
        self.api, self.index = api, index
        self._versions: dict[int, tuple[int, int]] = {}

    def ensure(self) -> None:
        """Create the index if absent (harmless when it exists, also when two runs race to create it)."""
        if self.api.exists(self.index):
            return
        try:
            self.api.create_index(self.index, LEDGER_BODY)
        except SearchError as exc:
            if exc.type != "resource_already_exists_exception":
                raise
        self.api.health(self.index)

    def read(self) -> list[LedgerEntry]:
        """Every row by rank (nothing is created: a missing ledger reads as empty)."""
        if not self.api.exists(self.index):
            return []
        self.api.refresh(self.index)  # a crashed run's last write may not be searchable yet
        resp = self.api.search(self.index, {"query": {"term": {"kind": "entry"}}, "size": MAX_ROWS,
                                            "seq_no_primary_term": True, "sort": [{"installed_rank": "asc"}]})
        entries = []
        self._versions.clear()
        for hit in resp["hits"]["hits"]:
            entry = LedgerEntry.from_dict(hit["_source"])
            self._versions[entry.installed_rank] = (hit["_seq_no"], hit["_primary_term"])
            entries.append(entry)
        return entries

    def next_rank(self) -> int:
        return max(self._versions, default=0) + 1

    def write(self, entry: LedgerEntry, *, new: bool = False, checkpoint: bool = False) -> None:
        """Create (``new``) or conditionally update a row; a 409 means another run changed it.
        ``checkpoint``: progress within a migration, not waited for until searchable."""
        doc = {**entry.to_dict(), "kind": "entry"}
        doc_id = f"r{entry.installed_rank}"
        refresh = None if checkpoint and not new else "wait_for"
        try:
            if new:
                resp = self.api.put_doc(self.index, doc_id, doc, create=True)
            else:
                seq, term = self._versions.get(entry.installed_rank, (None, None))
                if seq is None:
                    raise PermanentError(f"ledger row {doc_id} of {self.index} was never read by this run")
                resp = self.api.put_doc(self.index, doc_id, doc, if_seq_no=seq, if_primary_term=term, refresh=refresh)
        except SearchError as exc:
            if exc.status == 409:
                raise LeaseLost(f"ledger row {doc_id} in {self.index} was written by another run meanwhile; "
                                "this run's write was refused", hint="the run holding the lock continues; "
                                                                     "a retry re-reads the ledger under the lock") from exc
            raise
        self._versions[entry.installed_rank] = (resp["_seq_no"], resp["_primary_term"])
