"""Secret rotation: a change to a Secret the pods read rolls them.

The pod template carries a hash of the referenced Secrets' resourceVersions
(`checksum/secrets`), so re-rendering after a Secret event changes it exactly when needed.
"""

from __future__ import annotations

from typing import Any

import kopf

from adbm_operator import kinds
from adbm_operator.handlers import registry, runtime


@kopf.on.event(kinds.SECRET.group, kinds.SECRET.version, kinds.SECRET.plural, registry=registry)
async def on_secret_event(
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    by_secret: kopf.Index[Any, str] = kwargs["by_secret"]
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace"), meta.get("name")
    rt = runtime.of(memo)
    version = meta.get("resourceVersion")
    owners = set()
    # A copy: the index changes while this loop awaits (an owner deleted meanwhile).
    for owner in list(by_secret.get((namespace, name), [])):
        # Under the owner's lock, so a reconcile in flight records what it read first.
        async with rt.lock(namespace, owner):
            seen = rt.secrets_seen.get((namespace, owner))
        # Never reconciled yet: its own create/resume handler reads the Secret as it is now.
        # Seen at this version: the pods already carry it.
        if seen is not None and seen.get(name) != version:
            owners.add(owner)
    runtime.enqueue_each(
        rt, [(namespace, owner) for owner in sorted(owners)], f"Secret {name} changed", logger
    )
