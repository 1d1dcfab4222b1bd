"""Operator start-up, login and shutdown."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from adbm_operator import kube
from adbm_operator.handlers import registry, runtime


def settings(fast: bool = False) -> kopf.OperatorSettings:
    """Operator settings. Kopf's bookkeeping goes into `adbm.io/` annotations, since the CRD's
    structural status schema would prune a `status.kopf` field."""
    s = kopf.OperatorSettings()
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="adbm.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="adbm.io", key="last-handled-configuration"
    )
    # Handler chatter would be an Event per reconcile; our own Events mark real state changes.
    s.posting.level = logging.WARNING
    if fast:
        s.scanning.disabled = True
        s.watching.reconnect_backoff = 0.01
        s.queueing.exit_timeout = 0.5
    return s


@kopf.on.login(registry=registry)
async def login(memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then the current kubeconfig context; our own client
    shares the identity Kopf uses."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        rt = runtime.of(memo)
        if rt.client is not None:  # re-login after the credentials expired
            await rt.client.close()
        rt.client = kube.Client(info)
        rt.connected.set()
    return info


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: Any, **_: Any) -> None:
    rt = runtime.of(memo)
    for task in rt.retries.values():
        task.cancel()
    if rt.client is not None:
        await rt.client.close()
