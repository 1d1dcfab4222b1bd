"""An upper bound of the CEL cost kube-apiserver estimates for a CRD rule, before it accepts it.

The API server type-checks each rule against the schema and runs cel-go's static cost
estimator (`cel-go/checker/cost.go`, with Kubernetes' library costs in
`k8s.io/apiserver/pkg/cel/library/cost.go` and sizes from `apiextensions-apiserver/pkg/apiserver/
schema/cel/compilation.go`). A rule's estimate, times the most times its node can occur (the
product of `maxItems`/`maxProperties` above it), must stay within 10^7; the sum over the CRD
within 10^8 (`StaticEstimatedCostLimit`, `StaticEstimatedCRDCostLimit`).

This walks celpy's parse tree with the same cost model, rounding up wherever it is simpler to:
- a field or variable read costs 1, a literal 0, `has()` 1 plus its operand, a plain call 1 plus
  its arguments; `&&` and `||` the sum of both sides, `?:` the condition plus the dearer branch;
- comparisons cost a tenth of the *larger* operand's size (cel-go takes the smaller), at least 1;
- `matches` costs ceil(0.1 x (size + 1)) x ceil(0.25 x regex length), as cel-go;
- a macro over a range of n elements costs n x (body + 5) for `all`/`exists`/`exists_one` and
  n x (body + 13) for `map` (cel-go's expansions cost 3, 4, 2 and 12 per element), plus the range;
- sizes as the API server declares them: a string with maxLength is 4 x maxLength bytes, without
  one the whole request (3 MiB); `date-time` 32; map keys 0 (their declared type has no size);
  a list or map without maxItems/maxProperties makes the estimate unbounded.
So the result is never below what the API server computes for these rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import celpy
import lark

Schema = dict[str, Any]

PER_RULE_LIMIT = 10_000_000
PER_CRD_LIMIT = 100_000_000
MAX_REQUEST_BYTES = 3 * 1024 * 1024
MAX_DATETIME_SIZE = 32
UNBOUNDED = 2**62

_ENV = celpy.Environment()
_MAP_KEY: Schema = {"type": "string", "x-size": 0}


@dataclass(frozen=True)
class Est:
    cost: int
    size: int = 1
    schema: Schema | None = None


def size_of(schema: Schema | None) -> int:
    if schema is None:
        return MAX_REQUEST_BYTES
    if "x-size" in schema:
        return int(schema["x-size"])
    kind = schema.get("type")
    if kind == "string":
        if "maxLength" in schema:
            return 4 * int(schema["maxLength"])
        if "enum" in schema:
            return max(len(str(v)) for v in schema["enum"])
        if schema.get("format") == "date-time":
            return MAX_DATETIME_SIZE
        return MAX_REQUEST_BYTES - 2
    if kind == "array":
        return int(schema.get("maxItems", UNBOUNDED))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return int(schema.get("maxProperties", UNBOUNDED))
    return 1


def _tenth(size: int) -> int:
    return max(1, math.ceil(size * 0.1))


class _Estimator:
    def __init__(self, variables: dict[str, Schema]) -> None:
        self.variables = variables

    def est(self, tree: Any) -> Est:
        if isinstance(tree, lark.Token):
            raise ValueError(f"unexpected token {tree!r}")
        handler = getattr(self, f"_{tree.data}", None)
        if handler is not None:
            return cast(Est, handler(tree))
        if len(tree.children) == 1:
            return self.est(tree.children[0])
        raise ValueError(f"no cost rule for {tree.data}")

    # Binary operators: `conditionalor` and friends with two children are `lhs op rhs`.
    def _conditionalor(self, tree: lark.Tree) -> Est:
        if len(tree.children) == 1:
            return self.est(tree.children[0])
        lhs, rhs = (self.est(c) for c in tree.children)
        return Est(lhs.cost + rhs.cost)

    _conditionaland = _conditionalor

    def _expr(self, tree: lark.Tree) -> Est:
        if len(tree.children) == 1:
            return self.est(tree.children[0])
        cond, yes, no = (self.est(c) for c in tree.children)
        return Est(cond.cost + max(yes.cost, no.cost), max(yes.size, no.size))

    # `relation`, `addition` and `multiplication` with two children are [op(lhs), rhs], and
    # `unary` with two is [op(), operand].
    def _relation(self, tree: lark.Tree) -> Est:
        if len(tree.children) == 1:
            return self.est(tree.children[0])
        op_tree, rhs_tree = tree.children
        lhs, rhs = self.est(op_tree.children[0]), self.est(rhs_tree)
        if op_tree.data == "relation_in":
            return Est(rhs.size + lhs.cost + rhs.cost)
        if op_tree.data.startswith("relation_"):
            return Est(_tenth(max(lhs.size, rhs.size)) + lhs.cost + rhs.cost)
        # Arithmetic: O(1) on numbers; on strings and lists, a tenth of the result's size.
        size = lhs.size + rhs.size
        return Est(_tenth(size) + lhs.cost + rhs.cost, size)

    _addition = _multiplication = _relation

    def _unary(self, tree: lark.Tree) -> Est:
        if len(tree.children) == 1:
            return self.est(tree.children[0])
        return Est(1 + self.est(tree.children[-1]).cost)

    def _paren_expr(self, tree: lark.Tree) -> Est:
        return self.est(tree.children[0])

    def _literal(self, tree: lark.Tree) -> Est:
        token = cast(lark.Token, tree.children[0])
        text = token.value
        if text[:1] in "\"'":
            return Est(0, len(text.encode()) - 2)
        return Est(0)

    def _ident(self, tree: lark.Tree) -> Est:
        name = cast(lark.Token, tree.children[0]).value
        schema = self.variables.get(name)
        return Est(1, size_of(schema), schema)

    def _list_lit(self, tree: lark.Tree) -> Est:
        items = [self.est(c) for c in tree.children[0].children] if tree.children else []
        return Est(10 + sum(i.cost for i in items), len(items))

    def _member_dot(self, tree: lark.Tree) -> Est:
        operand_tree, field = tree.children
        operand = self.est(operand_tree)
        props = (operand.schema or {}).get("properties", {})
        schema = props.get(cast(lark.Token, field).value)
        return Est(operand.cost + 1, size_of(schema), schema)

    def _ident_arg(self, tree: lark.Tree) -> Est:
        name = cast(lark.Token, tree.children[0]).value
        args = tree.children[1].children if len(tree.children) > 1 else []
        if name == "has":
            [argument] = args
            member = argument
            while member.data != "member_dot":
                [member] = member.children
            return Est(1 + self.est(member.children[0]).cost)
        costs = [self.est(a) for a in args]
        total = 1 + sum(c.cost for c in costs)
        if name == "quantity":
            total += _tenth(costs[0].size)
        return Est(total, MAX_DATETIME_SIZE if name == "timestamp" else 1)

    def _member_dot_arg(self, tree: lark.Tree) -> Est:
        target_tree, method_token, *rest = tree.children
        method = cast(lark.Token, method_token).value
        args = rest[0].children if rest else []
        target = self.est(target_tree)
        if method in ("all", "exists", "exists_one", "map"):
            variable = _variable_name(args[0])
            element = _element_schema(target.schema)
            body = _Estimator({**self.variables, variable: element}).est(args[1])
            per_element = body.cost + (13 if method == "map" else 5)
            n = target.size
            return Est(target.cost + n * per_element + 11, n if method == "map" else 1)
        costs = [self.est(a) for a in args]
        argument_cost = sum(c.cost for c in costs)
        if method == "matches":
            regex = costs[0].size
            cost = math.ceil((target.size + 1) * 0.1) * math.ceil(regex * 0.25)
            return Est(cost + target.cost + argument_cost)
        if method == "sum":
            return Est(target.size + target.cost)
        return Est(1 + target.cost + argument_cost)


def _variable_name(tree: Any) -> str:
    while isinstance(tree, lark.Tree):
        if tree.data == "ident":
            return cast(lark.Token, tree.children[0]).value
        [tree] = tree.children
    raise ValueError("a macro's first argument must be a variable")


def _element_schema(schema: Schema | None) -> Schema | None:
    if schema is None:
        return None
    if schema.get("type") == "array":
        return cast(Schema, schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        return _MAP_KEY
    return None


def rule_cost(rule: str, node: Schema) -> int:
    """An upper bound of the API server's estimated cost of one evaluation of the rule."""
    return _Estimator({"self": node}).est(_ENV.compile(rule)).cost


def cardinality(root: Schema, path: str) -> int:
    """The most times the node at `path` (`a.b[].c{}`) can occur in one object."""
    node, times = root, 1
    for step in path.replace("[]", ".[]").replace("{}", ".{}").split("."):
        if not step:
            continue
        if step == "[]":
            times *= int(node.get("maxItems", UNBOUNDED))
            node = node["items"]
        elif step == "{}":
            times *= int(node.get("maxProperties", UNBOUNDED))
            node = node["additionalProperties"]
        else:
            node = node["properties"][step]
    return times


def as_cel_sees(node: Schema, is_root: bool) -> Schema:
    """The schema a rule is type-checked against: at the resource root, `metadata` offers only
    `name` and `generateName`, as plain strings (`apiserver/pkg/cel/common/schemas.go`)."""
    if not is_root:
        return node
    metadata = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
    }
    return {**node, "properties": {**node.get("properties", {}), "metadata": metadata}}
