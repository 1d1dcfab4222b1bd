"""Status from observation: conditions derived from what the operator saw, never from what it
attempted.

`Ready` is derived by one condition set (`READY_SET`, Knative's lifecycle): it is True only when
every dependent condition is True, and otherwise carries the reason and message of the first one
that is not. Every dependent is decided from an observation of live objects. `Degraded` and
`Progressing` summarise the same verdicts for tools that read kstatus-style conditions;
`MonitoringReady` is reported but is not a dependent (a missing prometheus-operator changes who
watches the service, not how it serves). Pure functions: the reconcile gathers the observations,
this module decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adbm_operator.conditions import ConditionSet, Verdict
from adbm_operator.model import (
    BackendServiceStatus,
    ChildSummary,
    Condition,
    ConditionStatus,
    DatabaseStatus,
    WorkloadSummary,
)
from adbm_operator.observe import Collector, Monitoring, Rollout

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
RESOURCES_APPLIED = "ResourcesApplied"
DATABASE_READY = "DatabaseReady"
SECRETS_READY = "SecretsReady"
DEPLOYMENTS_READY = "DeploymentsReady"
TELEMETRY_READY = "TelemetryReady"
AUTOSCALING_READY = "AutoscalingReady"
MONITORING_READY = "MonitoringReady"
PAUSED = "Paused"

TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN

# The order is the order of blame: Ready names the first of these that is not True. Database
# provisioning comes right after RESOURCES_APPLIED: the app role's Secret is its output, so its
# own reason explains a missing Secret better than SecretsReady can, and Deployments wait for
# the migration of their image.
READY_SET = ConditionSet(
    READY,
    (
        RESOURCES_APPLIED,
        DATABASE_READY,
        SECRETS_READY,
        DEPLOYMENTS_READY,
        TELEMETRY_READY,
        AUTOSCALING_READY,
    ),
)


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from."""

    generation: int
    paused: bool
    children: Sequence[ChildSummary]
    api: Rollout | None
    workers: Sequence[Rollout] = ()
    monitoring: Monitoring = field(default_factory=lambda: Monitoring("Disabled"))
    collector: Collector | None = None
    """The sidecar as found in the live Deployments; None when they were not looked at."""
    missing_secrets: Sequence[str] = ()
    error: str | None = None
    error_reason: str = "ReconcileError"
    max_connections: int = 0
    unscaled: Sequence[str] = field(default_factory=tuple)
    """Autoscaling the spec asks for that cannot exist (e.g. KEDA is not installed)."""
    database: Verdict | None = None
    """DatabaseReady as the last provisioning pass decided it; None when none has run."""
    database_status: DatabaseStatus | None = None


def _resources_applied(obs: Observation) -> Verdict:
    failed = [f"{c.kind}/{c.name}: {c.message}" for c in obs.children if c.state == "Failed"]
    if obs.error:
        return Verdict(RESOURCES_APPLIED, FALSE, obs.error_reason, "; ".join([obs.error, *failed]))
    if failed:
        return Verdict(RESOURCES_APPLIED, FALSE, "ApplyFailed", "; ".join(failed))
    return Verdict(RESOURCES_APPLIED, TRUE, "Applied", "every child object is applied")


def _database_ready(obs: Observation) -> Verdict:
    if obs.database is None:
        return Verdict(DATABASE_READY, UNKNOWN, "NotObserved", "no provisioning pass has run yet")
    return obs.database


def _secrets_ready(obs: Observation) -> Verdict:
    if obs.missing_secrets:
        message = "; ".join(
            f"Secret {name} not found; pods cannot start until it exists"
            for name in obs.missing_secrets
        )
        return Verdict(SECRETS_READY, FALSE, "SecretNotFound", message)
    return Verdict(SECRETS_READY, TRUE, "Found", "every Secret the pods read exists")


def _rollouts(obs: Observation) -> list[Rollout]:
    return [r for r in (obs.api, *obs.workers) if r is not None]


def _deployments_ready(obs: Observation) -> Verdict:
    rollouts = _rollouts(obs)
    failed = [r.message for r in rollouts if r.failed]
    if failed:
        return Verdict(DEPLOYMENTS_READY, FALSE, "ProgressDeadlineExceeded", "; ".join(failed))
    if not rollouts:
        return Verdict(DEPLOYMENTS_READY, FALSE, "Pending", "no Deployment observed yet")
    pending = [r.message for r in rollouts if not r.done]
    if pending:
        return Verdict(DEPLOYMENTS_READY, FALSE, "RollingOut", "; ".join(pending))
    return Verdict(
        DEPLOYMENTS_READY, TRUE, "RolledOut", "every Deployment of this generation is available"
    )


def _telemetry_ready(obs: Observation) -> Verdict:
    found = obs.collector
    if found is None:
        return Verdict(TELEMETRY_READY, UNKNOWN, "NotObserved", "no Deployment was looked at")
    if found.enabled and found.lacking:
        message = "the collector sidecar is not in the pod template of " + ", ".join(found.lacking)
        return Verdict(TELEMETRY_READY, FALSE, "CollectorMissing", message)
    if found.enabled:
        return Verdict(
            TELEMETRY_READY,
            TRUE,
            "CollectorSidecar",
            "the OpenTelemetry collector runs beside every container",
        )
    if found.running:
        message = "otelCollector.enabled is false, yet the collector still runs in " + ", ".join(
            found.running
        )
        return Verdict(TELEMETRY_READY, FALSE, "CollectorNotRemoved", message)
    return Verdict(TELEMETRY_READY, TRUE, "Disabled", "otelCollector.enabled is false")


def _autoscaling_ready(obs: Observation) -> Verdict:
    if obs.unscaled:
        return Verdict(AUTOSCALING_READY, FALSE, "CRDNotInstalled", "; ".join(obs.unscaled))
    return Verdict(AUTOSCALING_READY, TRUE, "AsExpected", "every autoscaler asked for can exist")


_DEPENDENT_VERDICTS: Mapping[str, Callable[[Observation], Verdict]] = {
    RESOURCES_APPLIED: _resources_applied,
    DATABASE_READY: _database_ready,
    SECRETS_READY: _secrets_ready,
    DEPLOYMENTS_READY: _deployments_ready,
    TELEMETRY_READY: _telemetry_ready,
    AUTOSCALING_READY: _autoscaling_ready,
}
assert set(_DEPENDENT_VERDICTS) == set(READY_SET.dependents)

_MONITORING: Mapping[str, tuple[ConditionStatus, str, str]] = {
    "Applied": (TRUE, "ServiceMonitorApplied", "scraped by Prometheus via the ServiceMonitor"),
    "Disabled": (TRUE, "Disabled", "serviceMonitor.enabled is false"),
    "CRDNotInstalled": (
        FALSE,
        "CRDNotInstalled",
        "the ServiceMonitor CRD (monitoring.coreos.com/v1) is not installed;"
        " the ServiceMonitor is created as soon as it is",
    ),
    "Failed": (FALSE, "ApplyFailed", "the ServiceMonitor could not be applied"),
    "Missing": (FALSE, "ServiceMonitorMissing", "the ServiceMonitor does not exist"),
    "Unselected": (
        FALSE,
        "MetricsPortNotSelected",
        "the ServiceMonitor does not select the Service's metrics port",
    ),
}


def _monitoring_ready(obs: Observation) -> Verdict:
    status, reason, message = _MONITORING[obs.monitoring.state]
    return Verdict(MONITORING_READY, status, reason, obs.monitoring.detail or message)


# Reasons a BackendService is not Ready yet for which nobody needs to act.
_ON_THE_WAY = {"RollingOut", "Pending", "Migrating", "NotObserved"}


def _degraded(dependents: Sequence[Verdict]) -> Verdict:
    """True when a dependent failed for a reason someone must act on (not one on the way)."""
    problems = [v for v in dependents if v.status == FALSE and v.reason not in _ON_THE_WAY]
    if problems:
        return Verdict(DEGRADED, TRUE, problems[0].reason, "; ".join(v.message for v in problems))
    return Verdict(DEGRADED, FALSE, "AsExpected", "nothing is degraded")


def _progressing(obs: Observation) -> Verdict:
    pending = [r for r in _rollouts(obs) if not r.done and not r.failed]
    if obs.paused:
        return Verdict(PROGRESSING, FALSE, "Paused", "spec.paused is true")
    if pending:
        return Verdict(PROGRESSING, TRUE, "RollingOut", "; ".join(r.message for r in pending))
    return Verdict(PROGRESSING, FALSE, "Complete", "every Deployment is rolled out")


def _paused(obs: Observation) -> Verdict:
    if obs.paused:
        return Verdict(PAUSED, TRUE, "Paused", "spec.paused is true: no writes until it is false")
    return Verdict(PAUSED, FALSE, "Active", "the operator reconciles this object")


def verdicts(obs: Observation) -> list[Verdict]:
    """Every condition as decided from `obs`: Ready first, then the summaries, the dependents
    in the order of blame, and the informational ones."""
    dependents = [_DEPENDENT_VERDICTS[t](obs) for t in READY_SET.dependents]
    ready = READY_SET.happy_verdict(
        dependents, "every condition Ready depends on is True: " + ", ".join(READY_SET.dependents)
    )
    return [
        ready,
        _degraded(dependents),
        _progressing(obs),
        *dependents,
        _monitoring_ready(obs),
        _paused(obs),
    ]


def _condition(
    verdict: Verdict, generation: int, previous: Mapping[str, Condition], now: datetime
) -> Condition:
    before = previous.get(verdict.type)
    # lastTransitionTime moves only when the status flips, per the API conventions.
    since = before.last_transition_time if before and before.status == verdict.status else now
    return Condition(
        type=verdict.type,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message[:32_768],
        last_transition_time=since,
        observed_generation=generation,
    )


def compute(
    obs: Observation, previous: BackendServiceStatus | None, now: datetime
) -> BackendServiceStatus:
    prev = {c.type: c for c in (previous.conditions if previous else [])}
    conditions = [_condition(v, obs.generation, prev, now) for v in verdicts(obs)]
    api = obs.api
    return BackendServiceStatus(
        observed_generation=obs.generation,
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
        database=obs.database_status,
    )


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
        if c.type in READY_SET.dependents:
            continue  # Ready carries a failing dependent's reason: one Event, not two
        old = before.get(c.type)
        if old is not None and (old.status, old.reason) == (c.status, c.reason):
            continue
        bad = (
            (c.type == DEGRADED and c.status == TRUE)
            or (c.type == MONITORING_READY and c.status == FALSE)
            or (c.type == READY and c.status != TRUE and c.reason not in _ON_THE_WAY)
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
