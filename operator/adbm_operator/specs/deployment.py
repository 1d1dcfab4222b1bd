"""The API Deployment, and its HorizontalPodAutoscaler when the API is autoscaled.

Rollouts never lower serving capacity (no pod goes before its replacement is ready), and a
rollout that cannot finish is reported by Kubernetes instead of hanging silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import configmap, hpa, labels, pod

COMPONENT = "api"
HTTP_PORT_NAME = "http"
METRICS_PORT_NAME = "metrics"

REVISION_HISTORY_LIMIT = 5
# After this long without progress the Deployment reports Progressing=False
# (ProgressDeadlineExceeded), which the operator surfaces in status.
PROGRESS_DEADLINE_SECONDS = 300
# One more readiness period: a pod that crashes right after its first successful probe does not
# count as available, so the rollout stops instead of replacing healthy pods with it.
MIN_READY_SECONDS = 5
PROBE_TIMEOUT_SECONDS = 2


def name(obj: BackendService) -> str:
    return labels.child_name(obj, COMPONENT)


def ports() -> list[dict[str, Any]]:
    """Named container ports: the Service, the NetworkPolicy and the probes refer to the names,
    so the numbers can change in one place."""
    return [
        {"name": HTTP_PORT_NAME, "containerPort": configmap.HTTP_PORT, "protocol": "TCP"},
        {"name": METRICS_PORT_NAME, "containerPort": configmap.METRICS_PORT, "protocol": "TCP"},
    ]


def _http_get(path: str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": HTTP_PORT_NAME}}


def probes() -> dict[str, dict[str, Any]]:
    """Liveness asks only whether the process is alive (/health), never about its dependencies,
    so a database outage takes pods out of rotation (/ready) instead of restarting them all."""
    return {
        # Up to a minute to start; liveness does not run until this has passed once.
        "startupProbe": {
            **_http_get("/health"),
            "periodSeconds": 2,
            "failureThreshold": 30,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        },
        "livenessProbe": {
            **_http_get("/health"),
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        },
        "readinessProbe": {
            **_http_get("/ready"),
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        },
    }


def container(obj: BackendService) -> dict[str, Any]:
    return pod.app_container(
        obj, args=["serve"], resources=obj.spec.resources, ports=ports(), probes=probes()
    )


def build(
    obj: BackendService, *, secret_versions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    # An autoscaled Deployment has no `replicas`: the HPA owns that field, and writing it here
    # would reset the replica count on every reconcile.
    if obj.spec.autoscaling is None:
        spec["replicas"] = obj.spec.replicas
    spec |= {
        "selector": {"matchLabels": labels.selector_labels(obj, COMPONENT)},
        "strategy": {
            "type": "RollingUpdate",
            # Surge first, never drop below the desired count.
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
        "minReadySeconds": MIN_READY_SECONDS,
        "template": pod.pod_template(
            obj,
            component=COMPONENT,
            group=None,
            container=container(obj),
            secret_versions=secret_versions,
        ),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": labels.metadata(obj, name(obj), COMPONENT),
        "spec": spec,
    }


def build_all(
    obj: BackendService, *, secret_versions: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The Deployment, then its HPA when the API is autoscaled."""
    children = [build(obj, secret_versions=secret_versions)]
    autoscaling = obj.spec.autoscaling
    if autoscaling is not None:
        children.append(
            hpa.build(obj, deployment=name(obj), autoscaling=autoscaling, component=COMPONENT)
        )
    return children
