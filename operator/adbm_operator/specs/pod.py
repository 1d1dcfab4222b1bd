"""Pod templates shared by the API and the worker Deployments.

One place decides how an ADBM pod runs: non-root with a read-only root filesystem, no privilege
escalation, no capabilities, the RuntimeDefault seccomp profile, configuration from the rendered
ConfigMap, credentials only through Secret references, the collector sidecar when enabled, and
checksums that roll the pods whenever configuration or a referenced Secret changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adbm_operator.model import BackendService, Resources, SecretKeyRef
from adbm_operator.specs import configmap, cursor, labels, otel

APP_CONTAINER = "app"
RUN_AS_USER = 10001
TMP_VOLUME = "tmp"
# Long enough for endpoints to drop the pod before the process gets SIGTERM.
PRE_STOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30

CONFIG_CHECKSUM = "checksum/config"
OTEL_CHECKSUM = "checksum/otel-config"
SECRETS_CHECKSUM = "checksum/secrets"


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def referenced_secrets(obj: BackendService) -> list[SecretKeyRef]:
    """The Secrets the pods read, in a fixed order (the admin Secret is the operator's only)."""
    return [ref for _, ref in _secret_settings(obj)]


def _secret_settings(obj: BackendService) -> list[tuple[str, SecretKeyRef]]:
    settings = [
        ("ADBM_DATABASE_URL", SecretKeyRef(name=labels.db_app_secret_name(obj), key="uri")),
        ("ADBM_REDIS_URL", obj.spec.redis.secret_ref),
        ("ADBM_CURSOR_SECRET", cursor.ref(obj)),
    ]
    if obj.spec.queue is not None:
        settings.append(("ADBM_AMQP_URL", obj.spec.queue.secret_ref))
    return settings


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def app_env(obj: BackendService) -> list[dict[str, Any]]:
    """Secret-backed settings and the pod's identity; everything else comes from the ConfigMap."""
    env = [
        *(_secret_env(setting, ref) for setting, ref in _secret_settings(obj)),
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {
            "name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)",
        },
    ]
    return env


def app_container(
    obj: BackendService,
    *,
    args: list[str],
    resources: Resources,
    ports: list[dict[str, Any]],
    probes: Mapping[str, dict[str, Any]],
    behind_service: bool = True,
) -> dict[str, Any]:
    """The service container, running `adbm-service <args>`. A container `behind_service` waits
    before SIGTERM, so endpoints stop routing to it first."""
    lifecycle = {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}}
    return {
        "name": APP_CONTAINER,
        "image": obj.spec.image,
        "imagePullPolicy": obj.spec.image_pull_policy,
        "command": ["adbm-service"],
        "args": args,
        "ports": ports,
        "envFrom": [{"configMapRef": {"name": configmap.name(obj)}}],
        "env": app_env(obj),
        "resources": resources.model_dump(mode="json", exclude_none=True),
        **probes,
        **({"lifecycle": lifecycle} if behind_service else {}),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }


def checksums(obj: BackendService, secret_versions: Mapping[str, str] | None) -> dict[str, str]:
    """Pod-template annotations that change exactly when what the pods read changes.

    `secret_versions` maps each referenced Secret's name to its resourceVersion, as the operator
    observes them; offline rendering knows none, so that annotation is left out there.
    """
    annotations = {CONFIG_CHECKSUM: configmap.checksum(configmap.settings(obj))}
    otel_sum = otel.checksum(obj)
    if otel_sum is not None:
        annotations[OTEL_CHECKSUM] = otel_sum
    if secret_versions is not None:
        names = sorted({ref.name for ref in referenced_secrets(obj)})
        observed = {n: secret_versions.get(n, "") for n in names}
        annotations[SECRETS_CHECKSUM] = configmap.checksum(observed)
    return annotations


def topology_spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Spread replicas over zones and nodes; never block scheduling on it."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
            # Count only pods of the same revision, so a rollout ends as evenly spread.
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def pod_template(
    obj: BackendService,
    *,
    component: str,
    group: str | None,
    container: dict[str, Any],
    secret_versions: Mapping[str, str] | None,
    termination_grace_seconds: int = TERMINATION_GRACE_SECONDS,
) -> dict[str, Any]:
    selector = labels.selector_labels(obj, component, group)
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}]
    spec: dict[str, Any] = {
        # The service never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": termination_grace_seconds,
        "topologySpreadConstraints": topology_spread(selector),
        "containers": [container],
        "volumes": volumes,
    }
    if otel.enabled(obj):
        spec["initContainers"] = [otel.container(obj, container_security_context())]
        volumes.append(otel.volume(obj))
    return {
        "metadata": {
            "labels": labels.labels(obj, component, group),
            "annotations": checksums(obj, secret_versions),
        },
        "spec": spec,
    }
