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

from typing import Final
from uuid import UUID

from fastapi import APIRouter, Request, Response

from reference_service.domain import accounts, orders, products
from reference_service.http.auth import CurrentPrincipal, actor
from reference_service.http.pagination import CursorParam, Limit, Page, page_response
from reference_service.http.routing import (
    ERRORS,
    IfMatch,
    Svc,
    optional_version,
    required_version,
    resource_response,
)

PREFIX: Final = "/api/v1"

router = APIRouter(prefix=PREFIX)

# Products ------------------------------------------------------------------------------------


@router.post(
    "/products",
    status_code=201,
    response_model=products.Product,
    responses=ERRORS,
    tags=["products"],
)
async def create_product(
    data: products.ProductCreate, request: Request, principal: CurrentPrincipal, svc: Svc
) -> Response:
    async with svc.database.transaction(principal.tenant_id) as conn:
        product = await products.create(conn, principal.tenant_id, data, actor=actor(principal))
    location = f"{request.url.path}/{product.id}"
    return resource_response(product, 201, Location=location)


@router.get("/products", response_model=Page[products.Product], responses=ERRORS, tags=["products"])
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
    responses=ERRORS,
    tags=["products"],
)
async def get_product(product_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    product = await products.get(svc.database, principal.tenant_id, product_id)
    return resource_response(product)


@router.patch(
    "/products/{product_id}",
    response_model=products.Product,
    responses=ERRORS,
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
    return resource_response(product)


@router.delete("/products/{product_id}", status_code=204, responses=ERRORS, tags=["products"])
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
    responses=ERRORS,
    tags=["accounts"],
)
async def create_account(
    data: accounts.AccountCreate, request: Request, principal: CurrentPrincipal, svc: Svc
) -> Response:
    async with svc.database.transaction(principal.tenant_id) as conn:
        account = await accounts.create(conn, principal.tenant_id, data, actor=actor(principal))
    location = f"{request.url.path}/{account.id}"
    return resource_response(account, 201, Location=location)


@router.get("/accounts", response_model=Page[accounts.Account], responses=ERRORS, tags=["accounts"])
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
    responses=ERRORS,
    tags=["accounts"],
)
async def get_account(account_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    account = await accounts.get(svc.database, principal.tenant_id, account_id)
    return resource_response(account)


@router.patch(
    "/accounts/{account_id}",
    response_model=accounts.Account,
    responses=ERRORS,
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
    return resource_response(account)


@router.delete("/accounts/{account_id}", status_code=204, responses=ERRORS, tags=["accounts"])
async def delete_account(
    account_id: UUID, principal: CurrentPrincipal, svc: Svc, if_match: IfMatch = None
) -> Response:
    version = optional_version(if_match)
    async with svc.database.transaction(principal.tenant_id) as conn:
        await accounts.delete(conn, account_id, expected_version=version, actor=actor(principal))
    return Response(status_code=204)


# Orders --------------------------------------------------------------------------------------


@router.get("/orders", response_model=Page[orders.Order], responses=ERRORS, tags=["orders"])
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


@router.get("/orders/{order_id}", response_model=orders.Order, responses=ERRORS, tags=["orders"])
async def get_order(order_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    order = await orders.get(svc.database, principal.tenant_id, order_id)
    return resource_response(order)
