"""CEL as the Kubernetes API server evaluates `x-kubernetes-validations`, on top of celpy.

Two differences from plain celpy matter to a CRD, and both are encoded here:
- Kubernetes' CEL libraries: `list.sum()` and `quantity()` with `isGreaterThan()`.
- `has(e.f)` evaluates `e` first, so it is an error when `e` itself is an absent field (cel-go's
  `has` macro is a test-only field selection on an operand that is evaluated normally). celpy
  turns any error inside `has()` into false, which would hide a rule the API server rejects.

A selection of an absent key is an error in both (`no such key`); `cel_result` returns it as a
`celpy.CELEvalError` value, and `cel_holds` fails the test on it, as the API server fails the
object (or the CRD, for a default).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from typing import Any, cast

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError, Evaluator
from kubernetes.utils import parse_quantity


def cel_sum(values: celtypes.ListType) -> Any:
    """`list.sum()` of Kubernetes' CEL list library, which standard CEL (and celpy) lacks.

    celpy dispatches the member call `xs.sum()` as `sum(xs)`.
    """
    start: Any = (
        celtypes.DoubleType(0)
        if any(isinstance(v, celtypes.DoubleType) for v in values)
        else celtypes.IntType(0)
    )
    return functools.reduce(operator.add, values, start)


def cel_quantity(text: celtypes.StringType) -> celtypes.DoubleType:
    """`quantity(string)` of Kubernetes' CEL quantity library, as a number celpy can compare."""
    return celtypes.DoubleType(float(parse_quantity(str(text))))


def cel_is_greater_than(a: celtypes.DoubleType, b: celtypes.DoubleType) -> celtypes.BoolType:
    """`Quantity.isGreaterThan(Quantity)`; celpy dispatches `a.f(b)` as `f(a, b)`."""
    return celtypes.BoolType(a > b)


KUBERNETES_FUNCTIONS = {
    "sum": cel_sum,
    "quantity": cel_quantity,
    "isGreaterThan": cel_is_greater_than,
}


def _only_child(tree: lark.Tree) -> lark.Tree:
    while tree.data != "member_dot":
        [child] = tree.children
        tree = cast(lark.Tree, child)
    return tree


class StrictHasEvaluator(Evaluator):
    """celpy's evaluator with cel-go's `has()`: the operand is evaluated, and its errors kept."""

    def macro_has_eval(self, exprlist: lark.Tree) -> Any:
        [argument] = exprlist.children
        member_tree, field = _only_child(cast(lark.Tree, argument)).children
        operand = self.visit(cast(lark.Tree, member_tree))
        if isinstance(operand, CELEvalError):
            return operand
        if isinstance(operand, celtypes.MapType):
            return celtypes.BoolType(celtypes.StringType(cast(lark.Token, field).value) in operand)
        return CELEvalError(f"has() on a {type(operand).__name__}", TypeError, None)


class StrictRunner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> celtypes.Value:
        return cast(
            celtypes.Value,
            StrictHasEvaluator(ast=self.ast, activation=self.new_activation()).evaluate(context),
        )


ENV = celpy.Environment(runner_class=StrictRunner)


@functools.cache
def program(expr: str) -> celpy.Runner:
    return ENV.program(ENV.compile(expr), functions=KUBERNETES_FUNCTIONS)


def cel_result(expr: str, self_value: Any) -> Any:
    """The rule's value on `self`: a CEL bool, or the CELEvalError the API server would report."""
    if not isinstance(self_value, celtypes.MapType | celtypes.ListType):
        self_value = json_to_cel(self_value)
    try:
        return program(expr).evaluate({"self": self_value})
    except CELEvalError as error:
        return error


def cel_holds(expr: str, self_value: Any) -> bool:
    result = cel_result(expr, self_value)
    # An evaluation error fails the rule on the API server: the object (or default) is rejected.
    assert isinstance(result, celtypes.BoolType), f"{expr!r} evaluated to {result!r}"
    return bool(result)


Schema = dict[str, Any]


def to_cel(value: Any, schema: Schema) -> Any:
    """JSON as the API server types it for CEL: `date-time` strings are timestamps there."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return celtypes.MapType(
            {
                celtypes.StringType(k): to_cel(
                    v, props.get(k, extra if isinstance(extra, dict) else {})
                )
                for k, v in value.items()
            }
        )
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items", {})) for v in value])
    if isinstance(value, str) and schema.get("format") == "date-time":
        return celtypes.TimestampType(value)
    return json_to_cel(value)


def rule_outcomes(schema: Schema, value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, message, result) of every rule the API server evaluates on this value: the rules
    of the node, then of every node below it that has a value (absent fields are not visited)."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["message"], cel_result(rule["rule"], to_cel(value, schema))
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from rule_outcomes(sub, value[name], f"{path}.{name}" if path else name)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                yield from rule_outcomes(extra, item, f"{path}[{key}]")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from rule_outcomes(schema["items"], item, f"{path}[{i}]")
