"""Status from observation: conditions derived from what the operator saw, never from what it
attempted.

`Ready` is True only when every Deployment of the current generation is rolled out (updated and
available, as `kubectl rollout status` decides) and nothing is degraded, and only for the
generation in `observedGeneration` (Knative's lifecycle). Pure functions: the handlers gather the
observations, this module decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from adbm_operator.model import (
    BackendServiceStatus,
    ChildSummary,
    Condition,
    ConditionStatus,
    WorkloadSummary,
)

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
MONITORING_READY = "MonitoringReady"
TELEMETRY_READY = "TelemetryReady"
PAUSED = "Paused"

TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE

MonitoringState = Literal["Applied", "Disabled", "CRDNotInstalled", "Failed"]


@dataclass(frozen=True)
class Rollout:
    """One Deployment's rollout as observed."""

    name: str
    desired: int
    available: int
    done: bool
    failed: bool
    message: str


def rollout(deployment: Mapping[str, Any] | None, name: str) -> Rollout:
    """The rollout state of a live Deployment, decided as `kubectl rollout status` does."""
    if deployment is None:
        return Rollout(name, 0, 0, False, False, f"Deployment {name} does not exist yet")
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    st = deployment.get("status", {}) or {}
    desired = int(spec.get("replicas", 1))
    updated = int(st.get("updatedReplicas", 0))
    available = int(st.get("availableReplicas", 0))
    total = int(st.get("replicas", 0))
    for cond in st.get("conditions", []) or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            message = f"Deployment {name} exceeded its progress deadline: {cond.get('message', '')}"
            return Rollout(name, desired, available, False, True, message.strip())
    if int(meta.get("generation", 0)) > int(st.get("observedGeneration", 0)):
        return Rollout(name, desired, available, False, False, f"{name}: waiting for the rollout")
    if updated < desired:
        message = f"{name}: {updated} of {desired} replicas updated"
        return Rollout(name, desired, available, False, False, message)
    if total > updated:
        message = f"{name}: {total - updated} old replicas pending termination"
        return Rollout(name, desired, available, False, False, message)
    if available < updated:
        message = f"{name}: {available} of {updated} updated replicas available"
        return Rollout(name, desired, available, False, False, message)
    return Rollout(name, desired, available, True, False, f"{name}: rolled out")


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from."""

    generation: int
    paused: bool
    children: Sequence[ChildSummary]
    api: Rollout | None
    workers: Sequence[Rollout] = ()
    monitoring: MonitoringState = "Disabled"
    telemetry_enabled: bool = False
    missing_secrets: Sequence[str] = ()
    error: str | None = None
    error_reason: str = "ReconcileError"
    max_connections: int = 0
    notes: Sequence[str] = field(default_factory=tuple)
    """Degrading facts that are not a failed child (e.g. an autoscaler that cannot exist)."""


def _condition(
    kind: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Condition],
    now: datetime,
) -> Condition:
    before = previous.get(kind)
    # lastTransitionTime moves only when the status flips, per the API conventions.
    since = before.last_transition_time if before and before.status == status else now
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message[:32_768],
        last_transition_time=since,
        observed_generation=generation,
    )


def compute(
    obs: Observation, previous: BackendServiceStatus | None, now: datetime
) -> BackendServiceStatus:
    prev = {c.type: c for c in (previous.conditions if previous else [])}
    gen = obs.generation

    def cond(kind: str, status: ConditionStatus, reason: str, message: str) -> Condition:
        return _condition(kind, status, reason, message, gen, prev, now)

    rollouts = [r for r in (obs.api, *obs.workers) if r is not None]
    failed_children = [c for c in obs.children if c.state == "Failed"]
    problems: list[tuple[str, str]] = []
    if obs.error:
        problems.append((obs.error_reason, obs.error))
    problems += [("ApplyFailed", f"{c.kind}/{c.name}: {c.message}") for c in failed_children]
    problems += [
        ("SecretNotFound", f"Secret {name} not found; pods cannot start until it exists")
        for name in obs.missing_secrets
    ]
    problems += [("ProgressDeadlineExceeded", r.message) for r in rollouts if r.failed]
    problems += [("CRDNotInstalled", note) for note in obs.notes]

    conditions = []
    if problems:
        conditions.append(
            cond(DEGRADED, TRUE, problems[0][0], "; ".join(msg for _, msg in problems))
        )
    else:
        conditions.append(cond(DEGRADED, FALSE, "AsExpected", "nothing is degraded"))

    pending = [r for r in rollouts if not r.done and not r.failed]
    if obs.paused:
        conditions.append(cond(PROGRESSING, FALSE, "Paused", "spec.paused is true"))
    elif pending:
        conditions.append(
            cond(PROGRESSING, TRUE, "RollingOut", "; ".join(r.message for r in pending))
        )
    else:
        conditions.append(cond(PROGRESSING, FALSE, "Complete", "every Deployment is rolled out"))

    if obs.monitoring == "Applied":
        conditions.append(
            cond(
                MONITORING_READY,
                TRUE,
                "ServiceMonitorApplied",
                "scraped by Prometheus via the ServiceMonitor",
            )
        )
    elif obs.monitoring == "Disabled":
        conditions.append(
            cond(MONITORING_READY, TRUE, "Disabled", "serviceMonitor.enabled is false")
        )
    elif obs.monitoring == "CRDNotInstalled":
        conditions.append(
            cond(
                MONITORING_READY,
                FALSE,
                "CRDNotInstalled",
                "the ServiceMonitor CRD (monitoring.coreos.com/v1) is not installed;"
                " the ServiceMonitor is created as soon as it is",
            )
        )
    else:
        conditions.append(
            cond(MONITORING_READY, FALSE, "ApplyFailed", "the ServiceMonitor could not be applied")
        )

    if obs.telemetry_enabled:
        conditions.append(
            cond(
                TELEMETRY_READY,
                TRUE,
                "CollectorSidecar",
                "the OpenTelemetry collector runs beside every container",
            )
        )
    else:
        conditions.append(cond(TELEMETRY_READY, TRUE, "Disabled", "otelCollector.enabled is false"))

    conditions.append(
        cond(PAUSED, TRUE, "Paused", "spec.paused is true: no writes until it is false")
        if obs.paused
        else cond(PAUSED, FALSE, "Active", "the operator reconciles this object")
    )

    if problems:
        ready = cond(READY, FALSE, problems[0][0], "degraded: " + problems[0][1])
    elif not rollouts:
        ready = cond(READY, FALSE, "Pending", "no Deployment observed yet")
    elif pending:
        ready = cond(READY, FALSE, "RollingOut", "; ".join(r.message for r in pending))
    else:
        ready = cond(READY, TRUE, "Ready", "every Deployment of this generation is available")
    conditions.insert(0, ready)

    api = obs.api
    return BackendServiceStatus(
        observed_generation=gen,
        conditions=conditions,
        replica_summary=f"{api.available}/{api.desired}" if api else "",
        api=WorkloadSummary(
            name=api.name, desired_replicas=api.desired, available_replicas=api.available
        )
        if api
        else None,
        workers=[
            WorkloadSummary(name=r.name, desired_replicas=r.desired, available_replicas=r.available)
            for r in obs.workers
        ],
        children=list(obs.children),
        max_connections=obs.max_connections,
    )


# Reasons a BackendService is not Ready yet for which nobody needs to act.
_ON_THE_WAY = {"RollingOut", "Pending"}


@dataclass(frozen=True)
class Transition:
    type: str
    status: str
    reason: str
    message: str
    warning: bool


def transitions(
    previous: BackendServiceStatus | None, current: BackendServiceStatus
) -> list[Transition]:
    """Condition changes worth a Kubernetes Event: a new status or a new reason. A first status
    announces only what needs attention; the rest is what a new object is expected to say."""
    before = {c.type: c for c in (previous.conditions if previous else [])}
    changed = []
    for c in current.conditions:
        old = before.get(c.type)
        if old is not None and (old.status, old.reason) == (c.status, c.reason):
            continue
        bad = (
            (c.type == DEGRADED and c.status == TRUE)
            or (c.type == MONITORING_READY and c.status == FALSE)
            or (c.type == READY and c.status == FALSE and c.reason not in _ON_THE_WAY)
        )
        if old is None and not bad:
            continue
        changed.append(Transition(c.type, c.status.value, c.reason, c.message, bad))
    return changed


def as_patch(status: BackendServiceStatus) -> dict[str, Any]:
    """A merge patch that replaces the whole status: absent optionals are sent as null, which
    removes what an earlier status had."""
    return status.model_dump(mode="json", by_alias=True)


def parse(raw: Mapping[str, Any] | None) -> BackendServiceStatus | None:
    """The status as stored, or None when absent or not ours (e.g. written by an older version)."""
    if not raw:
        return None
    try:
        return BackendServiceStatus.model_validate(
            {k: v for k, v in raw.items() if k in _STATUS_FIELDS}
        )
    except ValueError:
        return None


_STATUS_FIELDS = {f.alias or n for n, f in BackendServiceStatus.model_fields.items()}
