"""The RBAC manifest: valid, and granting every verb the operator's own calls use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adbm_operator import kube, reconcile
from tests.operator.validation import validate

MANIFEST = Path(__file__).parents[2] / "deploy" / "operator-rbac.yaml"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d["kind"])
def test_manifest_validates(doc: dict[str, Any]) -> None:
    validate(doc)


def granted(group: str, resource: str) -> set[str]:
    role = next(d for d in documents() if d["kind"] == "ClusterRole")
    verbs: set[str] = set()
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_every_managed_kind_can_be_applied_watched_and_pruned() -> None:
    for kind in reconcile.MANAGED_KINDS:
        group = kind.api_version.rpartition("/")[0]
        assert {"get", "list", "watch", "create", "patch", "delete"} <= granted(
            group, kind.plural
        ), kind


def test_secrets_are_read_only_and_status_is_writable() -> None:
    assert granted("", "secrets") == {"get", "list", "watch"}
    assert "patch" in granted("adbm.io", "backendservices/status")
    assert "delete" not in granted("adbm.io", "backendservices")
    bsvc = kube.KINDS[("adbm.io/v1alpha1", "BackendService")]
    assert {"get", "list", "watch", "patch"} <= granted("adbm.io", bsvc.plural)
