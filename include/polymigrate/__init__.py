"""polymigrate: database migrations for many domains, technologies, environments and regions.

The core (this package) never imports Airflow; ``polymigrate_airflow`` renders it into DAGs.
"""

__version__ = "0.1.0"



def __getattr__(name: str):
    # TECHNOLOGIES: every technology polymigrate knows, in the default execution order within a
    # region: the keys of polymigrate.adapters.TECHNOLOGIES, in the order registered there. Read
    # lazily, so importing a module of this package does not import the adapters package first.
    if name == "TECHNOLOGIES":
        from polymigrate.adapters import TECHNOLOGIES

        return tuple(TECHNOLOGIES)
    raise AttributeError(f"module 'polymigrate' has no attribute {name!r}")
