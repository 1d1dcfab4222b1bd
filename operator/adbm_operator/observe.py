"""What the live objects say, read into plain facts for `status` to decide on.

Pure functions of objects as the API server returned them: a Deployment's rollout (decided as
`kubectl rollout status` does), whether the collector sidecar is in the pod template each
Deployment actually runs, and whether the live ServiceMonitor selects the live Service's metrics
port (by prometheus-operator's rules). Nothing here is taken from the spec's word alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


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
class Collector:
    """The collector sidecar as found in the live Deployments' pod templates."""

    enabled: bool
    """Whether the spec asks for it."""
    running: tuple[str, ...] = ()
    """Deployments whose pod template has the sidecar, with the image the spec asks for."""
    lacking: tuple[str, ...] = ()
    """Deployments whose pod template does not (or that do not exist)."""


def collector(
    enabled: bool,
    container: str,
    image: str,
    deployments: Mapping[str, Mapping[str, Any] | None],
) -> Collector:
    """Which of `deployments` (name -> live object, None when absent) run the collector: an init
    container of that name and image with `restartPolicy: Always` (a native sidecar; without it
    the kubelet would wait for it to exit before starting the service)."""
    running: list[str] = []
    lacking: list[str] = []
    for name, live in deployments.items():
        template = ((live or {}).get("spec") or {}).get("template") or {}
        init = (template.get("spec") or {}).get("initContainers") or []
        found = any(
            c.get("name") == container
            and c.get("image") == image
            and c.get("restartPolicy") == "Always"
            for c in init
        )
        (running if found else lacking).append(name)
    return Collector(enabled, tuple(running), tuple(lacking))


MonitoringState = Literal[
    "Applied", "Disabled", "CRDNotInstalled", "Failed", "Missing", "Unselected"
]


@dataclass(frozen=True)
class Monitoring:
    state: MonitoringState
    detail: str = ""


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels, as apimachinery
    decides; an empty selector selects everything."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an unknown operator is an invalid selector, which selects nothing
    return True


def _in_namespaces(monitor: Mapping[str, Any], namespace: str | None) -> bool:
    """prometheus-operator's namespaceSelector: `any`, a list of names, or (neither) the
    ServiceMonitor's own namespace."""
    selector = (monitor.get("spec") or {}).get("namespaceSelector") or {}
    if selector.get("any"):
        return True
    names = selector.get("matchNames") or []
    if names:
        return namespace in names
    return namespace == (monitor.get("metadata") or {}).get("namespace")


def monitoring(
    monitor: Mapping[str, Any] | None,
    service: Mapping[str, Any] | None,
    metrics_target_port: str,
) -> Monitoring:
    """Whether Prometheus, through the live ServiceMonitor, scrapes the live Service's metrics
    port: the monitor selects the Service by its labels and namespace, and one of its endpoints
    names a Service port (endpoints name Service ports) that targets the container's metrics
    port."""
    if monitor is None:
        return Monitoring("Missing", "the ServiceMonitor does not exist")
    name = (monitor.get("metadata") or {}).get("name")
    if service is None:
        return Monitoring("Unselected", f"ServiceMonitor {name}: the Service does not exist")
    meta = service.get("metadata") or {}
    spec = monitor.get("spec") or {}
    if not _in_namespaces(monitor, meta.get("namespace")) or not _matches(
        spec.get("selector") or {}, meta.get("labels") or {}
    ):
        return Monitoring(
            "Unselected", f"ServiceMonitor {name} does not select Service {meta.get('name')}"
        )
    metrics_ports = {
        p.get("name")
        for p in (service.get("spec") or {}).get("ports") or []
        if p.get("targetPort") == metrics_target_port
    }
    if not any(ep.get("port") in metrics_ports for ep in spec.get("endpoints") or []):
        return Monitoring(
            "Unselected",
            f"ServiceMonitor {name} has no endpoint on the port of Service {meta.get('name')}"
            f" that targets {metrics_target_port!r}",
        )
    return Monitoring("Applied")
