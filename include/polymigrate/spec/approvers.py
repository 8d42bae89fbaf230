"""Who holds which approval role: ``migration_specs/approvers.yaml``.

Identity, not credentials: user names as the Airflow auth manager knows them, mapped to the roles
environment policies name (``dba``, ``release_manager`` …). Example::

    users:
      ann: [dba]
      bob: [release_manager]
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from polymigrate.errors import Problem, SpecError
from polymigrate.spec.reading import read_yaml

APPROVERS_FILE = "approvers.yaml"


class Approvers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: dict[str, list[str]] = {}

    def roles_of(self, user: str) -> frozenset[str]:
        return frozenset(self.users.get(user, ()))

    def eligible(self, roles: list[str], users: list[str] = (), exclude: str | None = None) -> list[str]:
        """Users who may approve under a policy naming these roles/users (all known users when none)."""
        names = [u for u, rs in self.users.items() if not roles or set(rs) & set(roles)] + list(users)
        return sorted({u for u in names if u != exclude})


def load_approvers(root: str | Path) -> Approvers:
    """The approvers file, or an empty mapping when there is none; SpecError names file and line."""
    path = Path(root) / APPROVERS_FILE
    if not path.exists() and not path.is_symlink():
        return Approvers()
    data, _node, problems = read_yaml(path, Path(root))
    if problems:
        raise SpecError(problems)
    try:
        return Approvers.model_validate(data or {})
    except ValidationError as exc:
        raise SpecError([Problem(str(path), f"{'.'.join(map(str, e['loc']))}: {e['msg']}",
                                 hint="users: {name: [role, …]}") for e in exc.errors()]) from None
