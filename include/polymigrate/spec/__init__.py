"""Spec model (pydantic) and loader for ``migration_specs/``."""

from polymigrate.spec.loader import load_project
from polymigrate.spec.models import (
    ApprovalPolicy,
    Domain,
    Emergency,
    Environment,
    Policy,
    Project,
    Region,
    Rollout,
    TechnologyConfig,
    Window,
)

__all__ = [
    "ApprovalPolicy", "Domain", "Emergency", "Environment", "Policy", "Project", "Region", "Rollout",
    "TechnologyConfig", "Window", "load_project",
]
