"""The API Deployment: who owns replicas, how it rolls out, how its pods run and what rolls them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from adbm_operator import model
from adbm_operator.specs import configmap, deployment, labels, otel, pod
from tests.operator.specs.support import assert_valid, example

NO_COLLECTOR = {"spec.observability.otelCollector": {"enabled": False}}
VARIANTS = {
    "minimal": example("minimal"),
    "full": example("full"),
    "no-collector": example("minimal", NO_COLLECTOR),
}


def pod_spec(dep: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


def app(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(dep)["containers"]
    (container,) = [c for c in containers if c["name"] == pod.APP_CONTAINER]
    return container


def pod_annotations(dep: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = dep["spec"]["template"]["metadata"]["annotations"]
    return found


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


# --- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_child_is_a_valid_kubernetes_object(variant: str) -> None:
    for child in deployment.build_all(VARIANTS[variant], secret_versions={"x": "1"}):
        assert_valid(child)


# --- replicas and autoscaling ------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_replicas_follow_the_spec_when_not_autoscaled(replicas: int) -> None:
    dep = deployment.build(example("minimal", {"spec.replicas": replicas}))
    assert dep["spec"]["replicas"] == replicas


def test_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    # Even an explicit spec.replicas is not rendered: the HPA owns the field.
    obj = example("full", {"spec.replicas": 4})
    assert obj.spec.autoscaling is not None
    assert "replicas" not in deployment.build(obj)["spec"]


def test_hpa_is_rendered_only_when_autoscaled() -> None:
    assert [c["kind"] for c in deployment.build_all(example("minimal"))] == ["Deployment"]
    assert [c["kind"] for c in deployment.build_all(example("full"))] == [
        "Deployment",
        "HorizontalPodAutoscaler",
    ]


def test_hpa_targets_the_deployment_with_the_spec_bounds() -> None:
    obj = example("minimal", {"spec.autoscaling": {"minReplicas": 2, "maxReplicas": 7}})
    dep, autoscaler = deployment.build_all(obj)
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": dep["apiVersion"],
        "kind": dep["kind"],
        "name": dep["metadata"]["name"],
    }
    assert autoscaler["spec"]["minReplicas"] == 2
    assert autoscaler["spec"]["maxReplicas"] == 7
    assert autoscaler["metadata"]["namespace"] == dep["metadata"]["namespace"]


def test_a_long_name_is_shortened_and_the_hpa_follows_it() -> None:
    long_name = "a" * 63
    obj = example("full", {"metadata.name": long_name})
    dep, autoscaler = deployment.build_all(obj)
    assert len(dep["metadata"]["name"]) <= labels.MAX_NAME
    assert dep["metadata"]["name"] == deployment.name(obj)
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert_valid(dep)


# --- selector and rollout ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_selector_selects_the_pod_template(variant: str) -> None:
    dep = deployment.build(VARIANTS[variant])
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_selector_does_not_change_with_the_spec() -> None:
    # A Deployment's selector is immutable: anything in it that follows the spec would make
    # the next apply fail.
    before = deployment.build(example("minimal"))
    after = deployment.build(
        example("minimal", {"spec.image": "other:2", "spec.autoscaling": {"maxReplicas": 3}})
    )
    assert before["spec"]["selector"] == after["spec"]["selector"]


def test_selector_does_not_select_worker_pods() -> None:
    obj = example("full")
    selector = deployment.build(obj)["spec"]["selector"]["matchLabels"]
    assert obj.spec.queue is not None
    for group in obj.spec.queue.workers:
        worker_labels = labels.labels(obj, "worker", group.name)
        assert not selector.items() <= worker_labels.items()


def test_rollout_surges_and_never_drops_below_the_desired_count() -> None:
    spec = deployment.build(example("minimal"))["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }
    assert spec["progressDeadlineSeconds"] == 300
    assert spec["revisionHistoryLimit"] == 5
    # minReadySeconds must stay well under the deadline, or every rollout would "fail".
    assert 0 <= spec["minReadySeconds"] < spec["progressDeadlineSeconds"]


# --- the container -----------------------------------------------------------------------------


def test_container_serves_the_api_from_the_spec_image_and_resources() -> None:
    obj = example("full")
    container = app(deployment.build(obj))
    assert container["image"] == obj.spec.image
    assert container["command"] == ["adbm-service"]
    assert container["args"] == ["serve"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "384Mi"},
        "limits": {"memory": "768Mi"},
    }


def test_container_ports_are_where_the_service_is_told_to_listen() -> None:
    obj = example("minimal")
    ports = {p["name"]: p for p in app(deployment.build(obj))["ports"]}
    settings = configmap.settings(obj)
    assert set(ports) == {"http", "metrics"}
    assert str(ports["http"]["containerPort"]) == settings["ADBM_HTTP_PORT"]
    assert str(ports["metrics"]["containerPort"]) == settings["ADBM_METRICS_PORT"]
    assert all(p["protocol"] == "TCP" for p in ports.values())


@pytest.mark.parametrize(
    ("probe", "path"),
    [("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")],
)
def test_probes_hit_health_and_ready_on_the_named_http_port(probe: str, path: str) -> None:
    container = app(deployment.build(example("minimal")))
    port_names = {p["name"] for p in container["ports"]}
    assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    assert container[probe]["httpGet"]["port"] in port_names


def test_startup_probe_holds_liveness_off_while_the_service_starts() -> None:
    container = app(deployment.build(example("minimal")))
    startup = container["startupProbe"]
    liveness = container["livenessProbe"]
    readiness = container["readinessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert (liveness["periodSeconds"], liveness["failureThreshold"]) == (10, 3)
    assert (readiness["periodSeconds"], readiness["failureThreshold"]) == (5, 2)
    # Readiness reacts faster than liveness: a struggling pod leaves rotation before a restart.
    assert (
        readiness["periodSeconds"] * readiness["failureThreshold"]
        < liveness["periodSeconds"] * liveness["failureThreshold"]
    )


def test_container_drains_before_it_is_stopped() -> None:
    container = app(deployment.build(example("minimal")))
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0


def test_configuration_comes_from_the_rendered_configmap() -> None:
    obj = example("full")
    container = app(deployment.build(obj))
    assert container["envFrom"] == [{"configMapRef": {"name": configmap.name(obj)}}]


# --- credentials -------------------------------------------------------------------------------


def env_by_name(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in app(dep)["env"]}


def test_connection_urls_come_from_secret_references() -> None:
    obj = example("full", {"spec.redis.secretRef": {"name": "cache", "key": "url"}})
    env = env_by_name(deployment.build(obj))
    assert obj.spec.queue is not None
    expected = {
        # The pods read the app role the operator provisions, never the admin Secret.
        "ADBM_DATABASE_URL": {"name": labels.db_app_secret_name(obj), "key": "uri"},
        "ADBM_REDIS_URL": {"name": "cache", "key": "url"},
        "ADBM_AMQP_URL": {
            "name": obj.spec.queue.secret_ref.name,
            "key": obj.spec.queue.secret_ref.key,
        },
    }
    for variable, ref in expected.items():
        assert env[variable] == {"name": variable, "valueFrom": {"secretKeyRef": ref}}


def test_no_amqp_url_without_a_queue() -> None:
    assert "ADBM_AMQP_URL" not in env_by_name(deployment.build(example("minimal")))


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_credential_reaches_the_deployment(variant: str) -> None:
    obj = VARIANTS[variant]
    rendered = deployment.build(obj, secret_versions={"anything": "7"})
    text = list(strings(rendered))
    assert not any("://" in s for s in text)
    assert obj.spec.database.admin_secret_ref.name not in json.dumps(rendered)
    for entry in app(rendered)["env"]:
        if entry["name"].endswith("_URL"):
            assert "value" not in entry
            assert set(entry["valueFrom"]) == {"secretKeyRef"}


# --- security ----------------------------------------------------------------------------------


def all_containers(dep: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(dep)
    containers: list[dict[str, Any]] = [*spec["containers"], *spec.get("initContainers", [])]
    return containers


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_runs_locked_down(variant: str) -> None:
    dep = deployment.build(VARIANTS[variant])
    for container in all_containers(dep):
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert ctx["runAsUser"] != 0
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx.get("privileged", False) is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert "add" not in ctx["capabilities"]
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    pod_ctx = pod_spec(dep)["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True
    assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(dep)["automountServiceAccountToken"] is False


def test_the_collector_is_a_native_sidecar_when_enabled() -> None:
    obj = example("minimal")
    spec = pod_spec(deployment.build(obj))
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == otel.CONTAINER
    assert sidecar["restartPolicy"] == "Always"
    assert otel.volume(obj) in spec["volumes"]


def test_no_collector_sidecar_when_disabled() -> None:
    dep = deployment.build(VARIANTS["no-collector"])
    spec = pod_spec(dep)
    assert "initContainers" not in spec
    assert [v["name"] for v in spec["volumes"]] == [pod.TMP_VOLUME]
    assert pod.OTEL_CHECKSUM not in pod_annotations(dep)


# --- what rolls the pods -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"spec.database.pool.maxSize": 5},
        {"spec.rateLimit.requests": 7},
        {"spec.observability.logLevel": "DEBUG"},
    ],
    ids=["pool.maxSize", "rateLimit.requests", "logLevel"],
)
def test_config_checksum_changes_with_configuration(change: dict[str, Any]) -> None:
    before = pod_annotations(deployment.build(example("minimal")))
    after = pod_annotations(deployment.build(example("minimal", change)))
    assert before[pod.CONFIG_CHECKSUM] != after[pod.CONFIG_CHECKSUM]


@pytest.mark.parametrize(
    "change",
    [
        {"spec.replicas": 3},
        {"spec.resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
        {"spec.autoscaling": {"maxReplicas": 4}},
    ],
    ids=["replicas", "resources", "autoscaling"],
)
def test_config_checksum_ignores_what_the_pods_do_not_read(change: dict[str, Any]) -> None:
    # These fields change the Deployment itself; a checksum change would add a needless
    # second reason to roll (or, for replicas, roll pods on every scale).
    before = pod_annotations(deployment.build(example("minimal")))
    after = pod_annotations(deployment.build(example("minimal", change)))
    assert before == after


def test_collector_checksum_follows_the_collector_config() -> None:
    before = pod_annotations(deployment.build(example("minimal")))
    after = pod_annotations(
        deployment.build(
            example("minimal", {"spec.observability.otelCollector.endpoint": "other:4317"})
        )
    )
    assert before[pod.OTEL_CHECKSUM] != after[pod.OTEL_CHECKSUM]
    assert before[pod.CONFIG_CHECKSUM] == after[pod.CONFIG_CHECKSUM]


def test_no_secrets_checksum_without_observed_versions() -> None:
    # Offline rendering cannot know Secret versions, so it must not invent one.
    assert pod.SECRETS_CHECKSUM not in pod_annotations(deployment.build(example("full")))


def secret_versions(obj: model.BackendService, version: str = "1") -> dict[str, str]:
    return {ref.name: version for ref in pod.referenced_secrets(obj)}


@pytest.mark.parametrize("which", ["db-app", "redis", "queue"])
def test_secrets_checksum_changes_when_a_referenced_secret_changes(which: str) -> None:
    obj = example("full")
    assert obj.spec.queue is not None
    secret = {
        "db-app": labels.db_app_secret_name(obj),
        "redis": obj.spec.redis.secret_ref.name,
        "queue": obj.spec.queue.secret_ref.name,
    }[which]
    versions = secret_versions(obj)
    before = pod_annotations(deployment.build(obj, secret_versions=versions))
    after = pod_annotations(deployment.build(obj, secret_versions={**versions, secret: "2"}))
    assert before[pod.SECRETS_CHECKSUM] != after[pod.SECRETS_CHECKSUM]
    assert before[pod.CONFIG_CHECKSUM] == after[pod.CONFIG_CHECKSUM]


def test_secrets_checksum_ignores_secrets_the_pods_do_not_read() -> None:
    obj = example("full")
    versions = secret_versions(obj)
    before = pod_annotations(deployment.build(obj, secret_versions=versions))
    unrelated = {**versions, obj.spec.database.admin_secret_ref.name: "99", "other": "3"}
    after = pod_annotations(deployment.build(obj, secret_versions=unrelated))
    assert before == after
