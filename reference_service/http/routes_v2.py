"""Version 2 of the API: the resources of v1, with money as one `{"amount", "currency"}` object.

v1 spreads an amount over `<name>_minor` and `currency`; v2 nests both under `<name>` (`price`,
`balance`, `total`), so an amount never travels without its currency. Only the request and
response models and the mapping between them and the domain models differ: the routes call the
same domain functions as v1, with the same transactions, ETags and `If-Match` rules (from
`routing`), so the two versions cannot drift in behaviour.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Self, TypeVar
from uuid import UUID

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from reference_service.domain import accounts, orders, products
from reference_service.domain.common import (
    Changes,
    Currency,
    Input,
    MinorUnits,
    Name,
    Resource,
    Sku,
)
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

PREFIX: Final = "/api/v2"

router = APIRouter(prefix=PREFIX)

# Models are suffixed `V2`: their names are the schema names of the one OpenAPI document both
# versions share, and the v1 models already hold the plain names.


# Money ---------------------------------------------------------------------------------------


class MoneyInput(Input):
    """Money in a request: strict like every request body (no floats, no strings for numbers)."""

    amount: MinorUnits
    currency: Currency


class Money(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Annotated[int, Field(description="Integer minor units of `currency` (cents for EUR).")]
    currency: Annotated[str, Field(description="ISO 4217 code, e.g. EUR.")]


def _nest_money(model: Resource, field: str) -> dict[str, Any]:
    """The domain model's fields with `<field>_minor` and `currency` folded into `<field>`."""
    values = dict(model)
    values[field] = Money(amount=values.pop(f"{field}_minor"), currency=values.pop("currency"))
    return values


def _flat_money(field: str, money: MoneyInput) -> dict[str, Any]:
    """A v2 money value as the v1 (domain) fields it stands for."""
    return {f"{field}_minor": money.amount, "currency": money.currency}


class _V2Resource(Resource):
    """A v2 body made from its domain model by folding one money field."""

    MONEY_FIELD: ClassVar[str] = ""

    @classmethod
    def of(cls, model: Resource) -> Self:
        return cls.model_validate(_nest_money(model, cls.MONEY_FIELD))


# Resources -----------------------------------------------------------------------------------


class ProductCreateV2(Input):
    sku: Sku
    name: Name
    price: MoneyInput

    def to_domain(self) -> products.ProductCreate:
        return products.ProductCreate(
            sku=self.sku, name=self.name, **_flat_money("price", self.price)
        )


class ProductChangesV2(Changes):
    name: Name | None = None
    price: MoneyInput | None = None

    def to_domain(self) -> products.ProductChanges:
        # Only the fields the client sent, so the domain model sees the same partial change.
        sent: dict[str, Any] = {}
        if "name" in self.model_fields_set:
            sent["name"] = self.name
        if self.price is not None:
            sent.update(_flat_money("price", self.price))
        return products.ProductChanges(**sent)


class ProductV2(_V2Resource):
    MONEY_FIELD: ClassVar[str] = "price"

    sku: str
    name: str
    price: Money


class AccountCreateV2(Input):
    name: Name
    # The opening balance; its currency is the account's, fixed for its lifetime (as in v1).
    balance: MoneyInput

    def to_domain(self) -> accounts.AccountCreate:
        return accounts.AccountCreate(name=self.name, **_flat_money("balance", self.balance))


class AccountV2(_V2Resource):
    MONEY_FIELD: ClassVar[str] = "balance"

    name: str
    balance: Money


class OrderV2(_V2Resource):
    MONEY_FIELD: ClassVar[str] = "total"

    account_id: UUID
    product_id: UUID
    quantity: int
    total: Money
    status: str


ResourceT = TypeVar("ResourceT", bound=_V2Resource)


def _page(
    request: Request, svc: Svc, collection: str, shape: type[ResourceT], rows: list[Any], limit: int
) -> Response:
    return page_response(request, svc.cursors, collection, [shape.of(r) for r in rows], limit)


# Products ------------------------------------------------------------------------------------


@router.post(
    "/products", status_code=201, response_model=ProductV2, responses=ERRORS, tags=["products"]
)
async def create_product(
    data: ProductCreateV2, request: Request, principal: CurrentPrincipal, svc: Svc
) -> Response:
    async with svc.database.transaction(principal.tenant_id) as conn:
        product = await products.create(
            conn, principal.tenant_id, data.to_domain(), actor=actor(principal)
        )
    location = f"{request.url.path}/{product.id}"
    return resource_response(ProductV2.of(product), 201, Location=location)


@router.get("/products", response_model=Page[ProductV2], responses=ERRORS, tags=["products"])
async def list_products(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Response:
    after = svc.cursors.decode("products", cursor) if cursor is not None else None
    rows = await products.page(svc.database, principal.tenant_id, after=after, limit=limit + 1)
    return _page(request, svc, "products", ProductV2, rows, limit)


@router.get("/products/{product_id}", response_model=ProductV2, responses=ERRORS, tags=["products"])
async def get_product(product_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    product = await products.get(svc.database, principal.tenant_id, product_id)
    return resource_response(ProductV2.of(product))


@router.patch(
    "/products/{product_id}", response_model=ProductV2, responses=ERRORS, tags=["products"]
)
async def update_product(
    product_id: UUID,
    data: ProductChangesV2,
    principal: CurrentPrincipal,
    svc: Svc,
    if_match: IfMatch = None,
) -> Response:
    version = required_version(if_match)
    async with svc.database.transaction(principal.tenant_id) as conn:
        product = await products.update(
            conn, product_id, data.to_domain(), expected_version=version, actor=actor(principal)
        )
    return resource_response(ProductV2.of(product))


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
    "/accounts", status_code=201, response_model=AccountV2, responses=ERRORS, tags=["accounts"]
)
async def create_account(
    data: AccountCreateV2, request: Request, principal: CurrentPrincipal, svc: Svc
) -> Response:
    async with svc.database.transaction(principal.tenant_id) as conn:
        account = await accounts.create(
            conn, principal.tenant_id, data.to_domain(), actor=actor(principal)
        )
    location = f"{request.url.path}/{account.id}"
    return resource_response(AccountV2.of(account), 201, Location=location)


@router.get("/accounts", response_model=Page[AccountV2], responses=ERRORS, tags=["accounts"])
async def list_accounts(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Response:
    after = svc.cursors.decode("accounts", cursor) if cursor is not None else None
    rows = await accounts.page(svc.database, principal.tenant_id, after=after, limit=limit + 1)
    return _page(request, svc, "accounts", AccountV2, rows, limit)


@router.get("/accounts/{account_id}", response_model=AccountV2, responses=ERRORS, tags=["accounts"])
async def get_account(account_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    account = await accounts.get(svc.database, principal.tenant_id, account_id)
    return resource_response(AccountV2.of(account))


@router.patch(
    "/accounts/{account_id}", response_model=AccountV2, responses=ERRORS, tags=["accounts"]
)
async def update_account(
    account_id: UUID,
    # Only the name changes, exactly as in v1: the body has no money in it.
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
    return resource_response(AccountV2.of(account))


@router.delete("/accounts/{account_id}", status_code=204, responses=ERRORS, tags=["accounts"])
async def delete_account(
    account_id: UUID, principal: CurrentPrincipal, svc: Svc, if_match: IfMatch = None
) -> Response:
    version = optional_version(if_match)
    async with svc.database.transaction(principal.tenant_id) as conn:
        await accounts.delete(conn, account_id, expected_version=version, actor=actor(principal))
    return Response(status_code=204)


# Orders --------------------------------------------------------------------------------------


@router.get("/orders", response_model=Page[OrderV2], responses=ERRORS, tags=["orders"])
async def list_orders(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> Response:
    after = svc.cursors.decode("orders", cursor) if cursor is not None else None
    rows = await orders.page(svc.database, principal.tenant_id, after=after, limit=limit + 1)
    return _page(request, svc, "orders", OrderV2, rows, limit)


@router.get("/orders/{order_id}", response_model=OrderV2, responses=ERRORS, tags=["orders"])
async def get_order(order_id: UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    order = await orders.get(svc.database, principal.tenant_id, order_id)
    return resource_response(OrderV2.of(order))
