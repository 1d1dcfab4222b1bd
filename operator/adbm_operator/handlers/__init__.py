"""Thin Kopf handlers around `reconcile`: what triggers a reconcile, and nothing else.

All handlers register on one `registry`, so the operator (and each test) runs exactly these.
"""

from __future__ import annotations

import kopf

registry = kopf.OperatorRegistry()

# Registration happens on import; the modules are imported for that effect.
from adbm_operator.handlers import (  # noqa: E402
    backendservice,
    children,
    deletion,
    integrations,
    lifecycle,
    migration,
    secrets,
)

__all__ = [
    "backendservice",
    "children",
    "deletion",
    "integrations",
    "lifecycle",
    "migration",
    "registry",
    "secrets",
]
