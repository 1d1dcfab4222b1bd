"""Worker Deployments, one per group, and the autoscaler each group asks for."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from adbm_operator import model
from adbm_operator.specs import deployment, keda, labels, pod, worker
from tests.operator.specs.support import assert_valid as validate
from tests.operator.specs.support import variant

DNS_LABEL = re.compile(model.DNS_LABEL)


def with_workers(*workers: dict[str, Any], name: str = "payments") -> model.BackendService:
    return variant(
        "full",
        metadata__name=name,
        spec__queue={"secretRef": {"name": "payments-rabbitmq"}, "workers": list(workers)},
    )


def of_kind(children: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == kind]


def by_name(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in of_kind(children, kind)}


def app(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == [pod.APP_CONTAINER]
    container: dict[str, Any] = containers[0]
    return container


def groups(obj: model.BackendService) -> dict[str, model.WorkerGroup]:
    assert obj.spec.queue is not None
    return {g.name: g for g in obj.spec.queue.workers}


CPU_SCALED = {
    "name": "reports",
    "queues": ["reports.daily"],
    "autoscaling": {"scaler": "CPU", "minReplicas": 2, "maxReplicas": 4},
}
QUEUE_SCALED = {
    "name": "mail",
    "queues": ["mail.send", "mail.bounce"],
    "autoscaling": {"scaler": "QueueLength", "minReplicas": 0, "maxReplicas": 3},
}

# The model wants one group that never scales to zero (the outbox relay runs in the workers).
RELAYING = {"name": "relay", "queues": ["orders.place"], "replicas": 1}


# --- Deployments -------------------------------------------------------------------------------


def test_one_deployment_per_group_running_its_queues_and_prefetch(
    full: model.BackendService,
) -> None:
    deployments = by_name(worker.build_all(full), "Deployment")
    assert sorted(deployments) == ["payments-worker-notifications", "payments-worker-orders"]
    orders = app(deployments["payments-worker-orders"])
    assert orders["command"] == ["adbm-service"]
    assert orders["args"] == [
        "worker",
        "--queues=orders.place,orders.compensate",
        "--prefetch",
        "32",
    ]
    notifications = app(deployments["payments-worker-notifications"])
    assert notifications["args"] == [
        "worker",
        "--queues=notifications.email",
        "--prefetch",
        "8",
    ]


def test_workers_run_the_api_image_with_their_own_resources(full: model.BackendService) -> None:
    deployments = by_name(worker.build_all(full), "Deployment")
    api = app(deployment.build(full))
    orders = app(deployments["payments-worker-orders"])
    notifications = app(deployments["payments-worker-notifications"])
    assert orders["image"] == notifications["image"] == api["image"] == full.spec.image
    assert orders["imagePullPolicy"] == api["imagePullPolicy"]
    assert orders["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }, "the WorkerGroup default"
    assert notifications["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "192Mi"},
    }


def test_replicas_only_when_not_autoscaled(full: model.BackendService) -> None:
    deployments = by_name(worker.build_all(full), "Deployment")
    assert deployments["payments-worker-orders"]["spec"]["replicas"] == 2
    assert "replicas" not in deployments["payments-worker-notifications"]["spec"]
    cpu = worker.deployment(with_workers(CPU_SCALED), groups(with_workers(CPU_SCALED))["reports"])
    assert "replicas" not in cpu["spec"]


def test_zero_fixed_replicas_are_rendered_not_dropped() -> None:
    obj = with_workers({"name": "paused", "queues": ["q"], "replicas": 0}, RELAYING)
    assert worker.deployment(obj, groups(obj)["paused"])["spec"]["replicas"] == 0


def test_rollout_surges_one_worker_and_never_drops_below_desired(
    full: model.BackendService,
) -> None:
    for dep in of_kind(worker.build_all(full), "Deployment"):
        spec = dep["spec"]
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
        assert spec["revisionHistoryLimit"] == 5
        assert spec["progressDeadlineSeconds"] == 300


def test_only_the_metrics_port_which_serves_health_and_readiness(
    full: model.BackendService,
) -> None:
    container = app(worker.deployment(full, groups(full)["orders"]))
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    paths = {
        probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": ("/health", "metrics"),
        "livenessProbe": ("/health", "metrics"),
        "readinessProbe": ("/ready", "metrics"),
    }


def test_workers_drain_in_flight_messages_not_endpoints(full: model.BackendService) -> None:
    api = deployment.build(full)["spec"]["template"]["spec"]
    for dep in of_kind(worker.build_all(full), "Deployment"):
        template = dep["spec"]["template"]["spec"]
        assert "lifecycle" not in app(dep), "no Service routes to a worker: no preStop sleep"
        assert template["terminationGracePeriodSeconds"] == 60
        assert template["terminationGracePeriodSeconds"] > api["terminationGracePeriodSeconds"]


def test_pods_are_hardened_like_the_api(full: model.BackendService) -> None:
    template = worker.deployment(full, groups(full)["orders"])["spec"]["template"]["spec"]
    assert template["automountServiceAccountToken"] is False
    assert template["securityContext"] == pod.pod_security_context()
    assert app({"spec": {"template": {"spec": template}}})["securityContext"] == (
        pod.container_security_context()
    )
    assert [c["name"] for c in template["initContainers"]] == ["otel-collector"]


def test_queue_uri_comes_from_the_secret_by_reference(full: model.BackendService) -> None:
    env = {e["name"]: e for e in app(worker.deployment(full, groups(full)["orders"]))["env"]}
    assert env["ADBM_AMQP_URL"] == {
        "name": "ADBM_AMQP_URL",
        "valueFrom": {"secretKeyRef": {"name": "payments-rabbitmq", "key": "uri"}},
    }
    assert "amqp://" not in json.dumps(worker.build_all(full))


# --- labels and selectors ----------------------------------------------------------------------


def test_selectors_are_distinct_per_group_and_select_only_their_own_pods(
    full: model.BackendService,
) -> None:
    deployments = [*of_kind(worker.build_all(full), "Deployment"), deployment.build(full)]
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    for i, selector in enumerate(selectors):
        for j, pods in enumerate(pod_labels):
            selects = selector.items() <= pods.items()
            assert selects == (i == j), (deployments[i]["metadata"]["name"], j)


def test_group_label_on_the_deployment_and_its_pods(full: model.BackendService) -> None:
    dep = worker.deployment(full, groups(full)["orders"])
    for meta in (dep["metadata"], dep["spec"]["template"]["metadata"]):
        assert meta["labels"][labels.WORKER_GROUP_LABEL] == "orders"
        assert meta["labels"]["app.kubernetes.io/component"] == "worker"
        assert meta["labels"][labels.OWNER_LABEL] == "payments"
    assert dep["metadata"]["namespace"] == "payments"


# --- configuration checksums -------------------------------------------------------------------


def test_config_checksum_matches_the_api_deployment(full: model.BackendService) -> None:
    api = deployment.build(full)["spec"]["template"]["metadata"]["annotations"]
    for dep in of_kind(worker.build_all(full), "Deployment"):
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations[pod.CONFIG_CHECKSUM] == api[pod.CONFIG_CHECKSUM]
        assert annotations[pod.OTEL_CHECKSUM] == api[pod.OTEL_CHECKSUM]
        assert pod.SECRETS_CHECKSUM not in annotations, "offline rendering knows no Secrets"


def test_secret_versions_roll_workers_with_the_api(full: model.BackendService) -> None:
    versions = {"payments-rabbitmq": "7", "payments-redis": "3"}
    rotated = {**versions, "payments-rabbitmq": "8"}

    def secrets_sum(v: dict[str, str]) -> str:
        dep = of_kind(worker.build_all(full, secret_versions=v), "Deployment")[0]
        annotation: str = dep["spec"]["template"]["metadata"]["annotations"][pod.SECRETS_CHECKSUM]
        return annotation

    api = deployment.build(full, secret_versions=versions)["spec"]["template"]["metadata"]
    assert secrets_sum(versions) == api["annotations"][pod.SECRETS_CHECKSUM]
    assert secrets_sum(rotated) != secrets_sum(versions)


# --- autoscalers -------------------------------------------------------------------------------


def test_cpu_scaled_group_gets_an_hpa_and_no_keda_objects() -> None:
    obj = with_workers(CPU_SCALED)
    children = worker.build_all(obj)
    assert [c["kind"] for c in children] == ["Deployment", "HorizontalPodAutoscaler"]
    dep, hpa = children
    assert hpa["metadata"]["name"] == dep["metadata"]["name"] == "payments-worker-reports"
    assert hpa["metadata"]["labels"][labels.WORKER_GROUP_LABEL] == "reports"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "payments-worker-reports",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)


def test_queue_length_group_gets_a_scaled_object_and_no_hpa() -> None:
    obj = with_workers(QUEUE_SCALED, RELAYING)
    children = worker.build_all(obj)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("TriggerAuthentication", "payments-rabbitmq"),
        ("Deployment", "payments-worker-mail"),
        ("ScaledObject", "payments-worker-mail"),
        ("Deployment", "payments-worker-relay"),
    ]
    _, dep, scaled, relaying = children
    assert relaying["spec"]["replicas"] == 1  # and no autoscaler of its own
    assert scaled["metadata"]["name"] == dep["metadata"]["name"] == "payments-worker-mail"
    assert scaled["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert [t["metadata"]["queueName"] for t in scaled["spec"]["triggers"]] == [
        "mail.send",
        "mail.bounce",
    ]


def test_full_example_children_in_apply_order(full: model.BackendService) -> None:
    children = worker.build_all(full)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("TriggerAuthentication", "payments-rabbitmq"),
        ("Deployment", "payments-worker-orders"),
        ("Deployment", "payments-worker-notifications"),
        ("ScaledObject", "payments-worker-notifications"),
    ]


def test_one_trigger_authentication_shared_by_every_queue_length_group() -> None:
    second = {**QUEUE_SCALED, "name": "sms", "queues": ["sms.send"]}
    obj = with_workers(QUEUE_SCALED, CPU_SCALED, second)
    children = worker.build_all(obj)
    (auth,) = of_kind(children, "TriggerAuthentication")
    scaled = of_kind(children, "ScaledObject")
    assert [s["metadata"]["name"] for s in scaled] == [
        "payments-worker-mail",
        "payments-worker-sms",
    ]
    for s in scaled:
        for trigger in s["spec"]["triggers"]:
            assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    (hpa,) = of_kind(children, "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "payments-worker-reports"


def test_autoscaler_is_none_for_a_fixed_group(full: model.BackendService) -> None:
    assert worker.autoscaler(full, groups(full)["orders"]) is None


# --- no workers --------------------------------------------------------------------------------


def test_no_workers_without_a_queue(minimal: model.BackendService) -> None:
    assert minimal.spec.queue is None
    assert worker.build_all(minimal) == []


def test_no_workers_for_an_empty_group_list() -> None:
    assert worker.build_all(with_workers()) == []


# --- names -------------------------------------------------------------------------------------


def test_long_names_stay_valid_and_unique() -> None:
    long_name = "a" * 62 + "z"
    fixed, by_queue, by_cpu = ("g" * 29 + suffix for suffix in "abc")
    obj = with_workers(
        {"name": fixed, "queues": ["a"]},
        {**QUEUE_SCALED, "name": by_queue},
        {**CPU_SCALED, "name": by_cpu},
        name=long_name,
    )
    children = worker.build_all(obj)
    names = {(c["kind"], c["metadata"]["name"]) for c in children}
    assert len(names) == len(children)
    for kind, child_name in names:
        assert len(child_name) <= labels.MAX_NAME, (kind, child_name)
        assert DNS_LABEL.match(child_name), (kind, child_name)
    deployments = of_kind(children, "Deployment")
    assert len({d["metadata"]["name"] for d in deployments}) == 3
    assert all(len(d["metadata"]["name"]) == labels.MAX_NAME for d in deployments), "shortened"
    # Each autoscaler still finds its own Deployment under the shortened name.
    targets = {
        c["spec"]["scaleTargetRef"]["name"] for c in children if "scaleTargetRef" in c["spec"]
    }
    assert targets == {worker.name(obj, groups(obj)[g]) for g in (by_queue, by_cpu)}
    for dep in deployments:
        for value in dep["spec"]["template"]["metadata"]["labels"].values():
            assert len(value) <= 63


# --- schema --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(variant("full"), id="full"),
        pytest.param(with_workers(CPU_SCALED, QUEUE_SCALED), id="cpu+queue"),
        pytest.param(
            variant("full", spec__observability__otelCollector={"enabled": False}),
            id="no-collector",
        ),
    ],
)
def test_core_objects_pass_strict_kubernetes_validation(obj: model.BackendService) -> None:
    children = worker.build_all(obj, secret_versions={"payments-rabbitmq": "1"})
    core = [c for c in children if not c["apiVersion"].startswith(keda.API_VERSION.split("/")[0])]
    assert {c["kind"] for c in core} <= {"Deployment", "HorizontalPodAutoscaler"}
    assert core
    for child in core:
        validate(child)
