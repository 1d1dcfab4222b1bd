"""Request models refuse what the database would refuse (or silently accept) as 400s."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from reference_service.domain.accounts import AccountChanges, AccountCreate
from reference_service.domain.common import INT64_MAX
from reference_service.domain.products import ProductChanges, ProductCreate

GOOD_PRODUCT: dict[str, Any] = {
    "sku": "TSHIRT-M.blue_1",
    "name": "T-shirt",
    "price_minor": 1999,
    "currency": "EUR",
}


def test_a_good_product_passes() -> None:
    assert ProductCreate.model_validate(GOOD_PRODUCT).price_minor == 1999


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "blue"}, "colour"),  # unknown field: a typo must not be ignored
        ({"price_minor": "1999"}, "price_minor"),  # no coercion from strings
        ({"price_minor": 19.99}, "price_minor"),  # money is never a float
        ({"price_minor": True}, "price_minor"),
        ({"price_minor": -1}, "price_minor"),
        ({"price_minor": INT64_MAX + 1}, "price_minor"),  # would overflow bigint
        ({"currency": "eur"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": "XXY"}, "currency"),  # three letters, but no ISO 4217 currency
        ({"currency": "ABC"}, "currency"),
        ({"sku": "has space"}, "sku"),
        ({"sku": "x" * 65}, "sku"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": None}, "name"),
        ({"name": "nul\x00byte"}, "name"),  # Postgres text cannot store it
        ({"name": "two\nlines"}, "name"),
    ],
)
def test_bad_products_are_refused(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ProductCreate.model_validate({**GOOD_PRODUCT, **change})
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_bounds_are_inclusive() -> None:
    product = ProductCreate.model_validate(
        {**GOOD_PRODUCT, "price_minor": INT64_MAX, "name": "x" * 200, "sku": "x" * 64}
    )
    assert product.price_minor == INT64_MAX
    assert ProductCreate.model_validate({**GOOD_PRODUCT, "price_minor": 0}).price_minor == 0


def test_account_balance_defaults_to_zero() -> None:
    account = AccountCreate.model_validate({"name": "Alice", "currency": "EUR"})
    assert account.balance_minor == 0


@pytest.mark.parametrize("model", [ProductChanges, AccountChanges])
def test_changes_need_a_field_and_refuse_null(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError, match="at least one field"):
        model.model_validate({})
    with pytest.raises(ValidationError, match="must not be null") as caught:
        model.model_validate({"name": None})
    assert caught.value.errors()[0]["loc"] == ("name",)


def test_changes_hold_only_what_was_sent() -> None:
    assert ProductChanges.model_validate({"price_minor": 5}).changes() == {"price_minor": 5}


def test_sku_and_account_currency_cannot_be_changed() -> None:
    with pytest.raises(ValidationError):
        ProductChanges.model_validate({"sku": "OTHER"})
    with pytest.raises(ValidationError):
        AccountChanges.model_validate({"currency": "USD"})
    with pytest.raises(ValidationError):
        AccountChanges.model_validate({"balance_minor": 10})
