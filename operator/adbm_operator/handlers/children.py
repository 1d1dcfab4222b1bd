"""Drift: a managed child changed or deleted by hand is brought back.

Every kind the operator creates is watched, filtered to objects carrying its labels. Any change
re-runs the owner's reconcile, which re-applies only what differs, never a field an autoscaler
owns; Deployment status changes arrive here too and move the owner's Ready condition.
"""

from __future__ import annotations

from typing import Any

import kopf

from adbm_operator import kinds, model, observe, reconcile
from adbm_operator.handlers import registry, runtime
from adbm_operator.specs import labels

SELECTOR: dict[str, Any] = {
    labels.OWNER_LABEL: kopf.PRESENT,
    "app.kubernetes.io/managed-by": labels.MANAGED_BY,
}


async def on_child_event(
    event: kopf.RawEvent, body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    rt = runtime.of(memo)
    meta = body.get("metadata", {})
    namespace, owner = meta.get("namespace"), meta.get("labels", {}).get(labels.OWNER_LABEL)
    refs = [r for r in meta.get("ownerReferences", []) or [] if r.get("kind") == model.KIND]
    if owner is None or not refs:
        return
    # Under the owner's lock: a reconcile in flight finishes first, so its own writes coming
    # back are recognised as such, without a single API call.
    async with rt.lock(namespace, owner):
        rendered = rt.rendered.get((namespace, owner), {})
        seen = rt.rollouts.get((namespace, meta.get("name")))
    packed = rendered.get(runtime.identity(body))
    desired = None if packed is None else runtime.unpack(packed)
    drifted = event.get("type") == "DELETED" or desired is None or reconcile.differs(desired, body)
    if not drifted:
        if body.get("kind") != "Deployment":
            return  # our own write coming back
        if seen is not None and observe.rollout(body, meta.get("name", "")) == seen:
            return  # a status heartbeat: the rollout state we reported has not changed
    # A Deployment that only moved on with its rollout changes the status, nothing else.
    kind, child = body.get("kind"), meta.get("name")
    runtime.enqueue(
        rt,
        namespace,
        owner,
        f"a change to {kind} {child}",
        expect_uid=refs[0].get("uid"),
        drift=drifted,
        write=drifted,
        database_pass=False,  # a child's drift changes nothing in the database
        corrected=f"{kind} {child}" if event.get("type") in ("MODIFIED", "DELETED") else None,
        log=logger,
    )


for _kind in kinds.APPLIED:
    kopf.on.event(_kind.group, _kind.version, _kind.plural, labels=SELECTOR, registry=registry)(
        on_child_event
    )
