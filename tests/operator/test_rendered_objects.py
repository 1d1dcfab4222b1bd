"""Every object `specs.render` produces is one the API server would accept, and the set holds
together: names, labels, namespaces, selectors, references and autoscaler ownership.

The examples are checked exactly; a Hypothesis sweep checks the same for bodies drawn from the
whole API (see `strategies.backend_services`).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adbm_operator import model, specs
from adbm_operator.specs import cursor, labels, pod
from tests.operator.strategies import backend_services
from tests.operator.validation import (
    CORE_API_VERSIONS,
    DNS_LABEL,
    K8S_VERSION,
    MIN_K8S_VERSION,
    validate,
)

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
AUTOSCALERS = ("HorizontalPodAutoscaler", "ScaledObject")
# Settings the pods must read from Secrets, never from a rendered object.
SECRET_ENV = ("ADBM_DATABASE_URL", "ADBM_REDIS_URL", "ADBM_AMQP_URL", "ADBM_CURSOR_SECRET")


def _load(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    return body


def _secret_versions(obj: model.BackendService) -> dict[str, str]:
    return {ref.name: str(i + 1) for i, ref in enumerate(pod.referenced_secrets(obj))}


# --- invariants over the rendered set --------------------------------------------------------


def _matches(selector: Mapping[str, str], target: Mapping[str, str]) -> bool:
    return bool(selector) and selector.items() <= target.items()


def _of(children: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == kind]


def _pod_labels(children: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Pod template labels by Deployment name."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in _of(children, "Deployment")
    }


def _containers(deploy: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    pod_spec = deploy["spec"]["template"]["spec"]
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def check_names_labels_namespaces(
    obj: model.BackendService, children: list[dict[str, Any]]
) -> None:
    names = Counter((c["kind"], c["metadata"]["name"]) for c in children)
    repeated = [key for key, count in names.items() if count > 1]
    assert not repeated, f"names repeat within a kind: {repeated}"
    for child in children:
        meta, what = child["metadata"], f"{child['kind']} {child['metadata']['name']!r}"
        assert len(meta["name"]) <= labels.MAX_NAME, f"{what}: name longer than 63"
        assert DNS_LABEL.match(meta["name"]), f"{what}: name is not a DNS-1123 label"
        assert meta.get("namespace") == obj.namespace, f"{what}: not in {obj.namespace!r}"
        missing = [key for key in RECOMMENDED_LABELS if key not in meta.get("labels", {})]
        assert not missing, f"{what}: missing labels {missing}"
        assert meta["labels"]["app.kubernetes.io/instance"] == obj.name, what
        assert meta["labels"]["app.kubernetes.io/part-of"] == obj.name, what
        assert meta["labels"]["app.kubernetes.io/managed-by"] == labels.MANAGED_BY, what
        assert meta["labels"][labels.OWNER_LABEL] == obj.name, what


def check_selectors(children: list[dict[str, Any]]) -> None:
    pods = _pod_labels(children)
    api = {n: lbl for n, lbl in pods.items() if lbl["app.kubernetes.io/component"] == "api"}
    assert len(api) == 1, f"expected one API Deployment, found {sorted(api)}"
    for deploy in _of(children, "Deployment"):
        own = deploy["spec"]["template"]["metadata"]["labels"]
        selector = deploy["spec"]["selector"]["matchLabels"]
        assert _matches(selector, own), f"Deployment {deploy['metadata']['name']}: selector"
        others = [n for n, lbl in pods.items() if n != deploy["metadata"]["name"]]
        overlapping = [n for n in others if _matches(selector, pods[n])]
        assert not overlapping, f"Deployment selectors overlap: {deploy['metadata']['name']}"
        for spread in deploy["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            assert _matches(spread["labelSelector"]["matchLabels"], own), "topology spread"
    for svc in _of(children, "Service"):
        selected = [n for n, lbl in pods.items() if _matches(svc["spec"]["selector"], lbl)]
        assert selected == list(api), f"Service {svc['metadata']['name']} selects {selected}"
    for pdb in _of(children, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        selected = [n for n, lbl in pods.items() if _matches(selector, lbl)]
        assert selected == list(api), f"PDB {pdb['metadata']['name']} selects {selected}"
    for policy in _of(children, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        selected = [n for n, lbl in pods.items() if _matches(selector, lbl)]
        assert selected, f"NetworkPolicy {policy['metadata']['name']} selects no pods"
    covered = {
        n
        for policy in _of(children, "NetworkPolicy")
        for n, lbl in pods.items()
        if _matches(policy["spec"]["podSelector"]["matchLabels"], lbl)
    }
    assert covered == set(pods), f"pods without a NetworkPolicy: {set(pods) - covered}"
    services = {s["metadata"]["name"]: s for s in _of(children, "Service")}
    for monitor in _of(children, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [n for n, s in services.items() if _matches(selector, s["metadata"]["labels"])]
        assert len(selected) == 1, f"ServiceMonitor selects Services {selected}"
        ports = {p["name"] for p in services[selected[0]]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports, f"ServiceMonitor port {endpoint['port']!r}"


def check_named_ports_and_references(children: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in _of(children, "Deployment")}
    configmaps = {c["metadata"]["name"] for c in _of(children, "ConfigMap")}
    for name, deploy in deployments.items():
        pod_spec = deploy["spec"]["template"]["spec"]
        for volume in pod_spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{name}: volume {volume}"
        for container in _containers(deploy):
            ports = {p["name"] for p in container.get("ports", []) if "name" in p}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, f"{name}: envFrom"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str):
                    assert port in ports, f"{name}/{container['name']}: {probe} port {port!r}"
    for svc in _of(children, "Service"):
        for deploy in deployments.values():
            if not _matches(
                svc["spec"]["selector"], deploy["spec"]["template"]["metadata"]["labels"]
            ):
                continue
            ports = {p.get("name") for c in _containers(deploy) for p in c.get("ports", [])}
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort")
                if isinstance(target, str):
                    assert target in ports, f"Service port {port['name']}: no {target!r} in pods"
    auths = {a["metadata"]["name"] for a in _of(children, "TriggerAuthentication")}
    for scaled in _of(children, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            ref = trigger.get("authenticationRef")
            if ref is not None:
                assert ref["name"] in auths, f"ScaledObject refers to missing {ref['name']!r}"


def check_autoscaler_ownership(children: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in _of(children, "Deployment")}
    targets = Counter(
        a["spec"]["scaleTargetRef"]["name"] for kind in AUTOSCALERS for a in _of(children, kind)
    )
    for target, count in targets.items():
        assert target in deployments, f"an autoscaler targets missing Deployment {target!r}"
        assert count == 1, f"{count} autoscalers target Deployment {target!r}"
    for name, deploy in deployments.items():
        if name in targets:
            assert "replicas" not in deploy["spec"], f"{name}: replicas set under an autoscaler"
        else:
            assert "replicas" in deploy["spec"], f"{name}: no autoscaler and no replicas"


def check_no_secret_values(obj: model.BackendService, children: list[dict[str, Any]]) -> None:
    assert not _of(children, "Secret"), "a Secret was rendered"
    spec = obj.spec
    readable = {labels.db_app_secret_name(obj), spec.redis.secret_ref.name, cursor.name(obj)}
    if spec.queue is not None:
        readable.add(spec.queue.secret_ref.name)
    for cm in _of(children, "ConfigMap"):
        leaked = [key for key in SECRET_ENV if key in cm["data"]]
        assert not leaked, f"ConfigMap {cm['metadata']['name']} carries {leaked}"
    for deploy in _of(children, "Deployment"):
        for container in _containers(deploy):
            for env in container.get("env", []):
                if env["name"] in SECRET_ENV:
                    assert "value" not in env, f"{env['name']} is a literal value"
                    assert "secretKeyRef" in env["valueFrom"], env["name"]
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                # The app role's, Redis, RabbitMQ and the cursor key: never the admin Secret.
                if ref is not None:
                    assert ref["name"] in readable, f"pods read Secret {ref['name']!r}"


def check_expected_children(obj: model.BackendService, children: list[dict[str, Any]]) -> None:
    spec = obj.spec
    groups = spec.queue.workers if spec.queue is not None else []
    queue_scaled = [
        g
        for g in groups
        if g.autoscaling is not None and g.autoscaling.scaler is model.WorkerScaler.QUEUE_LENGTH
    ]
    cpu_scaled = [g for g in groups if g.autoscaling is not None and g not in queue_scaled]
    assert len(_of(children, "Deployment")) == 1 + len(groups)
    assert len(_of(children, "ScaledObject")) == len(queue_scaled)
    assert len(_of(children, "TriggerAuthentication")) == (1 if queue_scaled else 0)
    api_hpa = 1 if spec.autoscaling is not None else 0
    assert len(_of(children, "HorizontalPodAutoscaler")) == api_hpa + len(cpu_scaled)
    monitored = spec.observability.service_monitor.enabled
    assert len(_of(children, "ServiceMonitor")) == (1 if monitored else 0)
    collector = spec.observability.otel_collector.enabled
    assert len(_of(children, "ConfigMap")) == (2 if collector else 1)


def check_created_once(obj: model.BackendService, children: list[dict[str, Any]]) -> None:
    """The objects created when absent: valid, labelled like every child, with no value in the
    rendering (the operator generates it on creation) and saying so; the pods read exactly the
    key the operator generates."""
    once = specs.created_once(obj)
    assert [(c["kind"], c["metadata"]["name"]) for c in once] == [("Secret", cursor.name(obj))]
    check_names_labels_namespaces(obj, once)
    for shape in once:
        validate(shape)
        validate(shape, MIN_K8S_VERSION)
        assert "data" not in shape and "stringData" not in shape, "a generated value was rendered"
        assert "generates" in shape["metadata"]["annotations"][cursor.GENERATED_ANNOTATION]
    for deploy in _of(children, "Deployment"):
        for container in deploy["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            ref = env["ADBM_CURSOR_SECRET"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": cursor.name(obj), "key": cursor.KEY}


def check_all(obj: model.BackendService, children: list[dict[str, Any]]) -> None:
    for child in children:
        validate(child)
        validate(child, MIN_K8S_VERSION)
    check_created_once(obj, children)
    check_names_labels_namespaces(obj, children)
    check_selectors(children)
    check_named_ports_and_references(children)
    check_autoscaler_ownership(children)
    check_no_secret_values(obj, children)
    check_expected_children(obj, children)


# --- the examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_versions", [False, True], ids=["offline", "observed-secrets"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_render_valid_objects(example: Path, with_versions: bool) -> None:
    obj = model.parse(_load(example))
    versions = _secret_versions(obj) if with_versions else None
    children = specs.render(obj, secret_versions=versions)
    check_all(obj, children)
    for child in children:
        if child["apiVersion"] in CORE_API_VERSIONS:
            # The library's own entry point too, so the shared validator cannot drift from it.
            kubernetes_validate.validate(child, K8S_VERSION, strict=True)
            kubernetes_validate.validate(child, MIN_K8S_VERSION, strict=True)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_secret_versions_change_only_the_pod_template_annotations(example: Path) -> None:
    obj = model.parse(_load(example))
    offline = specs.render(obj)
    observed = specs.render(obj, secret_versions=_secret_versions(obj))
    assert [(c["kind"], c["metadata"]["name"]) for c in offline] == [
        (c["kind"], c["metadata"]["name"]) for c in observed
    ]
    for before, after in zip(offline, observed, strict=True):
        if before["kind"] != "Deployment":
            assert before == after
            continue
        after = copy.deepcopy(after)
        annotations = after["spec"]["template"]["metadata"]["annotations"]
        assert annotations.pop(pod.SECRETS_CHECKSUM)
        assert before == after


def test_full_example_covers_every_kind() -> None:
    obj = model.parse(_load(Path(__file__).parents[2] / "examples" / "full.yaml"))
    kinds = {c["kind"] for c in specs.render(obj)}
    assert kinds >= {
        "ConfigMap",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "ScaledObject",
        "TriggerAuthentication",
    }


# --- the validator catches what it should ----------------------------------------------------


def _full_children() -> list[dict[str, Any]]:
    obj = model.parse(_load(Path(__file__).parents[2] / "examples" / "full.yaml"))
    return specs.render(obj)


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("Deployment", ("spec", "replicas"), "2", "is not of type"),
        ("Deployment", ("spec", "templat"), {}, "templat"),
        ("Service", ("metadata", "name"), "1-starts-with-a-digit", "DNS-1035"),
        ("ScaledObject", ("spec", "minReplicaCount"), "0", "is not of type"),
        ("ScaledObject", ("spec", "pollingIntervall"), 5, "pollingIntervall"),
        ("TriggerAuthentication", ("spec", "secretTargetRef"), [{"name": "x"}], "required"),
        ("ServiceMonitor", ("spec", "endpoints"), [{"interval": "5 s"}], "does not match"),
        ("NetworkPolicy", ("metadata", "labels"), {"bad key!": "x"}, "key 'bad key!'"),
    ],
)
def test_validator_rejects_invalid_objects(
    kind: str, path: tuple[str, ...], value: Any, message: str
) -> None:
    child = copy.deepcopy(next(c for c in _full_children() if c["kind"] == kind))
    node = child
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(AssertionError, match=message):
        validate(child)


# --- specs the model must refuse, because the API server would reject what they render ---

_MODEL_GAPS = {
    "api-requests-above-limits": {
        "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}
    },
    "worker-requests-above-limits": {
        "queue": {
            "secretRef": {"name": "shop-rabbitmq"},
            "workers": [
                {
                    "name": "orders",
                    "queues": ["orders"],
                    "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
                }
            ],
        }
    },
    "negative-quantity": {"resources": {"requests": {"cpu": "-1"}}},
    "collector-requests-above-limits": {
        "observability": {
            "otelCollector": {
                "endpoint": "c:4317",
                "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1G"}},
            }
        }
    },
    "zero-scrape-interval": {
        "observability": {
            "otelCollector": {"enabled": False},
            "serviceMonitor": {"interval": "0s"},
        }
    },
    "service-monitor-label-key": {
        "observability": {
            "otelCollector": {"enabled": False},
            "serviceMonitor": {"labels": {"not a label key": "x"}},
        }
    },
}


@pytest.mark.parametrize("spec", list(_MODEL_GAPS.values()), ids=list(_MODEL_GAPS))
def test_model_rejects_specs_that_would_render_invalid_objects(spec: dict[str, Any]) -> None:
    """Found by the sweep: each of these once passed the model and rendered objects the API
    server rejects. The model must refuse them up front."""
    body = _load(Path(__file__).parents[2] / "examples" / "minimal.yaml")
    body["spec"] |= spec
    with pytest.raises(ValueError):
        model.parse(body)


# --- the sweep -------------------------------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=backend_services(), observed=st.booleans())
def test_every_valid_backend_service_renders_valid_objects(
    body: dict[str, Any], observed: bool
) -> None:
    obj = model.parse(body)
    versions = _secret_versions(obj) if observed else None
    check_all(obj, specs.render(obj, secret_versions=versions))
