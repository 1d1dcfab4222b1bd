"""How an API version represents resources: the adapter between its bodies and the domain.

`Representation` is the domain's own shape, which is what v1 serves. A version that shapes its
bodies differently subclasses it and overrides the models and the two conversions; the endpoint
factory builds every route of a version from its representation and the resource declarations,
so versions differ only in shape, never in behaviour.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter

from reference_service.domain.common import Changes, Input, Resource, ResourceSpec

Show = Callable[[Resource], dict[str, Any]]
ShowAll = Callable[[Sequence[Resource]], list[dict[str, Any]]]
ToDomain = Callable[[Any], Any]


def as_json(model: Resource) -> dict[str, Any]:
    return model.model_dump(mode="json")


@functools.cache
def _list_of(model: type[Resource]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def all_as_json(model: type[Resource]) -> ShowAll:
    """`as_json` of every item of a page, in one serialiser call (about half the CPU of one
    call per item, for the same dicts)."""
    adapter = _list_of(model)

    def show_all(items: Sequence[Resource]) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = adapter.dump_python(list(items), mode="json")
        return shown

    return show_all


def unchanged(body: Any) -> Any:
    return body


class Representation:
    """The domain's shape: request and response bodies are the domain models themselves."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def prefix(self) -> str:
        return f"/api/{self.name}"

    def response_model(self, spec: ResourceSpec[Any]) -> type[BaseModel]:
        """The response body's schema (for the OpenAPI document only: bodies are built by
        `show`, never validated a second time)."""
        return spec.model

    def create_model(self, spec: ResourceSpec[Any]) -> type[Input]:
        assert spec.create is not None
        return spec.create

    def changes_model(self, spec: ResourceSpec[Any]) -> type[Changes]:
        assert spec.changes is not None
        return spec.changes

    def show(self, spec: ResourceSpec[Any]) -> Show:
        """The response body of one resource, ready for JSON."""
        return as_json

    def show_all(self, spec: ResourceSpec[Any]) -> ShowAll:
        """`show` of every item of a page, at once."""
        return all_as_json(spec.model)

    def create_in(self, spec: ResourceSpec[Any]) -> ToDomain:
        """The domain create model from a body of `create_model`."""
        return unchanged

    def changes_in(self, spec: ResourceSpec[Any]) -> ToDomain:
        """The domain changes model from a body of `changes_model`."""
        return unchanged


V1: Final = Representation("v1")
