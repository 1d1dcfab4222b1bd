"""The migration Job's completion lets the new image roll out.

A Job is created once per image (`specs.migration`) and never patched; when it finishes (or
fails for good), its owner is reconciled: the Deployments move to the migrated image, or
DatabaseReady says why they cannot.
"""

from __future__ import annotations

from typing import Any

import kopf

from adbm_operator import kinds, model
from adbm_operator.handlers import registry, runtime
from adbm_operator.handlers.children import SELECTOR
from adbm_operator.provisioning import job_failure
from adbm_operator.specs import labels, migration


@kopf.on.event(
    kinds.JOB.group, kinds.JOB.version, kinds.JOB.plural, labels=SELECTOR, registry=registry
)
async def on_job_event(
    event: kopf.RawEvent, body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    rt = runtime.of(memo)
    meta = body.get("metadata", {})
    namespace, owner = meta.get("namespace"), meta.get("labels", {}).get(labels.OWNER_LABEL)
    refs = [r for r in meta.get("ownerReferences", []) or [] if r.get("kind") == model.KIND]
    if owner is None or not refs or event.get("type") == "DELETED":
        return
    finished = migration.succeeded(dict(body)) or job_failure(body) is not None
    async with rt.lock(namespace, owner):
        seen = rt.migrations.get((namespace, owner))
    if seen == (meta.get("name"), finished) or (seen is None and not finished):
        return  # what the last reconcile already acted on, or a Job still running
    if seen is not None and seen[0] != meta.get("name"):
        return  # the Job of an image the spec no longer asks for
    runtime.enqueue(
        rt,
        namespace,
        owner,
        f"the migration Job {meta.get('name')} changed",
        expect_uid=refs[0].get("uid"),
        log=logger,
    )
