"""Names and labels shared by every child object.

Kubernetes' recommended `app.kubernetes.io/*` labels go on every object; selectors use only the
labels that never change for the life of a child (instance and component), because a
Deployment's selector is immutable.
"""

from __future__ import annotations

import hashlib

from adbm_operator import model
from adbm_operator.model import BackendService

MANAGED_BY = "adbm-operator"
APP_NAME = "adbm-backend"
OWNER_LABEL = "adbm.io/backendservice"
WORKER_GROUP_LABEL = "adbm.io/worker-group"
COMPONENT_LABEL = "app.kubernetes.io/component"

# Services need DNS-1035 labels (63); keeping every child within 63 also keeps pod hostnames whole.
MAX_NAME = 63
_HASH = 8


def child_name(obj: BackendService, *parts: str) -> str:
    """`<name>-<part>-...`, shortened with a stable hash suffix when it would exceed 63."""
    full = "-".join((obj.name, *parts))
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH]
    return f"{full[: MAX_NAME - _HASH - 1].rstrip('-')}-{digest}"


def selector_labels(
    obj: BackendService, component: str, group: str | None = None
) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/instance": obj.name,
        COMPONENT_LABEL: component,
    }
    if group is not None:
        labels[WORKER_GROUP_LABEL] = group
    return labels


def labels(obj: BackendService, component: str, group: str | None = None) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP_NAME,
        **selector_labels(obj, component, group),
        "app.kubernetes.io/part-of": obj.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        OWNER_LABEL: obj.name,
    }


def metadata(
    obj: BackendService, name: str, component: str, group: str | None = None
) -> dict[str, object]:
    return {"name": name, "namespace": obj.namespace, "labels": labels(obj, component, group)}


def app_role(obj: BackendService) -> str:
    """The Postgres role the service connects as."""
    return model.app_role(obj)


def db_app_secret_name(obj: BackendService) -> str:
    """The Secret the operator's database provisioning writes the app role's URI into."""
    return child_name(obj, "db-app")
