"""The base of every API object, and the form of a cross-field rule."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, ClassVar, Self, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the API server, the same predicate in Python for offline use.

    The CEL must hold its ground on an object that lacks any optional field: the API server
    evaluates rules on defaults as written (their nested defaults not applied), and selecting an
    absent field is an error there, not false. `or_default` writes the guarded selection.
    """

    cel: str
    message: str
    holds: Callable[[Any], bool]
    explain: Callable[[Any], str] | None = None
    """The message offline, with the object's numbers in it; the CRD carries `message`."""

    def message_for(self, obj: Any) -> str:
        return self.message if self.explain is None else self.explain(obj)


def or_default(owner: str, field: str, default: int | str) -> str:
    """CEL for `owner.field`, or the field's default when it is absent."""
    return f"(has({owner}.{field}) ? {owner}.{field} : {json.dumps(default)})"


def check_rules(obj: BaseModel, rules: tuple[Rule, ...]) -> None:
    """Raise one error per broken rule, each at the object's location: a user sees them all."""
    broken = [_rule_error(rule.message_for(obj), obj) for rule in rules if not rule.holds(obj)]
    if broken:
        raise ValidationError.from_exception_data(type(obj).__name__, broken)


class _Invalid:
    """Stands in for a field that failed validation while the object's rules are checked: any
    use of it raises TypeError, so only the rules that do not read it give a verdict."""

    def _unreadable(self, *_: Any) -> Any:
        raise TypeError("field failed validation")

    __getattr__ = __bool__ = __iter__ = __len__ = __eq__ = __lt__ = __le__ = _unreadable
    __gt__ = __ge__ = __add__ = __radd__ = __mul__ = __rmul__ = _unreadable
    __hash__ = object.__hash__


def _adapter(field: FieldInfo) -> TypeAdapter[Any]:
    if not field.metadata:
        return TypeAdapter(field.annotation)  # type: ignore[arg-type]
    return TypeAdapter(Annotated[field.annotation, *field.metadata])  # type: ignore[arg-type]


def _lenient(annotation: Any, value: Any) -> Any:
    """A value that failed validation, rebuilt with every part that fails on its own replaced
    by `_Invalid`: a list keeps its valid items, an object its valid fields."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        if value is None:
            return None
        [annotation] = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    if get_origin(annotation) is list and isinstance(value, list):
        [item] = get_args(annotation)
        adapter: TypeAdapter[Any] = TypeAdapter(item)
        return [_validated_or_lenient(adapter, item, v) for v in value]
    if (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and isinstance(value, dict)
    ):
        return _partial(annotation, value)
    return _Invalid()


def _validated_or_lenient(adapter: TypeAdapter[Any], annotation: Any, value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return _lenient(annotation, value)


def _partial(cls: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    values: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        key = field.alias if field.alias in data else name
        if key in data:
            values[name] = _validated_or_lenient(_adapter(field), field.annotation, data[key])
    return cls.model_construct(**values)


def _broken_beside_invalid_fields(cls: type[ApiModel], data: dict[str, Any]) -> list[Any]:
    """The rules an object breaks, judged on the parts that validate on their own: with a field
    error, a user still learns every other problem in one pass, as from the API server. A rule
    that reads an invalid part raises TypeError on it and gives no verdict."""
    partial = _partial(cls, data)
    broken = []
    for rule in cls.rules:
        try:
            holds = rule.holds(partial)
        except TypeError:
            continue
        if not holds:
            broken.append(_rule_error(rule.message_for(partial), partial))
    return broken


def _rule_error(message: str, obj: object) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("rule", "{message}", {"message": message}), loc=(), input=obj
    )


def _details(exc: ValidationError) -> list[InitErrorDetails]:
    details = []
    for error in exc.errors():
        if error["type"] == "rule":
            rule = _rule_error(error["msg"], error["input"])
            rule["loc"] = error["loc"]
            details.append(rule)
            continue
        detail = InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"])
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        details.append(detail)
    return details


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _check_rules(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if not cls.rules:
            return handler(data)
        try:
            obj = handler(data)
        except ValidationError as exc:
            if not isinstance(data, dict):
                raise
            broken = _broken_beside_invalid_fields(cls, data)
            if not broken:
                raise
            raise ValidationError.from_exception_data(
                cls.__name__, [*_details(exc), *broken]
            ) from None
        check_rules(obj, cls.rules)
        return obj

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": r.message} for r in cls.rules
            ]
        return schema
