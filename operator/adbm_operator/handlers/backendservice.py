"""BackendService create, update and resume: converge and report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from adbm_operator import backoff, kube, model, reconcile, status
from adbm_operator.handlers import registry, runtime
from adbm_operator.spec_errors import format_validation_error
from adbm_operator.specs import pod


# The indexers are async, as `forget` is: Kopf runs sync handlers in its thread pool, and an
# event of every BackendService calls both, so sync ones cost a thread hop each and give the
# process per-thread malloc arenas it does not otherwise need.
@kopf.index(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
async def by_secret(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, str]:
    """(namespace, Secret name) -> the BackendServices whose pods read that Secret, or whose
    database admin it is."""
    try:
        obj = model.parse(dict(body))
    except ValidationError:
        return {}
    found = {(namespace, ref.name): name for ref in pod.referenced_secrets(obj)}
    found[(namespace, obj.spec.database.admin_secret_ref.name)] = name
    return found


@kopf.index(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
async def by_name(namespace: str | None, name: str, **_: Any) -> dict[Any, bool]:
    return {(namespace, name): True}


@kopf.on.resume(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
@kopf.on.create(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
@kopf.on.update(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
async def converge(body: kopf.Body, memo: Any, retry: int, logger: kopf.Logger, **_: Any) -> None:
    rt = runtime.of(memo)
    try:
        meta = body["metadata"]
        outcome = await runtime.converge(rt, meta["namespace"], meta["name"], log=logger)
    except ValidationError as exc:
        await _invalid(rt, body, exc, logger)
        raise kopf.PermanentError(f"invalid spec: {exc.error_count()} problems") from exc
    except LookupError:
        return  # deleted meanwhile; garbage collection removes the children
    except kube.ApiError as exc:
        if not exc.temporary:
            raise kopf.PermanentError(str(exc)) from exc
        raise kopf.TemporaryError(str(exc), delay=backoff.delay(retry)) from exc
    if outcome.temporary_error:
        raise kopf.TemporaryError(outcome.temporary_error, delay=backoff.delay(retry))


@kopf.on.event(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
async def forget(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A deleted BackendService leaves nothing behind in the operator's memory. Async, so it
    runs in the event loop with the other handlers (Kopf runs sync handlers in threads)."""
    if type == "DELETED" and namespace is not None:
        runtime.of(memo).forget(namespace, name)


async def _invalid(
    rt: runtime.Runtime, body: kopf.Body, exc: ValidationError, logger: kopf.Logger
) -> None:
    """Report an invalid spec once, clearly: the API server's CRD validation should have
    stopped it, so this means the installed CRD is older than the operator."""
    message = "the spec does not validate (is the installed CRD current?):\n" + (
        format_validation_error(exc)
    )
    previous = status.parse(body.get("status"))
    observation = status.Observation(
        generation=int(body["metadata"].get("generation", 0)),
        paused=False,
        children=[],
        api=None,
        error=message,
        error_reason="InvalidSpec",
    )
    new = status.compute(observation, previous, datetime.now(UTC).replace(microsecond=0))
    outcome = reconcile.Outcome(new, status.transitions(previous, new), 0)
    client = await rt.api()
    await runtime.publish(client, body, outcome, logger)
