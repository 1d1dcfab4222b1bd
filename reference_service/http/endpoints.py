"""The endpoint factory: every route of an API version, generated from the resource
declarations (`domain.resources`) and the version's representation.

Each operation has one handler shape here, whatever the resource or the version: authenticate,
call the resource's table as the caller's tenant, shape the response. Reads are one pipelined
round trip (`Database.read`); writes run in a `Database.transaction`, and a change is one
statement conditioned on the version the client read (`If-Match`), so a concurrent change is
refused (412) instead of silently overwritten. Responses are `FastJSONResponse`s built by the
representation; `response_model` is declared only for the OpenAPI document, so FastAPI does not
validate and serialise each body a second time.

A resource declared with a `Submission` is created asynchronously: its POST starts the work
(one transaction, the outbox included) and answers 202 with `Location` of the resource to poll.
A resource declared `cached` is read one item at a time through its `TableCache`: a create
adds the id to the tenant's filter before it commits, a change or delete invalidates the entry
after it committed.

Each operation also says which problems it can answer with, which become its OpenAPI error
table, and which headers it requires.

No `from __future__ import annotations` here: FastAPI reads the handlers' annotations as
objects, and string annotations would be resolved against this module's globals, where the
per-resource models and path parameters of the closures do not exist.
"""

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request, Response

from reference_service.domain.common import Operation, ResourceSpec
from reference_service.http import guards, idempotency, problems
from reference_service.http.auth import actor
from reference_service.http.guards import caller_of
from reference_service.http.head import head_of
from reference_service.http.json_response import FastJSONResponse
from reference_service.http.jsonbody import JsonBodyRoute
from reference_service.http.pagination import CursorParam, Limit, Page, page_response
from reference_service.http.preconditions import (
    IF_MATCH_REQUIRED,
    IfMatch,
    etag,
    optional_version,
    required_version,
)
from reference_service.http.problems import (
    PRECONDITION_FAILED,
    PRECONDITION_REQUIRED,
    Problem,
    ProblemType,
)
from reference_service.http.representation import Representation
from reference_service.http.state import Services

# What any API operation can answer: a bad parameter or body, no valid key, a body over the
# limit, the rate limit, a bug, or a dependency (database, Redis) that is down or busy.
EVERY_API_OPERATION: Final = (
    problems.VALIDATION_ERROR,
    problems.UNAUTHORIZED,
    problems.PAYLOAD_TOO_LARGE,
    problems.RATE_LIMITED,
    problems.INTERNAL_ERROR,
    problems.SERVICE_UNAVAILABLE,
)
IDEMPOTENT_WRITE: Final = (
    problems.IDEMPOTENCY_KEY_REQUIRED,
    problems.IDEMPOTENCY_IN_FLIGHT,
    problems.IDEMPOTENCY_KEY_REUSED,
)
# The problems of each operation beyond those of every operation, idempotency and conflicts.
_OWN_PROBLEMS: Final[dict[Operation, tuple[ProblemType, ...]]] = {
    Operation.CREATE: (problems.UNSUPPORTED_MEDIA_TYPE,),
    Operation.LIST: (problems.INVALID_CURSOR,),
    Operation.GET: (problems.NOT_FOUND,),
    Operation.CHANGE: (
        problems.NOT_FOUND,
        problems.UNSUPPORTED_MEDIA_TYPE,
        PRECONDITION_FAILED,
        PRECONDITION_REQUIRED,
    ),
    Operation.DELETE: (problems.NOT_FOUND, PRECONDITION_FAILED),
}


def operation_problems(spec: ResourceSpec[Any], operation: Operation) -> list[ProblemType]:
    """Every problem `operation` on `spec` can answer with."""
    kinds = [*EVERY_API_OPERATION, *_OWN_PROBLEMS[operation]]
    if operation is Operation.CREATE and spec.submission is not None:
        # What it refers to may not exist for the tenant; the domain may refuse it.
        kinds.append(problems.NOT_FOUND)
        kinds += [problems.REFUSALS[refusal] for refusal in spec.submission.refusals]
    if operation in spec.idempotent:
        kinds += IDEMPOTENT_WRITE
    if spec.conflicts(operation):
        kinds.append(problems.CONFLICT)
    return kinds


def resource_response(
    body: dict[str, Any], version: int, status_code: int = 200, **headers: str
) -> Response:
    return FastJSONResponse(
        body, status_code=status_code, headers={"ETag": etag(version), **headers}
    )


Handler = Callable[..., Any]


def _guard(spec: ResourceSpec[Any], operation: Operation) -> Any:
    """The route's one guard (see `guards`), whose `Caller` the handler takes (`caller_of`):
    the idempotency claim for a write the resource declares idempotent, the cache read for a
    cached resource's GET, else the rate limit alone."""
    if operation in spec.idempotent:
        guard = guards.IDEMPOTENT
    elif operation is Operation.GET and spec.cached:
        guard = Depends(guards.cached_read(spec.name, f"{spec.item}_id"))
    else:
        guard = guards.ADMITTED
    return guard


def _create(spec: ResourceSpec[Any], version: Representation) -> Handler:
    body_model = version.create_model(spec)
    to_domain = version.create_in(spec)
    show = version.show(spec)

    async def create(
        data: body_model,  # type: ignore[valid-type]
        request: Request,
    ) -> Response:
        caller = caller_of(request)
        principal, svc = caller.principal, caller.services
        cache = svc.caches.get(spec.name)
        # The id the idempotency claim reserved is in the filter already (same round trip).
        reserved = guards.reserved_id(request)
        async with svc.database.transaction(principal.tenant_id) as conn:
            row = await spec.table.create(
                conn, principal.tenant_id, to_domain(data), actor=actor(principal), row_id=reserved
            )
            if cache is not None and reserved is None:
                # Before the commit: no read after it may be refused by the filter.
                await cache.remember(principal.tenant_id, row.id)
        location = f"{request.url.path}/{row.id}"
        return resource_response(show(row), row.version, 201, Location=location)

    return create


def _submit(spec: ResourceSpec[Any], version: Representation) -> Handler:
    """CREATE of a resource whose work runs behind the queue: 202 Accepted with `Location` of
    the resource, whose state the client polls."""
    submission = spec.submission
    assert submission is not None
    body_model = version.create_model(spec)
    to_domain = version.create_in(spec)
    show = version.show(spec)

    async def submit(
        data: body_model,  # type: ignore[valid-type]
        request: Request,
    ) -> Response:
        caller = caller_of(request)
        principal, svc = caller.principal, caller.services
        reason = submission.unavailable(svc.settings)
        if reason is not None:
            raise Problem(problems.SERVICE_UNAVAILABLE, reason)
        row = await submission.start(
            svc.database,
            principal.tenant_id,
            to_domain(data),
            actor=actor(principal),
            settings=svc.settings,
        )
        location = f"{request.url.path}/{row.id}"
        return resource_response(show(row), row.version, 202, Location=location)

    return submit


def _list(spec: ResourceSpec[Any], version: Representation) -> Handler:
    show = version.show(spec)
    show_all = version.show_all(spec)

    async def list_(
        request: Request,
        limit: Limit = 50,
        cursor: CursorParam = None,
    ) -> Response:
        caller = caller_of(request)
        principal, svc = caller.principal, caller.services
        after = svc.cursors.decode(spec.name, cursor) if cursor is not None else None
        rows = await spec.table.page(
            svc.database, principal.tenant_id, after=after, limit=limit + 1
        )
        return page_response(request, svc.cursors, spec.name, rows, limit, show, show_all)

    return list_


def _get(spec: ResourceSpec[Any], version: Representation) -> Handler:
    show = version.show(spec)
    item_id = Annotated[UUID, Path(alias=f"{spec.item}_id")]

    async def get(row_id: item_id, request: Request) -> Response:
        # A cached resource's guard read the row's cache entry in the rate limit's round trip
        # (`caller.carried`, None for any other).
        caller = caller_of(request)
        principal, svc = caller.principal, caller.services
        cache = svc.caches.get(spec.name)
        if cache is not None:
            row = await cache.get(principal.tenant_id, row_id, caller.carried)
        else:
            row = await spec.table.get(svc.database, principal.tenant_id, row_id)
        return resource_response(show(row), row.version)

    return get


def _change(spec: ResourceSpec[Any], version: Representation) -> Handler:
    body_model = version.changes_model(spec)
    to_domain = version.changes_in(spec)
    show = version.show(spec)
    item_id = Annotated[UUID, Path(alias=f"{spec.item}_id")]

    async def update(
        row_id: item_id,
        data: body_model,  # type: ignore[valid-type]
        request: Request,
    ) -> Response:
        caller = caller_of(request)
        principal, svc = caller.principal, caller.services
        expected = required_version(request.headers.get("if-match"))
        async with svc.database.transaction(principal.tenant_id) as conn:
            row = await spec.table.update(
                conn, row_id, to_domain(data), expected_version=expected, actor=actor(principal)
            )
        await _invalidate(svc, spec, principal.tenant_id, row_id)
        return resource_response(show(row), row.version)

    return update


def _delete(spec: ResourceSpec[Any], version: Representation) -> Handler:
    item_id = Annotated[UUID, Path(alias=f"{spec.item}_id")]

    async def delete(row_id: item_id, request: Request, if_match: IfMatch = None) -> Response:
        caller = caller_of(request)
        principal, svc = caller.principal, caller.services
        expected = optional_version(if_match)
        async with svc.database.transaction(principal.tenant_id) as conn:
            await spec.table.delete(conn, row_id, expected_version=expected, actor=actor(principal))
        await _invalidate(svc, spec, principal.tenant_id, row_id)
        return Response(status_code=204)

    return delete


async def _invalidate(
    svc: Services, spec: ResourceSpec[Any], tenant_id: UUID, row_id: UUID
) -> None:
    """After the write committed: a read that loads the row from now on sees it, and the
    generation check keeps a load that began before from storing the old row."""
    cache = svc.caches.get(spec.name)
    if cache is not None:
        await cache.invalidate(tenant_id, row_id)


# Per operation: the handler's maker, its method, path below the collection, success status
# and the name its OpenAPI operation id starts with.
_OPERATIONS: Final = {
    Operation.CREATE: (_create, "POST", "", 201, "create_{item}"),
    Operation.LIST: (_list, "GET", "", 200, "list_{name}"),
    Operation.GET: (_get, "GET", "/{{{item}_id}}", 200, "get_{item}"),
    Operation.CHANGE: (_change, "PATCH", "/{{{item}_id}}", 200, "update_{item}"),
    Operation.DELETE: (_delete, "DELETE", "/{{{item}_id}}", 204, "delete_{item}"),
}


def _response_model(spec: ResourceSpec[Any], version: Representation, operation: Operation) -> Any:
    if operation is Operation.DELETE:
        return None
    shown = version.response_model(spec)
    return Page[shown] if operation is Operation.LIST else shown  # type: ignore[valid-type]


def _headers(spec: ResourceSpec[Any], operation: Operation) -> list[dict[str, Any]]:
    """The required headers the handlers read themselves, for the OpenAPI document."""
    headers = []
    if operation is Operation.CHANGE:
        headers.append(IF_MATCH_REQUIRED)
    if operation in spec.idempotent:
        headers.append(idempotency.KEY_PARAMETER)
    return headers


def add_resource(router: APIRouter, spec: ResourceSpec[Any], version: Representation) -> None:
    """Every operation `spec` declares, as `version` represents it, on `router`."""
    for operation in Operation:
        if operation not in spec.operations:
            continue
        make, method, below, status, name = _OPERATIONS[operation]
        if operation is Operation.CREATE and spec.submission is not None:
            make, status = _submit, 202
        # Each route's one guard (`_guard`) rate limits it once: an idempotent write's claim
        # and a cached GET's read travel with the limit, in one Redis round trip. Dependencies
        # run in order, so `creates` has marked the request when the claim runs.
        dependencies = [_guard(spec, operation)]
        creates_cached = spec.cached and spec.submission is None
        if operation is Operation.CREATE and operation in spec.idempotent and creates_cached:
            dependencies.insert(0, Depends(guards.creates(spec.name)))
        headers = _headers(spec, operation)
        path = f"/{spec.name}" + below.format(item=spec.item)
        handler = make(spec, version)
        router.add_api_route(
            path,
            handler,
            methods=[method],
            status_code=status,
            name=name.format(item=spec.item, name=spec.name),
            response_model=_response_model(spec, version, operation),
            responses=problems.openapi_responses(operation_problems(spec, operation)),
            dependencies=dependencies,
            tags=[spec.name],
            openapi_extra={"parameters": headers} if headers else None,
        )
        if method == "GET":
            router.add_api_route(
                path,
                head_of(handler),
                methods=["HEAD"],
                status_code=status,
                name="head_" + name.format(item=spec.item, name=spec.name),
                dependencies=dependencies,
                include_in_schema=False,
            )


def version_router(version: Representation, resources: Iterable[ResourceSpec[Any]]) -> APIRouter:
    """Every route of one API version."""
    router = APIRouter(prefix=version.prefix, route_class=JsonBodyRoute)
    for spec in resources:
        add_resource(router, spec, version)
    return router
