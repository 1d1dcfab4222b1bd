"""One reconcile of one BackendService: render, apply what differs, prune, observe, decide status.

Everything that talks to the cluster goes through `kube.Client`; everything that decides is a
pure function (`specs`, `status`, `differs`). Re-running on an unchanged spec and unchanged
children makes no write at all: a child is applied only when what we render is not already
what the cluster holds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from adbm_operator import kube, model, specs, status, telemetry
from adbm_operator.model import BackendService, ChildSummary
from adbm_operator.specs import deployment, keda, labels, pod, servicemonitor, worker
from adbm_operator.status import Rollout, Transition

SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
SCALED_OBJECT = ("keda.sh/v1alpha1", "ScaledObject")
TRIGGER_AUTH = ("keda.sh/v1alpha1", "TriggerAuthentication")
OPTIONAL_KINDS = {SERVICE_MONITOR, SCALED_OBJECT, TRIGGER_AUTH}
# Every kind the operator may create, in the order children are pruned (dependents first).
MANAGED_KINDS = [
    kube.KINDS[key]
    for key in (
        SERVICE_MONITOR,
        SCALED_OBJECT,
        TRIGGER_AUTH,
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("policy/v1", "PodDisruptionBudget"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
    )
]
# The CRD that makes each optional kind exist.
CRD_NAMES = {
    "servicemonitors.monitoring.coreos.com": SERVICE_MONITOR,
    "scaledobjects.keda.sh": SCALED_OBJECT,
    "triggerauthentications.keda.sh": TRIGGER_AUTH,
}
# Fields an autoscaler writes: never compared, never applied (the builders leave them out).
_OWNED_BY_OTHERS = ("replicas",)


@dataclass
class Integrations:
    """Which optional kinds the cluster serves, as the CRD watch last reported."""

    installed: set[tuple[str, str]] = field(default_factory=set)

    def has(self, key: tuple[str, str]) -> bool:
        return key in self.installed


def differs(desired: Any, live: Any) -> bool:
    """Whether applying `desired` would change `live`: every field we render must be present
    with the same value. Fields the API server or others added are not our concern."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return True
        return any(differs(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return True
        return any(differs(d, item) for d, item in zip(desired, live, strict=True))
    return bool(desired != live)


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(child: Mapping[str, Any], uid: str) -> bool:
    refs = child.get("metadata", {}).get("ownerReferences", []) or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _summary(
    child: Mapping[str, Any], state: Literal["Applied", "Skipped", "Failed"], message: str = ""
) -> ChildSummary:
    return ChildSummary(
        api_version=child["apiVersion"],
        kind=child["kind"],
        name=child["metadata"]["name"],
        state=state,
        message=message[:4096],
    )


@dataclass
class Outcome:
    status: model.BackendServiceStatus
    transitions: list[Transition]
    writes: int
    temporary_error: str | None = None
    desired: list[dict[str, Any]] = field(default_factory=list)
    """The children as rendered (with owner references): what later events are compared to."""
    secret_versions: dict[str, str] = field(default_factory=dict)
    rollouts: list[Rollout] = field(default_factory=list)


async def secret_versions(
    client: kube.Client, obj: BackendService
) -> tuple[dict[str, str], list[str]]:
    """resourceVersions of the Secrets the pods read, and the names of those missing."""
    versions, missing = {}, []
    for ref in pod.referenced_secrets(obj):
        if ref.name in versions or ref.name in missing:
            continue
        secret = await client.get(kube.KINDS[("v1", "Secret")], obj.namespace, ref.name)
        if secret is None:
            missing.append(ref.name)
        else:
            versions[ref.name] = secret["metadata"].get("resourceVersion", "")
    return versions, missing


async def reconcile(
    client: kube.Client,
    body: Mapping[str, Any],
    integrations: Integrations,
    *,
    drift: bool = False,
    write: bool = True,
    known_secrets: Mapping[str, str] | None = None,
) -> Outcome:
    """Converge one BackendService and compute its status. `drift` marks a run triggered by a
    change to a child, so corrections are counted as drift; `write=False` only observes (a
    Deployment's rollout moved on, nothing of ours changed), and then `known_secrets` (the
    versions the last reconcile read) spares reading the Secrets again."""
    started = time.perf_counter()
    obj = model.parse(dict(body))
    previous = status.parse(body.get("status"))
    generation = int(body["metadata"].get("generation", 0))
    uid = body["metadata"]["uid"]
    writes = 0
    temporary: str | None = None
    children: list[ChildSummary] = []
    notes: list[str] = []
    if known_secrets is not None and not write:
        versions = dict(known_secrets)
        missing = [r.name for r in pod.referenced_secrets(obj) if r.name not in versions]
    else:
        versions, missing = await secret_versions(client, obj)

    desired = specs.render(obj, secret_versions=versions)
    for child in desired:
        child["metadata"]["ownerReferences"] = [owner_reference(body)]

    applying = write and not obj.spec.paused
    if applying:
        for child in desired:
            key = (child["apiVersion"], child["kind"])
            kind = kube.kind_of(child)
            if key in OPTIONAL_KINDS and not integrations.has(key):
                children.append(_summary(child, "Skipped", f"{kind.plural} CRD not installed"))
                continue
            try:
                live = await client.get(kind, obj.namespace, child["metadata"]["name"])
                if live is None or differs(child, live):
                    await client.apply(child)
                    writes += 1
                    telemetry.CHILDREN_APPLIED.labels(kind=child["kind"]).inc()
                    if drift:
                        telemetry.DRIFT_CORRECTIONS.labels(kind=child["kind"]).inc()
                children.append(_summary(child, "Applied"))
            except kube.ApiError as exc:
                children.append(_summary(child, "Failed", exc.message))
                if exc.temporary:
                    temporary = str(exc)
        if temporary is None:
            writes += await prune(client, obj, uid, desired, integrations)

    if not integrations.has(SCALED_OBJECT) and keda.queue_length_groups(obj):
        groups = ", ".join(g.name for g in keda.queue_length_groups(obj))
        notes.append(f"KEDA is not installed: worker groups {groups} run without autoscaling")

    api = status.rollout(
        await client.get(
            kube.KINDS[("apps/v1", "Deployment")], obj.namespace, deployment.name(obj)
        ),
        deployment.name(obj),
    )
    workers = []
    for group in obj.spec.queue.workers if obj.spec.queue else []:
        name = worker.name(obj, group)
        live_worker = await client.get(kube.KINDS[("apps/v1", "Deployment")], obj.namespace, name)
        workers.append(status.rollout(live_worker, name))

    observation = status.Observation(
        generation=generation,
        paused=obj.spec.paused,
        # Nothing was applied: the last reconcile's account of the children stands.
        children=children if applying else (previous.children if previous else []),
        api=api,
        workers=workers,
        monitoring=await _monitoring(client, obj, integrations, children),
        telemetry_enabled=obj.spec.observability.otel_collector.enabled,
        missing_secrets=missing,
        error=temporary,
        max_connections=model.max_connections(obj.spec),
        notes=notes,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    new_status = status.compute(observation, previous, now)
    result = "error" if temporary else "ok"
    telemetry.RECONCILES.labels(result=result).inc()
    telemetry.RECONCILE_SECONDS.labels(result=result).observe(time.perf_counter() - started)
    if temporary is None:
        telemetry.LAST_SUCCESS.set(time.time())
    return Outcome(
        new_status,
        status.transitions(previous, new_status),
        writes,
        temporary,
        desired=desired,
        secret_versions=versions,
        rollouts=[api, *workers],
    )


async def _monitoring(
    client: kube.Client,
    obj: BackendService,
    integrations: Integrations,
    children: Sequence[ChildSummary],
) -> status.MonitoringState:
    """Whether Prometheus can scrape this object through its ServiceMonitor, as observed."""
    monitor = servicemonitor.build(obj)
    if monitor is None:
        return "Disabled"
    if not integrations.has(SERVICE_MONITOR):
        return "CRDNotInstalled"
    if any(c.kind == "ServiceMonitor" and c.state == "Failed" for c in children):
        return "Failed"
    if any(c.kind == "ServiceMonitor" and c.state == "Applied" for c in children):
        return "Applied"
    # Nothing was applied this time (paused, or only observing), so look.
    live = await client.get(kube.kind_of(monitor), obj.namespace, monitor["metadata"]["name"])
    return "Applied" if live is not None else "Failed"


async def prune(
    client: kube.Client,
    obj: BackendService,
    uid: str,
    desired: Sequence[Mapping[str, Any]],
    integrations: Integrations,
) -> int:
    """Delete children this object owns that the spec no longer asks for (a worker group
    removed, the ServiceMonitor or the collector turned off)."""
    wanted = {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in desired}
    deleted = 0
    for kind in MANAGED_KINDS:
        if (kind.api_version, kind.kind) in OPTIONAL_KINDS and not integrations.has(
            (kind.api_version, kind.kind)
        ):
            continue
        for live in await client.list(kind, obj.namespace, {labels.OWNER_LABEL: obj.name}):
            key = (kind.api_version, kind.kind, live["metadata"]["name"])
            if key not in wanted and owned(live, uid):
                await client.delete(kind, obj.namespace, live["metadata"]["name"])
                deleted += 1
    return deleted
