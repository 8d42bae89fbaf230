"""What the rest of polymigrate knows about one technology, in one place.

Each technology package (``postgresql/``, ``mongodb/``, ``elasticsearch/``, ``redis/``) exports one
``Technology`` as ``DESCRIPTOR`` from its ``__init__``; ``polymigrate.adapters.TECHNOLOGIES`` lists
them, and every per-technology table is built from that list: the adapter registry, the catalog's
file extensions, the connection extras, URL schemes and default ports, ``polymigrate new``'s
templates, the blueprint's migration operators, the Airflow layer's client factories and operator
colours, the file naming, the JSON format models and lint's live state.

This module and the descriptors import no driver and nothing of polymigrate, so the catalog, the CLI
and the Airflow layer can read them without importing an adapter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Technology:
    key: str
    """The registry key: the folder of a domain's migrations, the ``technologies:`` name in specs."""
    adapter: str
    """``module:Class`` of the adapter, imported only when the technology is used."""
    extensions: tuple[str, ...]
    """Migration file extensions; the first is what ``polymigrate new`` writes."""
    schemes: tuple[str, ...]
    """URL schemes (``--url``, ``AIRFLOW_CONN_*`` values) and Airflow conn types that name it."""
    default_port: int
    extras: frozenset[str]
    """Connection extras a client may be given (see ``polymigrate.connections``)."""
    template: str
    """The new file's text, a ``str.format`` pattern taking ``description``."""
    client_factory: str
    """Name of the function in ``polymigrate_airflow.connections`` that turns a connection id into the
    client the adapter is given."""
    operator: str
    """Name of the migration operator class in ``polymigrate_airflow.operators``."""
    ui_color: str
    """That operator's colour in Airflow's UI."""
    ledger_type: str
    """The ledger's ``type`` for its files (Flyway's ``SQL`` for PostgreSQL, so a Flyway history
    validates); ``_<EXT>`` is added when the technology has several extensions, ``UNDO_`` put before
    it for an undo file."""
    naming: str = "dash"
    """How a migration file is named: ``"dash"`` (``<version>-<description><ext>``) or ``"flyway"``
    (``V<version>__<description>.sql``, ``R__…`` repeatable, ``U<version>__…`` undo)."""
    format_model: str | None = None
    """Name of the pydantic model in ``polymigrate.spec.formats`` a ``.json`` migration must follow,
    or None when the technology's files are not JSON documents of a fixed shape."""
    lint_state: tuple[str, str] | None = None
    """``(key, "module:Class")``: what lint's rules read of a live target under ``Source.state[key]``,
    built as ``Class(client)`` from the client lint is given; None when lint reads nothing live that
    way (PostgreSQL's statistics take the schema as well, see ``lint.risk.StatsReader``)."""
