"""Deletion policy `Delete`: the database objects adbm created are dropped before the
BackendService goes.

Only objects with `deletionPolicy: Delete` match this handler, so only they carry Kopf's
finalizer (Kopf adds it when a non-optional deletion handler matches, and removes it when the
policy changes back to `Retain`). A server that cannot be reached is retried with backoff a
bounded number of times; then the finalizer is removed anyway, with an Event naming what was
left behind, so a database gone for good never blocks the deletion.
"""

from __future__ import annotations

from typing import Any

import kopf
import psycopg
from pydantic import ValidationError

from adbm_operator import kinds, kube, model
from adbm_operator.database.connect import Unreachable
from adbm_operator.database.deletion import deprovision
from adbm_operator.database.provision import retry_delay
from adbm_operator.database.target import AdminSecretError, admin_server
from adbm_operator.handlers import registry, runtime
from adbm_operator.specs import labels

MAX_ATTEMPTS = 5
"""Attempts before the finalizer is removed with the database left as it is (about 3.5 minutes
with `retry_delay`'s spacing)."""


def deletes_database(spec: kopf.Spec, **_: Any) -> bool:
    database = spec.get("database") or {}
    return bool(database.get("deletionPolicy") == model.DeletionPolicy.DELETE.value)


@kopf.on.delete(model.GROUP, model.VERSION, model.PLURAL, when=deletes_database, registry=registry)
async def drop_database_objects(
    body: kopf.Body, memo: Any, retry: int, logger: kopf.Logger, **_: Any
) -> None:
    try:
        obj = model.parse(dict(body))
    except ValidationError:
        kopf.event(
            body, type="Warning", reason="DeprovisionSkipped", message="the spec does not validate"
        )
        return
    db = obj.spec.database
    what = f"database {db.name} and role {labels.app_role(obj)}"
    try:
        client = await runtime.of(memo).api()
        ref = db.admin_secret_ref
        secret = await client.get(kinds.SECRET, obj.namespace, ref.name)
        if secret is None:
            raise AdminSecretError(f"admin Secret {ref.name} not found")
        report = await deprovision(
            admin_server(secret.get("data") or {}, ref.key),
            policy=db.deletion_policy,
            owner=f"{obj.namespace}/{obj.name}",
            database=db.name,
            app_role=labels.app_role(obj),
            tables=tuple(db.row_level_security.tables),
        )
    except (Unreachable, AdminSecretError, kube.ApiError, psycopg.Error) as exc:
        if retry + 1 < MAX_ATTEMPTS:
            raise kopf.TemporaryError(str(exc), delay=retry_delay(retry + 1)) from exc
        message = f"gave up after {MAX_ATTEMPTS} attempts ({exc}); left behind: {what}"
        kopf.event(body, type="Warning", reason="DeprovisionAbandoned", message=message[:1024])
        logger.warning(message)
        return
    dropped = ", ".join(report.dropped) or "nothing"
    message = f"dropped {dropped}" + (f"; left: {', '.join(report.left)}" if report.left else "")
    kopf.event(body, type="Normal", reason="DatabaseDeprovisioned", message=message[:1024])
    logger.info(message)
