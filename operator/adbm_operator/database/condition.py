"""Condition `DatabaseReady` from what provisioning observed: a pure function.

Reasons, most urgent first: `Unreachable` (no connection or the credentials were refused),
`ConnectionBudgetExceeded` (the spec could open more connections than the server allows),
`Migrating` (the schema of the current image is not in place yet), `IsolationBroken` (the canary
saw another tenant's rows, or rows with no tenant), `PolicyDrift` (the database still differs
from the plan after applying it, or another policy widens what the app role sees), and
`Provisioned` when none of those holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adbm_operator.database.budget import Budget
from adbm_operator.database.canary import IsolationResult

DATABASE_READY = "DatabaseReady"

Reason = Literal[
    "Provisioned",
    "Migrating",
    "PolicyDrift",
    "IsolationBroken",
    "Unreachable",
    "ConnectionBudgetExceeded",
]
Status = Literal["True", "False"]


@dataclass(frozen=True)
class Observations:
    """What one provisioning pass saw. A field left None was not reached."""

    unreachable: str | None = None
    """Why the server could not be used (connection, credentials, admin Secret)."""
    budget: Budget | None = None
    migrated: bool | None = None
    """Whether the schema the current image needs is in place (its migration Job succeeded
    and every governed table exists)."""
    migration_message: str = ""
    remaining_drift: tuple[str, ...] = ()
    """Differences still there after the plan was applied, and `rls.verify` catalog problems."""
    isolation: IsolationResult | None = None
    busy: bool = False
    """The pass stopped at a lock another holder keeps (a migration, another provisioner):
    retried with backoff like an unreachable server, and no migration Job is started, since
    the database or its role may not exist yet."""


def database_ready(obs: Observations) -> tuple[Status, Reason, str]:
    """(status, reason, message) of condition DatabaseReady."""
    if obs.unreachable is not None:
        return "False", "Unreachable", obs.unreachable
    if obs.budget is not None and not obs.budget.fits:
        return "False", "ConnectionBudgetExceeded", obs.budget.message()
    if not obs.migrated:
        return "False", "Migrating", obs.migration_message or "waiting for the schema migration"
    if obs.isolation is not None and not obs.isolation.ok:
        return "False", "IsolationBroken", obs.isolation.message()
    if obs.remaining_drift:
        return "False", "PolicyDrift", "; ".join(obs.remaining_drift)
    if obs.isolation is None:
        return "False", "Migrating", "isolation has not been proven yet"
    message = "database, app role and row-level security as planned; " + obs.isolation.message()
    return "True", "Provisioned", message
