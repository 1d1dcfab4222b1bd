"""KEDA objects (keda.sh/v1alpha1) that scale worker groups on RabbitMQ queue length.

A ScaledObject per QueueLength-scaled group, and one TriggerAuthentication per BackendService
that points KEDA at the queue Secret: the RabbitMQ URI is never copied into a rendered object,
KEDA reads it from the Secret itself.
"""

from __future__ import annotations

from typing import Any

from adbm_operator.model import BackendService, WorkerGroup, WorkerScaler
from adbm_operator.specs import hpa, labels

API_VERSION = "keda.sh/v1alpha1"
COMPONENT = "worker"
# The rabbitmq scaler reads its connection URI from the `host` parameter.
HOST_PARAMETER = "host"
POLLING_INTERVAL_SECONDS = 15
# Only governs the last step to zero replicas; the HPA behaviour below paces the others.
COOLDOWN_SECONDS = 300


def scales_on_queue_length(group: WorkerGroup) -> bool:
    return group.autoscaling is not None and group.autoscaling.scaler is WorkerScaler.QUEUE_LENGTH


def queue_length_groups(obj: BackendService) -> list[WorkerGroup]:
    if obj.spec.queue is None:
        return []
    return [g for g in obj.spec.queue.workers if scales_on_queue_length(g)]


def trigger_authentication_name(obj: BackendService) -> str:
    return labels.child_name(obj, "rabbitmq")


def trigger_authentication(obj: BackendService) -> dict[str, Any] | None:
    """The credentials every ScaledObject of this BackendService uses; None when no worker group
    scales on queue length, so clusters without KEDA are never asked for its kinds."""
    if obj.spec.queue is None or not queue_length_groups(obj):
        return None
    ref = obj.spec.queue.secret_ref
    name = trigger_authentication_name(obj)
    return {
        "apiVersion": API_VERSION,
        "kind": "TriggerAuthentication",
        "metadata": labels.metadata(obj, name, COMPONENT),
        "spec": {
            "secretTargetRef": [{"parameter": HOST_PARAMETER, "name": ref.name, "key": ref.key}],
        },
    }


def _deployment_name(obj: BackendService, group: WorkerGroup) -> str:
    # Must equal worker.name(); computed here because worker imports this module.
    return labels.child_name(obj, "worker", group.name)


def scaled_object(obj: BackendService, group: WorkerGroup) -> dict[str, Any]:
    """A ScaledObject for one worker group, named like its Deployment.

    One trigger per queue: KEDA's HPA takes the largest replica count any trigger asks for, so
    `targetQueueLength` is the backlog per replica of each queue, and the busiest queue decides.
    """
    autoscaling = group.autoscaling
    if autoscaling is None or autoscaling.scaler is not WorkerScaler.QUEUE_LENGTH:
        raise ValueError(f"worker group {group.name!r} does not scale on queue length")
    name = _deployment_name(obj, group)
    auth = trigger_authentication_name(obj)
    return {
        "apiVersion": API_VERSION,
        "kind": "ScaledObject",
        "metadata": labels.metadata(obj, name, COMPONENT, group.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": POLLING_INTERVAL_SECONDS,
            "cooldownPeriod": COOLDOWN_SECONDS,
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa.BEHAVIOR}},
            "triggers": [
                {
                    "type": "rabbitmq",
                    "metadata": {
                        # AMQP reads the ready-message count with a passive queue declare, so
                        # KEDA needs no management-plugin credentials.
                        "protocol": "amqp",
                        "queueName": queue,
                        "mode": "QueueLength",
                        "value": str(autoscaling.target_queue_length),
                    },
                    "authenticationRef": {"name": auth},
                }
                for queue in group.queues
            ],
        },
    }
