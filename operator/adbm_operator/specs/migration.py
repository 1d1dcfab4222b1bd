"""The schema migration Job: `adbm-service migrate` from the BackendService's own image.

Migrations belong to the image that is deployed (a custom image carries its own), so they run
from `spec.image`, never from the operator's copy of the service. The Job is named after the
image (`<name>-migrate-<hash>`): a new image is a new Job, run once; the same image never runs
it again. A Job's pod template is immutable, so it is created, never patched.
"""

from __future__ import annotations

import hashlib
from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import configmap, dbsecrets, labels, pod

COMPONENT = "migrate"
CONTAINER = "migrate"
IMAGE_ANNOTATION = "adbm.io/image"
BACKOFF_LIMIT = 3
DEADLINE_SECONDS = 600
_IMAGE_HASH = 10


def name(obj: BackendService) -> str:
    digest = hashlib.sha256(obj.spec.image.encode()).hexdigest()[:_IMAGE_HASH]
    return labels.child_name(obj, COMPONENT, digest)


def _secret_env(var: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def job(obj: BackendService) -> dict[str, Any]:
    meta = labels.metadata(obj, name(obj), COMPONENT)
    meta["annotations"] = {IMAGE_ANNOTATION: obj.spec.image}
    container = {
        "name": CONTAINER,
        "image": obj.spec.image,
        "imagePullPolicy": obj.spec.image_pull_policy,
        "command": ["adbm-service"],
        "args": ["migrate", "--app-role", labels.app_role(obj)],
        "envFrom": [{"configMapRef": {"name": configmap.name(obj)}}],
        "env": [
            _secret_env("ADBM_DATABASE_URL", labels.db_app_secret_name(obj), dbsecrets.URI_KEY),
            _secret_env(
                "ADBM_ADMIN_DATABASE_URL", dbsecrets.migrate_secret_name(obj), dbsecrets.URI_KEY
            ),
        ],
        "resources": obj.spec.resources.model_dump(mode="json", exclude_none=True),
        "securityContext": pod.container_security_context(),
        "volumeMounts": [{"name": pod.TMP_VOLUME, "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels.labels(obj, COMPONENT)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod.pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": pod.TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def succeeded(live: dict[str, Any] | None) -> bool:
    """Whether a live migration Job has completed (its Complete condition is True)."""
    if live is None:
        return False
    conditions = (live.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)
