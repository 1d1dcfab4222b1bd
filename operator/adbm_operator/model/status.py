"""The BackendService status: what the operator observed, in Kubernetes' condition format."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the observed state, in the Kubernetes condition format."""

    type: Annotated[str, Field(max_length=64)]
    """Condition type, e.g. `Ready`."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[
        str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=128)
    ]
    """CamelCase reason."""
    message: Annotated[str, Field(max_length=32_768)] = ""
    """Human-readable detail."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] = 0
    """Generation of the spec this condition was computed for."""


class WorkloadSummary(ApiModel):
    """Replica counts of one Deployment as observed."""

    name: Annotated[str, Field(max_length=253)]
    """Deployment name."""
    desired_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas asked for (the autoscaler's current choice when autoscaled)."""
    available_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas of the current revision that are available."""


class ChildSummary(ApiModel):
    """One object the operator manages for this BackendService."""

    api_version: Annotated[str, Field(max_length=253)]
    """apiVersion of the child."""
    kind: Annotated[str, Field(max_length=63)]
    """Kind of the child."""
    name: Annotated[str, Field(max_length=253)]
    """Name of the child."""
    state: Literal["Applied", "Skipped", "Failed"]
    """Outcome of the last reconcile for this child."""
    message: Annotated[str, Field(max_length=4096)] = ""
    """Why it was skipped or failed."""


class DatabaseStatus(ApiModel):
    """The database as the last provisioning pass found it."""

    schema_version: Annotated[str | None, Field(max_length=64)] = None
    """Newest schema migration applied (from `schema_migrations`), once migrated."""
    migrated_image: Annotated[str | None, Field(max_length=512)] = None
    """Image whose migration Job succeeded last: the image the Deployments run until the Job
    of a new image has succeeded."""
    pending_changes: Annotated[str, Field(max_length=4096)] = ""
    """What differed from the row-level security plan before the last pass applied it."""
    last_verified: datetime | None = None
    """When tenant isolation was last proven by the periodic verification (or a pass that
    changed the outcome)."""


class BackendServiceStatus(ApiModel):
    """Observed state; written by the operator from what it observed, not what it attempted."""

    observed_generation: Annotated[int, Field(ge=0)] = 0
    """Generation of the spec last reconciled."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=32,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = []
    """Ready, Progressing, Degraded, DatabaseReady, MonitoringReady, TelemetryReady, Paused."""
    replica_summary: Annotated[str, Field(max_length=32)] = ""
    """`available/desired` API replicas, for display."""
    api: WorkloadSummary | None = None
    """The API Deployment."""
    workers: Annotated[list[WorkloadSummary], Field(max_length=16)] = []
    """Worker Deployments."""
    children: Annotated[list[ChildSummary], Field(max_length=64)] = []
    """Every managed child and its state."""
    max_connections: Annotated[int, Field(ge=0)] = 0
    """Database connections the spec can open at its autoscaling maximum."""
    database: DatabaseStatus | None = None
    """Database provisioning: schema version, migrated image, pending changes."""
