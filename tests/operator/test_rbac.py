"""The RBAC manifest: valid, and granting every verb the operator's own calls use, for every kind
in the one table of kinds (`adbm_operator.kinds`), and no more where it matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adbm_operator import kinds
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
    assert kinds.APPLIED, "the table lists the applied kinds"
    for kind in kinds.APPLIED:
        assert {"get", "list", "watch", "create", "patch", "delete"} <= granted(
            kind.group, kind.plural
        ), kind


def test_every_kind_in_the_table_gets_the_verbs_it_lists() -> None:
    for kind in kinds.ALL:
        assert kind.verbs <= granted(kind.group, kind.plural), kind


def test_secrets_and_jobs_are_never_deleted_and_jobs_never_changed() -> None:
    # The operator creates its generated Secrets once, applies the two it derives for the
    # database, and never deletes a Secret (garbage collection removes its own with the
    # BackendService). A migration Job is created once per image and never patched.
    assert granted("", "secrets") == {"get", "list", "watch", "create", "patch"}
    assert granted("", "secrets") == kinds.SECRET.verbs
    assert granted("batch", "jobs") == {"get", "list", "watch", "create"} == kinds.JOB.verbs
    assert "patch" in granted("adbm.io", "backendservices/status")
    assert "delete" not in granted("adbm.io", "backendservices")
    bsvc = kinds.BACKEND_SERVICE
    assert {"get", "list", "watch", "patch"} <= granted("adbm.io", bsvc.plural)
