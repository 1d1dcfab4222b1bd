"""Queue worker Deployments, one per worker group, and their autoscalers.

Workers run the same image as the API with `adbm-service worker`. They have no HTTP API and no
Service: the only port is the metrics port, which also serves their health and readiness.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adbm_operator.model import BackendService, WorkerGroup, WorkerScaler
from adbm_operator.specs import configmap, hpa, keda, labels, pod

COMPONENT = "worker"
METRICS_PORT_NAME = "metrics"
# Longer than the API's: a worker stops consuming on SIGTERM, and the messages it already holds
# get time to finish and be acked instead of being redelivered to another worker.
TERMINATION_GRACE_SECONDS = 60


def name(obj: BackendService, group: WorkerGroup) -> str:
    return labels.child_name(obj, COMPONENT, group.name)


def _http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": METRICS_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def probes() -> dict[str, dict[str, Any]]:
    # No Service routes to a worker, but readiness still matters: with maxUnavailable 0 an old
    # worker is only stopped once its replacement reports ready (connected to the broker).
    return {
        "startupProbe": _http_probe("/health", period=2, failures=30),
        "livenessProbe": _http_probe("/health", period=10, failures=3),
        "readinessProbe": _http_probe("/ready", period=5, failures=2),
    }


def args(group: WorkerGroup) -> list[str]:
    # `--queues=<list>` as one argument: the CRD lets a queue name start with '-', and argparse
    # takes a separate argument that starts with '-' for an option, not for the option's value.
    return ["worker", f"--queues={','.join(group.queues)}", "--prefetch", str(group.prefetch)]


def deployment(
    obj: BackendService, group: WorkerGroup, *, secret_versions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Deployment of one worker group; without `replicas` when an autoscaler owns them."""
    deployment_name = name(obj, group)
    container = pod.app_container(
        obj,
        args=args(group),
        resources=group.resources,
        ports=[
            {
                "name": METRICS_PORT_NAME,
                "containerPort": configmap.METRICS_PORT,
                "protocol": "TCP",
            }
        ],
        probes=probes(),
        # Nothing routes to a worker, so there is nothing to drain before SIGTERM.
        behind_service=False,
    )
    spec: dict[str, Any] = {}
    if group.autoscaling is None:
        spec["replicas"] = group.replicas
    spec |= {
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": 300,
        "selector": {"matchLabels": labels.selector_labels(obj, COMPONENT, group.name)},
        # Never below the desired count during a rollout: a surge worker starts consuming
        # before an old one stops. Valid at 0 replicas too, when KEDA has scaled to zero.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": pod.pod_template(
            obj,
            component=COMPONENT,
            group=group.name,
            container=container,
            secret_versions=secret_versions,
            termination_grace_seconds=TERMINATION_GRACE_SECONDS,
        ),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": labels.metadata(obj, deployment_name, COMPONENT, group.name),
        "spec": spec,
    }


def autoscaler(obj: BackendService, group: WorkerGroup) -> dict[str, Any] | None:
    """The group's HPA (CPU) or KEDA ScaledObject (QueueLength); None when not autoscaled."""
    if group.autoscaling is None:
        return None
    if group.autoscaling.scaler is WorkerScaler.QUEUE_LENGTH:
        return keda.scaled_object(obj, group)
    return hpa.build(
        obj,
        deployment=name(obj, group),
        autoscaling=group.autoscaling,
        component=COMPONENT,
        group=group.name,
    )


def build_all(
    obj: BackendService, *, secret_versions: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every worker child: the TriggerAuthentication first (ScaledObjects refer to it), then
    each group's Deployment followed by its autoscaler."""
    if obj.spec.queue is None:
        return []
    children: list[dict[str, Any]] = []
    auth = keda.trigger_authentication(obj)
    if auth is not None:
        children.append(auth)
    for group in obj.spec.queue.workers:
        children.append(deployment(obj, group, secret_versions=secret_versions))
        scaler = autoscaler(obj, group)
        if scaler is not None:
            children.append(scaler)
    return children
