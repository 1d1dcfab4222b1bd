"""How an API version represents resources: the adapter between its bodies and the domain.

`Representation` is the domain's own shape, which is what v1 serves. A version that shapes its
bodies differently subclasses it and overrides the models and the two conversions; the endpoint
factory builds every route of a version from its representation and the resource declarations,
so versions differ only in shape, never in behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from pydantic import BaseModel

from reference_service.domain.common import Changes, Input, Resource, ResourceSpec

Show = Callable[[Resource], dict[str, Any]]
ToDomain = Callable[[Any], Any]


def as_json(model: Resource) -> dict[str, Any]:
    return model.model_dump(mode="json")


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

    def create_in(self, spec: ResourceSpec[Any]) -> ToDomain:
        """The domain create model from a body of `create_model`."""
        return unchanged

    def changes_in(self, spec: ResourceSpec[Any]) -> ToDomain:
        """The domain changes model from a body of `changes_model`."""
        return unchanged


V1: Final = Representation("v1")
