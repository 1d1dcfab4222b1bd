"""Pure builders of every child object of a BackendService, one module per kind.

Each builder takes the parsed BackendService and returns plain dicts; nothing here talks to the
cluster. `render` composes them into the complete desired set, in the order the operator applies
them; `created_once` gives the objects the operator creates when absent and never updates (the
cursor-signing Secret, whose value it generates then). `adbm-operator render` prints both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import (
    configmap,
    cursor,
    deployment,
    networkpolicy,
    otel,
    pdb,
    service,
    servicemonitor,
    worker,
)


def render(
    obj: BackendService, *, secret_versions: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every child the BackendService asks for: configuration first, so the pods that read it
    never start before it exists."""
    children: list[dict[str, Any] | None] = [
        configmap.configmap(obj),
        otel.configmap_object(obj),
        service.build(obj),
        *deployment.build_all(obj, secret_versions=secret_versions),
        *worker.build_all(obj, secret_versions=secret_versions),
        pdb.build(obj),
        *networkpolicy.build_all(obj),
        servicemonitor.build(obj),
    ]
    return [child for child in children if child is not None]


def created_once(obj: BackendService) -> list[dict[str, Any]]:
    """What the operator creates when it is absent and then leaves to the user, without the
    values it generates on creation."""
    return [cursor.secret(obj)]
