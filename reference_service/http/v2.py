"""Version 2 of the API: the resources of v1, with money as one `{"amount", "currency"}` object.

v1 spreads an amount over `<money>_minor` and `currency`; v2 nests both under `<money>` (`price`,
`balance`, `total`: the `money` of each resource's declaration), so an amount never travels
without its currency. The v2 models are derived from the domain models by that one rule, so a
new resource with money needs nothing here. A body with no money field is the domain's own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from reference_service.domain.common import (
    Changes,
    Currency,
    Input,
    MinorUnits,
    Resource,
    ResourceSpec,
)
from reference_service.http.representation import (
    Representation,
    Show,
    ShowAll,
    ToDomain,
    all_as_json,
    unchanged,
)

CURRENCY: Final = "currency"

# Models are suffixed `V2`: their names are the schema names of the one OpenAPI document both
# versions share, and the v1 models already hold the plain names.
SUFFIX: Final = "V2"


class MoneyInput(Input):
    """Money in a request: strict like every request body (no floats, no strings for numbers)."""

    amount: MinorUnits
    currency: Currency


class Money(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Annotated[int, Field(description="Integer minor units of `currency` (cents for EUR).")]
    currency: Annotated[str, Field(description="ISO 4217 code, e.g. EUR.")]


def _minor(money: str) -> str:
    return f"{money}_minor"


def _folds(model: type[BaseModel], money: str | None) -> bool:
    return money is not None and {_minor(money), CURRENCY} <= set(model.model_fields)


def _folded_fields(
    model: type[BaseModel], money: str, money_type: Any, *, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """`model`'s fields, in order, with `<money>_minor` and `currency` as one `money` field."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in skip or name == CURRENCY:
            continue
        if name == _minor(money):
            fields[money] = money_type
        else:
            fields[name] = (info.annotation, info)
    return fields


@functools.cache
def _request_model(model: type[Input], money: str) -> type[Input]:
    required = model.model_fields[CURRENCY].is_required()
    if issubclass(model, Changes):
        # A change of the amount names its currency too; either may be left out as a whole.
        money_type: Any = (MoneyInput | None, FieldInfo(default=None))
        base: type[Input] = Changes
    else:
        money_type = MoneyInput if required else (MoneyInput | None, FieldInfo(default=None))
        base = Input
    folded: type[Input] = create_model(
        model.__name__ + SUFFIX, __base__=base, **_folded_fields(model, money, money_type)
    )
    return folded


@functools.cache
def _response_model(model: type[Resource], money: str) -> type[Resource]:
    shared = frozenset(Resource.model_fields)
    folded: type[Resource] = create_model(
        model.__name__ + SUFFIX,
        __base__=Resource,
        **_folded_fields(model, money, Money, skip=shared),
    )
    return folded


def _nester(money: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    minor = _minor(money)

    def nest(flat: dict[str, Any]) -> dict[str, Any]:
        # Rebuilt in order, so the money object stands where its amount stood.
        return {
            (money if name == minor else name): (
                {"amount": value, "currency": flat[CURRENCY]} if name == minor else value
            )
            for name, value in flat.items()
            if name != CURRENCY
        }

    return nest


def _nest(money: str) -> Show:
    nest = _nester(money)

    def show(model: Resource) -> dict[str, Any]:
        return nest(model.model_dump(mode="json"))

    return show


def _nest_all(model: type[Resource], money: str) -> ShowAll:
    nest = _nester(money)
    flat_all = all_as_json(model)

    def show_all(items: Sequence[Resource]) -> list[dict[str, Any]]:
        return [nest(flat) for flat in flat_all(items)]

    return show_all


def _flatten(money: str, target: type[Input]) -> ToDomain:
    def to_domain(body: BaseModel) -> Any:
        # Only the fields the client sent, so a partial change stays partial.
        sent = {name: getattr(body, name) for name in body.model_fields_set}
        amount = sent.pop(money, None)
        if amount is not None:
            sent[_minor(money)] = amount.amount
            sent[CURRENCY] = amount.currency
        return target.model_validate(sent)

    return to_domain


class MoneyObjects(Representation):
    """v2: each resource's money as one object."""

    def response_model(self, spec: ResourceSpec[Any]) -> type[BaseModel]:
        model: type[Resource] = spec.model
        if spec.money is None or not _folds(model, spec.money):
            return model
        return _response_model(model, spec.money)

    def create_model(self, spec: ResourceSpec[Any]) -> type[Input]:
        return self._request_model(super().create_model(spec), spec.money)

    def changes_model(self, spec: ResourceSpec[Any]) -> type[Changes]:
        model = self._request_model(super().changes_model(spec), spec.money)
        assert issubclass(model, Changes)
        return model

    def show(self, spec: ResourceSpec[Any]) -> Show:
        if spec.money is None or not _folds(spec.model, spec.money):
            return super().show(spec)
        return _nest(spec.money)

    def show_all(self, spec: ResourceSpec[Any]) -> ShowAll:
        if spec.money is None or not _folds(spec.model, spec.money):
            return super().show_all(spec)
        return _nest_all(spec.model, spec.money)

    def create_in(self, spec: ResourceSpec[Any]) -> ToDomain:
        return self._to_domain(super().create_model(spec), spec.money)

    def changes_in(self, spec: ResourceSpec[Any]) -> ToDomain:
        return self._to_domain(super().changes_model(spec), spec.money)

    @staticmethod
    def _request_model(model: type[Input], money: str | None) -> type[Input]:
        return _request_model(model, money) if money and _folds(model, money) else model

    @staticmethod
    def _to_domain(model: type[Input], money: str | None) -> ToDomain:
        return _flatten(money, model) if money and _folds(model, money) else unchanged


V2: Final = MoneyObjects("v2")
