"""polymigrate: database migrations for many domains, technologies, environments and regions.

The core (this package) never imports Airflow; ``polymigrate_airflow`` renders it into DAGs.
"""

__version__ = "0.1.0"

TECHNOLOGIES = ("postgresql", "mongodb", "redis", "elasticsearch")
"""Every technology polymigrate knows, in the default execution order within a region."""
