"""KEDA objects that scale worker groups on RabbitMQ queue length."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adbm_operator import model
from adbm_operator.specs import keda, labels, worker
from tests.operator.specs.support import variant

# keda.sh/v1alpha1 fields the builders may use (KEDA v2 ScaledObject and TriggerAuthentication),
# and the rabbitmq scaler's metadata keys. The CRD schema check elsewhere is the strict one;
# these catch a misspelt key close to where it is written.
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
RABBITMQ_METADATA = {
    "protocol",
    "queueName",
    "mode",
    "value",
    "activationValue",
    "vhostName",
    "useRegex",
    "excludeUnacknowledged",
    "pageSize",
    "operation",
    "timeout",
    "unsafeSsl",
}


def groups(obj: model.BackendService) -> dict[str, model.WorkerGroup]:
    assert obj.spec.queue is not None
    return {g.name: g for g in obj.spec.queue.workers}


def with_workers(*workers: dict[str, Any]) -> model.BackendService:
    return variant(
        "full",
        spec__queue={"secretRef": {"name": "mq", "key": "amqp-uri"}, "workers": list(workers)},
    )


QUEUE_SCALED = {
    "name": "mail",
    "queues": ["mail.send", "mail.bounce", "mail.digest"],
    "autoscaling": {"scaler": "QueueLength", "minReplicas": 1, "maxReplicas": 4},
}
CPU_SCALED = {
    "name": "reports",
    "queues": ["reports"],
    "autoscaling": {"scaler": "CPU", "minReplicas": 1, "maxReplicas": 3},
}
FIXED = {"name": "billing", "queues": ["billing"], "replicas": 2}


# --- TriggerAuthentication ---------------------------------------------------------------------


def test_trigger_authentication_reads_the_queue_secret_by_reference(
    full: model.BackendService,
) -> None:
    auth = keda.trigger_authentication(full)
    assert auth is not None
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert auth["kind"] == "TriggerAuthentication"
    assert auth["metadata"]["name"] == labels.child_name(full, "rabbitmq") == "payments-rabbitmq"
    assert auth["metadata"]["namespace"] == "payments"
    assert auth["spec"] == {
        "secretTargetRef": [{"parameter": "host", "name": "payments-rabbitmq", "key": "uri"}]
    }


def test_trigger_authentication_follows_a_custom_secret_key() -> None:
    auth = keda.trigger_authentication(with_workers(QUEUE_SCALED))
    assert auth is not None
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "mq", "key": "amqp-uri"}
    ]


@pytest.mark.parametrize(
    "workers",
    [[], [FIXED], [CPU_SCALED], [FIXED, CPU_SCALED]],
    ids=["no-groups", "fixed", "cpu", "fixed+cpu"],
)
def test_no_trigger_authentication_without_a_queue_length_group(
    workers: list[dict[str, Any]],
) -> None:
    assert keda.trigger_authentication(with_workers(*workers)) is None


def test_no_trigger_authentication_without_a_queue(minimal: model.BackendService) -> None:
    assert minimal.spec.queue is None
    assert keda.trigger_authentication(minimal) is None
    assert keda.queue_length_groups(minimal) == []


def test_no_secret_material_is_rendered(full: model.BackendService) -> None:
    rendered = json.dumps(
        [keda.trigger_authentication(full), keda.scaled_object(full, groups(full)["notifications"])]
    )
    for forbidden in ("amqp://", "amqps://", '"host":', "password", "stringData", '"data"'):
        assert forbidden not in rendered


# --- ScaledObject ------------------------------------------------------------------------------


def test_scaled_object_targets_the_worker_deployment_within_the_group_bounds(
    full: model.BackendService,
) -> None:
    group = groups(full)["notifications"]
    scaled = keda.scaled_object(full, group)
    deployment_name = worker.name(full, group)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["kind"] == "ScaledObject"
    assert scaled["metadata"]["name"] == deployment_name == "payments-worker-notifications"
    assert scaled["metadata"]["labels"][labels.WORKER_GROUP_LABEL] == "notifications"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment_name,
    }
    assert spec["minReplicaCount"] == 0, "the example scales to zero"
    assert spec["maxReplicaCount"] == 5
    assert spec["pollingInterval"] == 15
    assert spec["cooldownPeriod"] == 300
    assert spec.keys() <= SCALED_OBJECT_SPEC


def test_one_rabbitmq_trigger_per_queue_authenticated_by_the_trigger_authentication() -> None:
    obj = with_workers(QUEUE_SCALED)
    group = groups(obj)["mail"]
    triggers = keda.scaled_object(obj, group)["spec"]["triggers"]
    auth = keda.trigger_authentication(obj)
    assert auth is not None
    assert [t["metadata"]["queueName"] for t in triggers] == group.queues
    for trigger in triggers:
        assert trigger.keys() <= TRIGGER
        assert trigger["type"] == "rabbitmq"
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
        metadata = trigger["metadata"]
        assert metadata.keys() <= RABBITMQ_METADATA
        assert metadata["protocol"] == "amqp"
        assert metadata["mode"] == "QueueLength"
        assert metadata["value"] == "100", "the default target, as a string as KEDA expects"


def test_target_queue_length_is_the_trigger_value(full: model.BackendService) -> None:
    triggers = keda.scaled_object(full, groups(full)["notifications"])["spec"]["triggers"]
    assert [t["metadata"] for t in triggers] == [
        {
            "protocol": "amqp",
            "queueName": "notifications.email",
            "mode": "QueueLength",
            "value": "200",
        }
    ]


@pytest.mark.parametrize("spec", [FIXED, CPU_SCALED], ids=["fixed", "cpu"])
def test_scaled_object_refuses_a_group_not_scaled_on_queue_length(spec: dict[str, Any]) -> None:
    obj = with_workers(spec)
    with pytest.raises(ValueError, match="queue length"):
        keda.scaled_object(obj, groups(obj)[spec["name"]])
