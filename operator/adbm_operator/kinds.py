"""The one table of the Kubernetes kinds the operator touches, and what it does with each.

The API client builds its URLs from it, the reconcile applies and prunes the kinds it marks as
applied, the child watches follow the same kinds, the CRD watch learns from it which optional
integration a CRD makes available. The chart's RBAC table (charts/adbm-operator/files/rbac.yaml)
must grant exactly the verbs listed here and in `KOPF` (tests/operator/test_rbac.py checks both
ways, and checks every call the emulator suite records against the rendered Roles). Adding a kind
or a verb is one edit here and the same one in the chart's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adbm_operator import model

# Server-side apply needs create and patch; drift correction needs the watch; pruning, delete.
APPLY_VERBS = frozenset({"get", "list", "watch", "create", "patch", "delete"})


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    verbs: frozenset[str]
    """Every verb the operator uses on this kind: what its ClusterRole must grant."""
    namespaced: bool = True
    applied: bool = False
    """Server-side applied on every reconcile, watched for drift, pruned when not wanted."""
    crd: str | None = None
    """The CustomResourceDefinition that makes an optional kind exist; None for built-ins."""
    status_verbs: frozenset[str] = frozenset()
    """The verbs used on the `status` subresource."""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def key(self) -> tuple[str, str]:
        return (self.api_version, self.kind)

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


def _applied(api_version: str, kind: str, plural: str, crd: str | None = None) -> Kind:
    return Kind(api_version, kind, plural, APPLY_VERBS, applied=True, crd=crd)


SERVICE_MONITOR = _applied(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    "servicemonitors",
    crd="servicemonitors.monitoring.coreos.com",
)
SCALED_OBJECT = _applied(
    "keda.sh/v1alpha1", "ScaledObject", "scaledobjects", crd="scaledobjects.keda.sh"
)
TRIGGER_AUTHENTICATION = _applied(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    "triggerauthentications",
    crd="triggerauthentications.keda.sh",
)
HORIZONTAL_POD_AUTOSCALER = _applied(
    "autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"
)
NETWORK_POLICY = _applied("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
POD_DISRUPTION_BUDGET = _applied("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
DEPLOYMENT = _applied("apps/v1", "Deployment", "deployments")
SERVICE = _applied("v1", "Service", "services")
CONFIG_MAP = _applied("v1", "ConfigMap", "configmaps")
# Read to roll the pods when one changes. Of the operator's own, the generated ones (the
# cursor-signing key, the app role's password) are created once when absent and never updated,
# so a Secret a user replaced stays theirs; the derived ones (`<name>-db-app` the pods read and
# `<name>-db-migrate` the migration Job reads) are server-side applied, hence patch. None is
# deleted by the operator: garbage collection removes them with their BackendService.
SECRET = Kind("v1", "Secret", "secrets", frozenset({"get", "list", "watch", "create", "patch"}))
# The migration Job of each image: created when absent, never patched (its pod template is
# immutable), watched so its completion lets the new image roll out; the Jobs of earlier images
# are listed and deleted once the current image's Job succeeded.
JOB = Kind("batch/v1", "Job", "jobs", frozenset({"get", "list", "watch", "create", "delete"}))
# Watched; Kopf patches its finalizer and progress annotations; status written from observation.
BACKEND_SERVICE = Kind(
    model.API_VERSION,
    model.KIND,
    model.PLURAL,
    frozenset({"get", "list", "watch", "patch"}),
    status_verbs=frozenset({"patch"}),
)
# Watched by Kopf (list and watch, never a get) to learn which optional integrations exist.
CUSTOM_RESOURCE_DEFINITION = Kind(
    "apiextensions.k8s.io/v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    frozenset({"list", "watch"}),
    namespaced=False,
)

# In the order children are pruned: dependents first.
APPLIED = (
    SERVICE_MONITOR,
    SCALED_OBJECT,
    TRIGGER_AUTHENTICATION,
    HORIZONTAL_POD_AUTOSCALER,
    NETWORK_POLICY,
    POD_DISRUPTION_BUDGET,
    DEPLOYMENT,
    SERVICE,
    CONFIG_MAP,
)
ALL = (*APPLIED, SECRET, JOB, BACKEND_SERVICE, CUSTOM_RESOURCE_DEFINITION)
BY_KEY = {k.key: k for k in ALL}


@dataclass(frozen=True)
class Grant:
    """What RBAC must allow on one resource (`plural` or `plural/subresource`) of a group."""

    group: str
    resource: str
    verbs: frozenset[str]
    namespaced: bool = True


# What Kopf itself calls, beside the kinds above. The chart grants the namespace and peering
# rules only in the modes that use them (a list of namespaces; peering on).
KOPF = (
    Grant("", "events", frozenset({"create"})),  # handler outcomes as Events
    Grant("", "namespaces", frozenset({"list", "watch"}), namespaced=False),  # namespace globs
    Grant("kopf.dev", "kopfpeerings", frozenset({"list", "watch", "patch"})),
    Grant("kopf.dev", "clusterkopfpeerings", frozenset({"list", "watch", "patch"}), False),
)


def grants() -> tuple[Grant, ...]:
    """Every resource the operator calls, with the verbs it uses: what its RBAC must grant."""
    of_kinds = [Grant(k.group, k.plural, k.verbs, k.namespaced) for k in ALL]
    of_status = [
        Grant(k.group, f"{k.plural}/status", k.status_verbs, k.namespaced)
        for k in ALL
        if k.status_verbs
    ]
    return (*of_kinds, *of_status, *KOPF)


BY_CRD = {k.crd: k for k in ALL if k.crd is not None}


def of(obj: Mapping[str, Any]) -> Kind:
    """The kind of an object by its apiVersion and kind; KeyError for a kind not in the table."""
    return BY_KEY[(obj["apiVersion"], obj["kind"])]
