"""The one table of kinds covers everything the operator renders, creates and watches, and its
URLs are the API server's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adbm_operator import kinds, model, specs
from adbm_operator.database import children

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_rendered_child_is_an_applied_kind_and_created_ones_are_not(example: Path) -> None:
    obj = model.parse(yaml.safe_load(example.read_text()))
    for child in specs.render(obj):
        assert kinds.of(child).applied, child["kind"]
    for created in specs.created_once(obj):
        kind = kinds.of(created)
        # Secrets may be patched (the derived database Secrets are applied), never pruned; that a
        # created-once Secret is never patched is checked on the emulator's change log.
        assert not kind.applied and "create" in kind.verbs and "delete" not in kind.verbs
    job = children.migration_job(obj)
    assert kinds.of(job) is kinds.JOB and "patch" not in kinds.JOB.verbs


def test_optional_kinds_name_their_crd_by_plural_and_group() -> None:
    for crd, kind in kinds.BY_CRD.items():
        assert crd == f"{kind.plural}.{kind.group}"
    assert {k.kind for k in kinds.BY_CRD.values()} == {
        "ServiceMonitor",
        "ScaledObject",
        "TriggerAuthentication",
    }


@pytest.mark.parametrize(
    ("kind", "namespace", "name", "path"),
    [
        (kinds.SECRET, "shop", "shop-cursor", "/api/v1/namespaces/shop/secrets/shop-cursor"),
        (kinds.DEPLOYMENT, "shop", None, "/apis/apps/v1/namespaces/shop/deployments"),
        (
            kinds.CUSTOM_RESOURCE_DEFINITION,
            None,
            "scaledobjects.keda.sh",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/scaledobjects.keda.sh",
        ),
    ],
)
def test_paths_are_the_api_servers(
    kind: kinds.Kind, namespace: str | None, name: str | None, path: str
) -> None:
    assert kind.path(namespace, name) == path


def test_the_table_has_each_kind_once() -> None:
    assert len(kinds.BY_KEY) == len(kinds.ALL)
    assert len(set(kinds.APPLIED)) == len(kinds.APPLIED)
