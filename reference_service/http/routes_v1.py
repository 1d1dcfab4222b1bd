"""Version 1 of the API: products, accounts (read and write) and orders (read).

Routes stay thin: authenticate, call one domain function as the caller's tenant, shape the
response. Reads are one pipelined round trip (`Database.read`); writes run in a
`Database.transaction`, and a change is one statement conditioned on the version the client
read (`If-Match`), so a concurrent change is refused (412) instead of silently overwritten.

Responses are built as `JSONResponse` from the domain model directly; `response_model` is
declared only for the OpenAPI document, so FastAPI does not validate and serialise each body a
second time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from reference_service.domain import accounts, orders, products
from reference_service.domain.common import Resource
from reference_service.http.auth import CurrentPrincipal, actor
from reference_service.http.pagination import CursorParam, Limit, Page, page_response
from reference_service.http.problems import (
    MEDIA_TYPE,
    PRECONDITION_FAILED,
    PRECONDITION_REQUIRED,
    REGISTRY,
    Problem,
)
from reference_service.http.state import Services, services

PREFIX: Final = "/api/v1"

router = APIRouter(prefix=PREFIX)

Svc = Annotated[Services, Depends(services)]
IfMatch = Annotated[
    str | None,
    Header(
        max_length=64,
        description='The `ETag` of your last read, e.g. `"3"`: the change applies only to that '
        "version.",
    ),
]

# One strong entity tag holding a version number. A weak tag (`W/"3"`) never matches: If-Match
# uses strong comparison (RFC 9110 section 13.1.1).
_ETAG = re.compile(r'"([0-9]{1,18})"')


def _error_responses() -> dict[int | str, dict[str, Any]]:
    """Every registered problem, by status, for the OpenAPI document."""
    titles: dict[int, list[str]] = {}
    for kind in REGISTRY.values():
        titles.setdefault(kind.status, []).append(f"{kind.title} ({kind.uri})")
    return {
        status: {"description": "; ".join(names), "content": {MEDIA_TYPE: {}}}
        for status, names in sorted(titles.items())
    }


_ERRORS: Final = _error_responses()


def etag(version: int) -> str:
    return f'"{version}"'


def _resource(model: Resource, status_code: int = 200, **headers: str) -> Response:
    return JSONResponse(
        model.model_dump(mode="json"),
        status_code=status_code,
        headers={"ETag": etag(model.version), **headers},
    )


def _parse_etag(value: str) -> int:
    match = _ETAG.fullmatch(value)
    if match is None:
        raise Problem(
            PRECONDITION_FAILED,
            'If-Match must be exactly one ETag as this service sends it, e.g. "3".',
        )
    return int(match[1])


def required_version(if_match: str | None) -> int:
    """The version `If-Match` names, where a write must name one."""
    value = None if if_match is None else if_match.strip()
    # `*` names no version, so it cannot stand in for one.
    if value is None or value == "*":
        raise Problem(
            PRECONDITION_REQUIRED,
            'Send If-Match with the ETag of your last read, e.g. If-Match: "3".',
        )
    return _parse_etag(value)


def optional_version(if_match: str | None) -> int | None:
    """The version `If-Match` names, or None when it is absent or `*` (which asks only that
    the resource exist, as every write checks anyway)."""
    value = None if if_match is None else if_match.strip()
    if value is None or value == "*":
        return None
    return _parse_etag(value)


# Products ------------------------------------------------------------------------------------


@router.post(
    "/products",
    status_code=201,
    response_model=products.Product,
    responses=_ERRORS,
    tags=["products"],
)
async def create_product(
    data: products.ProductCreate, request: Request, principal: CurrentPrincipal, svc: Svc
) -> Response:
    async with svc.database.transaction(principal.tenant_id) as conn:
        product = await products.create(conn, principal.tenant_id, data, actor=actor(principal))
    location = f"{request.url.path}/{product.id}"
    return _resource(product, 201, Location=location)


@router.get(
    "/products", response_model=Page[products.Product], responses=_ERRORS, tags=["products"]
)
async def list_products(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Response:
    after = svc.cursors.decode("products", cursor) if cursor is not None else None
    rows = await products.page(svc.database, principal.tenant_id, after=after, limit=limit + 1)
    return page_response(request, svc.cursors, "products", rows, limit)


@router.get(
    "/products/{product_id}",
    response_model=products.Product,
    responses=_ERRORS,
    tags=["products"],
)
async def get_product(product_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    product = await products.get(svc.database, principal.tenant_id, product_id)
    return _resource(product)


@router.patch(
    "/products/{product_id}",
    response_model=products.Product,
    responses=_ERRORS,
    tags=["products"],
)
async def update_product(
    product_id: UUID,
    data: products.ProductChanges,
    principal: CurrentPrincipal,
    svc: Svc,
    if_match: IfMatch = None,
) -> Response:
    version = required_version(if_match)
    async with svc.database.transaction(principal.tenant_id) as conn:
        product = await products.update(
            conn, product_id, data, expected_version=version, actor=actor(principal)
        )
    return _resource(product)


@router.delete("/products/{product_id}", status_code=204, responses=_ERRORS, tags=["products"])
async def delete_product(
    product_id: UUID, principal: CurrentPrincipal, svc: Svc, if_match: IfMatch = None
) -> Response:
    version = optional_version(if_match)
    async with svc.database.transaction(principal.tenant_id) as conn:
        await products.delete(conn, product_id, expected_version=version, actor=actor(principal))
    return Response(status_code=204)


# Accounts ------------------------------------------------------------------------------------


@router.post(
    "/accounts",
    status_code=201,
    response_model=accounts.Account,
    responses=_ERRORS,
    tags=["accounts"],
)
async def create_account(
    data: accounts.AccountCreate, request: Request, principal: CurrentPrincipal, svc: Svc
) -> Response:
    async with svc.database.transaction(principal.tenant_id) as conn:
        account = await accounts.create(conn, principal.tenant_id, data, actor=actor(principal))
    location = f"{request.url.path}/{account.id}"
    return _resource(account, 201, Location=location)


@router.get(
    "/accounts", response_model=Page[accounts.Account], responses=_ERRORS, tags=["accounts"]
)
async def list_accounts(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Response:
    after = svc.cursors.decode("accounts", cursor) if cursor is not None else None
    rows = await accounts.page(svc.database, principal.tenant_id, after=after, limit=limit + 1)
    return page_response(request, svc.cursors, "accounts", rows, limit)


@router.get(
    "/accounts/{account_id}",
    response_model=accounts.Account,
    responses=_ERRORS,
    tags=["accounts"],
)
async def get_account(account_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    account = await accounts.get(svc.database, principal.tenant_id, account_id)
    return _resource(account)


@router.patch(
    "/accounts/{account_id}",
    response_model=accounts.Account,
    responses=_ERRORS,
    tags=["accounts"],
)
async def update_account(
    account_id: UUID,
    data: accounts.AccountChanges,
    principal: CurrentPrincipal,
    svc: Svc,
    if_match: IfMatch = None,
) -> Response:
    version = required_version(if_match)
    async with svc.database.transaction(principal.tenant_id) as conn:
        account = await accounts.update(
            conn, account_id, data, expected_version=version, actor=actor(principal)
        )
    return _resource(account)


@router.delete("/accounts/{account_id}", status_code=204, responses=_ERRORS, tags=["accounts"])
async def delete_account(
    account_id: UUID, principal: CurrentPrincipal, svc: Svc, if_match: IfMatch = None
) -> Response:
    version = optional_version(if_match)
    async with svc.database.transaction(principal.tenant_id) as conn:
        await accounts.delete(conn, account_id, expected_version=version, actor=actor(principal))
    return Response(status_code=204)


# Orders --------------------------------------------------------------------------------------


@router.get("/orders", response_model=Page[orders.Order], responses=_ERRORS, tags=["orders"])
async def list_orders(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Response:
    after = svc.cursors.decode("orders", cursor) if cursor is not None else None
    rows = await orders.page(svc.database, principal.tenant_id, after=after, limit=limit + 1)
    return page_response(request, svc.cursors, "orders", rows, limit)


@router.get("/orders/{order_id}", response_model=orders.Order, responses=_ERRORS, tags=["orders"])
async def get_order(order_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    order = await orders.get(svc.database, principal.tenant_id, order_id)
    return _resource(order)
