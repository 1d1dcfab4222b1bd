"""Kubernetes quantities: the model's pattern validates them, `parse_quantity` gives their value.

`kubernetes.utils.parse_quantity` is a value parser, not a validator (it takes `1 Gi`, `+1`,
`NaN`), so the pattern is what stands between a user's typo and the API server.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from adbm_operator import model


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Decimal("0.25")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("5E-1", Decimal("0.5")),
        ("100n", Decimal("1e-7")),
    ],
)
def test_parse(text: str, value: Decimal) -> None:
    assert model.ResourceList(cpu=text).cpu == text
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["-1", "+1", "1 Gi", "Gi", "", "1Gb", "1.2.3", "NaN", "Infinity"])
def test_rejects_what_kubernetes_would_not_take_as_a_resource(text: str) -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        model.ResourceList(cpu=text)


def test_binary_and_decimal_suffixes_compare_by_value() -> None:
    assert parse_quantity("1Gi") > parse_quantity("1G")
    assert parse_quantity("1000m") == parse_quantity("1")
    with pytest.raises(ValidationError, match=r"requests\.memory must not exceed limits\.memory"):
        model.Resources(
            requests=model.ResourceList(memory="1Gi"), limits=model.ResourceList(memory="1G")
        )
