"""Optional integrations, discovered live: the ServiceMonitor and KEDA CRDs.

Watching CustomResourceDefinitions (rather than checking once at start-up) means installing the
prometheus-operator or KEDA later is noticed at once: every BackendService is reconciled again
and its ServiceMonitor or ScaledObjects appear, with no operator restart.
"""

from __future__ import annotations

from typing import Any

import kopf

from adbm_operator import kinds
from adbm_operator.handlers import registry, runtime


def served(body: kopf.Body, event_type: str | None) -> bool:
    if event_type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        return False
    conditions = (body.get("status") or {}).get("conditions") or []
    established = [c for c in conditions if c.get("type") == "Established"]
    # A CRD the API server has not established yet serves nothing; one without conditions
    # is taken at its word.
    return not established or established[0].get("status") == "True"


@kopf.on.event(
    kinds.CUSTOM_RESOURCE_DEFINITION.group,
    kinds.CUSTOM_RESOURCE_DEFINITION.version,
    kinds.CUSTOM_RESOURCE_DEFINITION.plural,
    when=lambda name, **_: name in kinds.BY_CRD,
    registry=registry,
)
async def on_crd_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    name: str,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    by_name: kopf.Index[Any, bool] = kwargs["by_name"]
    rt = runtime.of(memo)
    kind = kinds.BY_CRD[name]
    now = served(body, event.get("type"))
    if now == rt.integrations.has(kind):
        return
    if now:
        rt.integrations.installed.add(kind)
    else:
        rt.integrations.installed.discard(kind)
    logger.info(f"{kind.kind} is {'now' if now else 'no longer'} served; reconciling all")
    runtime.enqueue_each(rt, sorted(by_name), f"{name} changed", logger)
