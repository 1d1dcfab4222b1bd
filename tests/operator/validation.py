"""Validate a rendered child object the way the API server would, without a cluster.

Core kinds are checked against the strict JSON schemas that `kubernetes_validate` ships for
`K8S_VERSION` (strict: unknown fields are errors, as with `kubectl apply --validate=strict`), or
for another version given, such as `MIN_K8S_VERSION`, the oldest the README promises.
ServiceMonitor, ScaledObject and TriggerAuthentication are checked against the openAPIV3Schema of
the vendored CRDs in `data/`, made strict the same way: the API server prunes unknown fields of a
structural schema silently, so a misspelt field would otherwise vanish without an error.

On top of the schemas come the API server's own checks that no schema expresses and that a
builder can get wrong: names and label syntax, list-map keys, selector/template agreement,
requests within limits, and the cross-field rules of prometheus-operator and KEDA.

    validate(obj)  # raises AssertionError naming the object, the field and the reason
    validate(obj, MIN_K8S_VERSION)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.protocols import Validator
from kubernetes.utils import parse_quantity
from referencing import Registry, Resource

# The newest Kubernetes whose schemas kubernetes_validate ships.
K8S_VERSION = "1.37.0"
# The oldest the rendered objects need (see `tests/operator/test_kubernetes_version.py`).
MIN_K8S_VERSION = "1.30.0"
_OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

DATA = Path(__file__).parent / "data"
CRD_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1_000, 1)
# Kubernetes' quantity grammar (apimachinery `resource.Quantity`), with its sign. It is the
# check; `parse_quantity` only computes the value, and would take `1 Gi` or `NaN` as well.
_QUANTITY = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
)
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_CONFIGMAP_BYTES = 1024 * 1024

CORE_API_VERSIONS = frozenset(
    {
        "v1",
        "apps/v1",
        "batch/v1",
        "policy/v1",
        "networking.k8s.io/v1",
        "autoscaling/v2",
        "rbac.authorization.k8s.io/v1",
    }
)


# --- schemas ---------------------------------------------------------------------------------


def _list_uniqueness(
    validator: Validator, list_type: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`x-kubernetes-list-type`: the API server rejects a `set` with repeats and a `map` with two
    items of equal keys (two env vars of one name, two ports of one number)."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen_items: list[Any] = []
        for item in instance:
            if item in seen_items:
                yield jsonschema.ValidationError(f"duplicate item {item!r} in a set list")
            seen_items.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: set[tuple[str, ...]] = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
            if key in seen:
                shown = {k: item.get(k) for k in keys}
                yield jsonschema.ValidationError(f"duplicate map-list item with keys {shown}")
            seen.add(key)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-type": _list_uniqueness}
)


def _core_file(name: str, version: str) -> dict[str, Any]:
    schemas = f"kubernetes-json-schema/v{version}-local-strict"
    path = resources.files("kubernetes_validate").joinpath(f"{schemas}/{name}")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@cache
def _registry(version: str) -> Registry[Any]:
    definitions = Resource.from_contents(_core_file("_definitions.json", version))
    return definitions @ Registry()


@cache
def _core_validator(api_version: str, kind: str, version: str) -> Validator:
    # kubernetes_validate's file naming: the group's first DNS label, then the version.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = _core_file(f"{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        raise AssertionError(f"no Kubernetes {version} schema for {api_version} {kind}") from None
    registry = Resource.from_contents(schema) @ _registry(version)
    return _Validator(schema, registry=registry)


def _strict(node: Any) -> Any:
    """An OpenAPI schema with `additionalProperties: false` wherever properties are listed and
    unknown fields are not explicitly preserved: what `--validate=strict` does for a CRD."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        out["additionalProperties"] = False
    return out


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the served version of a vendored CRD, as written upstream."""
    group, _, version = api_version.rpartition("/")
    crd = yaml.safe_load((DATA / CRD_FILES[(api_version, kind)]).read_text())
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    for served in crd["spec"]["versions"]:
        if served["name"] == version and served.get("served", False):
            schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"the vendored CRD does not serve {api_version} {kind}")


@cache
def _crd_validator(api_version: str, kind: str, version: str) -> Validator:
    schema = _strict(crd_schema(api_version, kind))
    # The CRD leaves metadata to the API server, which validates it as an ObjectMeta.
    schema["properties"]["metadata"] = {"$ref": _OBJECT_META}
    return _Validator(schema, registry=_registry(version))


def _validator(obj: Mapping[str, Any], version: str) -> Validator:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    assert isinstance(api_version, str) and isinstance(kind, str), "apiVersion and kind required"
    if (api_version, kind) in CRD_FILES:
        return _crd_validator(api_version, kind, version)
    assert api_version in CORE_API_VERSIONS, f"unexpected apiVersion {api_version} ({kind})"
    return _core_validator(api_version, kind, version)


# --- quantities and durations ---------------------------------------------------------------


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity as a number (`250m` is 0.25, `1Gi` is 2**30, `1e3` is 1000)."""
    text = str(value)
    assert _QUANTITY.match(text), f"not a quantity: {text!r}"
    result: Decimal = parse_quantity(text)
    return result


def duration_ms(text: str) -> int:
    """A Prometheus duration in milliseconds."""
    if text == "0":
        return 0
    match = _DURATION.match(text)
    assert match is not None and text, f"not a Prometheus duration: {text!r}"
    return sum(int(v) * unit for v, unit in zip(match.groups(), _DURATION_MS, strict=True) if v)


# --- semantic checks -------------------------------------------------------------------------


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"key {key!r}: prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return f"key {key!r}: name part must be 1-63 alphanumerics, '-', '_' or '.'"
    return None


def label_problems(labels: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    for key, value in labels.items():
        problem = _qualified_name_problem(key)
        if problem is not None:
            problems.append(f"{where}: {problem}")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"{where}: value {value!r} of {key!r} is not a valid label value")
    return problems


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def _metadata_problems(obj: Mapping[str, Any]) -> list[str]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    problems = []
    # Services (and so their names) must be DNS-1035 labels; other kinds accept subdomains.
    if obj["kind"] == "Service":
        if not isinstance(name, str) or len(name) > 63 or not DNS_1035_LABEL.match(name):
            problems.append(f"metadata.name {name!r} is not a DNS-1035 label")
    elif not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and (len(namespace) > 63 or not DNS_LABEL.match(namespace)):
        problems.append(f"metadata.namespace {namespace!r} is not a DNS-1123 label")
    problems += label_problems(meta.get("labels") or {}, "metadata.labels")
    annotations = meta.get("annotations") or {}
    for key in annotations:
        problem = _qualified_name_problem(key)
        if problem is not None:
            problems.append(f"metadata.annotations: {problem}")
    if sum(len(k) + len(v) for k, v in annotations.items()) > MAX_ANNOTATIONS_BYTES:
        problems.append("metadata.annotations exceed 256 KiB")
    return problems


def _selector_problems(obj: Mapping[str, Any]) -> list[str]:
    problems = []
    for path, node in _walk(obj):
        if path.endswith("matchLabels") and isinstance(node, dict):
            problems += label_problems(node, path)
        if path.endswith(".labels") and path != "metadata.labels" and isinstance(node, dict):
            problems += label_problems(node, path)
    if obj["kind"] == "Service":
        problems += label_problems(obj["spec"].get("selector") or {}, "spec.selector")
    return problems


def _container_problems(pod_spec: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]
    names = [c.get("name") for c in containers]
    if len(set(names)) != len(names):
        problems.append(f"{where}: container names repeat: {names}")
    volumes = {v["name"] for v in pod_spec.get("volumes", [])}
    port_names: list[str] = []
    for c in containers:
        cwhere = f"{where}.containers[{c.get('name')}]"
        if not isinstance(c.get("name"), str) or not DNS_LABEL.match(c["name"]):
            problems.append(f"{cwhere}: name is not a DNS-1123 label")
        for port in c.get("ports", []):
            pname = port.get("name")
            if pname is not None:
                port_names.append(pname)
                valid = len(pname) <= 15 and _IANA_SVC_NAME.match(pname) and "--" not in pname
                if not valid or not re.search("[a-z]", pname):
                    problems.append(f"{cwhere}: port name {pname!r} is not an IANA service name")
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{cwhere}: mounts unknown volume {mount['name']!r}")
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for resource, limit in limits.items():
            if resource in requests and quantity(requests[resource]) > quantity(limit):
                problems.append(
                    f"{cwhere}: resources.requests.{resource} {requests[resource]!r} exceeds"
                    f" the limit {limit!r}"
                )
        for resource, value in (requests | limits).items():
            if quantity(value) < 0:
                problems.append(f"{cwhere}: resources.{resource} {value!r} is negative")
    if len(set(port_names)) != len(port_names):
        problems.append(f"{where}: container port names repeat in the pod: {port_names}")
    return problems


def _kind_problems(obj: Mapping[str, Any]) -> list[str]:
    kind, spec = obj["kind"], obj.get("spec") or {}
    problems = []
    if kind == "Deployment":
        selector = spec["selector"].get("matchLabels", {})
        template_labels = spec["template"]["metadata"].get("labels", {})
        if not selector or any(template_labels.get(k) != v for k, v in selector.items()):
            problems.append("spec.selector does not match spec.template.metadata.labels")
        problems += _container_problems(spec["template"]["spec"], "spec.template.spec")
    elif kind == "ConfigMap":
        data = obj.get("data") or {}
        problems += [
            f"data key {key!r} is not a valid ConfigMap key"
            for key in data
            if len(key) > 253 or not _CONFIG_KEY.match(key)
        ]
        if sum(len(k) + len(v.encode()) for k, v in data.items()) > MAX_CONFIGMAP_BYTES:
            problems.append("data exceeds 1 MiB")
    elif kind == "HorizontalPodAutoscaler":
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append("spec.minReplicas exceeds spec.maxReplicas")
    elif kind == "PodDisruptionBudget":
        if "minAvailable" in spec and "maxUnavailable" in spec:
            problems.append("spec sets both minAvailable and maxUnavailable")
    elif kind == "ScaledObject":
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if low > high:
            problems.append("spec.minReplicaCount exceeds spec.maxReplicaCount")
    elif kind == "ServiceMonitor":
        for i, ep in enumerate(spec.get("endpoints", [])):
            interval, timeout = ep.get("interval"), ep.get("scrapeTimeout")
            if (
                timeout is not None
                and interval is not None
                and duration_ms(timeout) > duration_ms(interval)
            ):
                problems.append(
                    f"spec.endpoints[{i}]: scrapeTimeout {timeout} exceeds interval {interval}"
                )
    return problems


def validate(obj: Mapping[str, Any], version: str = K8S_VERSION) -> None:
    """Raise AssertionError, saying what and where, unless the API server of Kubernetes
    `version` would accept `obj`."""
    label = f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')!r}"
    errors = sorted(_validator(obj, version).iter_errors(obj), key=lambda e: list(e.absolute_path))
    problems = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors
    ]
    if not problems:
        problems = _metadata_problems(obj) + _selector_problems(obj) + _kind_problems(obj)
    if problems:
        details = "\n  ".join(problems)
        raise AssertionError(
            f"{obj.get('apiVersion')} {label} is invalid for Kubernetes {version}:\n  {details}"
        )
