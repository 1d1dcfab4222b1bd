"""A whole BackendService object: metadata, spec and status."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import validation
from .api import DNS_1123_LABEL
from .base import Rule, check_rules
from .spec import BackendServiceSpec
from .status import BackendServiceStatus


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads; the rest is kept but not interpreted."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=253)]
    namespace: Annotated[str, Field(pattern=DNS_1123_LABEL, max_length=63)] = "default"
    generation: int = 0
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class BackendService(BaseModel):
    """A whole BackendService object."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["adbm.io/v1alpha1"] = Field("adbm.io/v1alpha1", alias="apiVersion")
    kind: Literal["BackendService"] = "BackendService"
    metadata: ObjectMeta
    spec: BackendServiceSpec
    status: BackendServiceStatus | None = None

    root_rules: ClassVar[tuple[Rule, ...]] = validation.BACKEND_SERVICE

    @model_validator(mode="after")
    def _check_root_rules(self) -> Self:
        check_rules(self, self.root_rules)
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


def parse(body: dict[str, Any]) -> BackendService:
    """Validate a BackendService body (from the API server or a file)."""
    return BackendService.model_validate(body)
