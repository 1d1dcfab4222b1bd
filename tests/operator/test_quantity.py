"""Kubernetes quantities: the model's pattern validates them, `quantity_value` gives their value,
the same as the Kubernetes client's `parse_quantity` (the operator does not import the client).

`kubernetes.utils.parse_quantity` is a value parser, not a validator (it takes `1 Gi`, `+1`,
`NaN`), so the pattern is what stands between a user's typo and the API server.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from adbm_operator import model
from adbm_operator.model.validation import quantity_value


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
        ("3u", Decimal("3e-6")),
        ("2Ki", Decimal(2048)),
        ("1.5Ti", Decimal("1.5") * 2**40),
        ("1Pi", Decimal(2**50)),
        ("1Ei", Decimal(2**60)),
        ("7T", Decimal(7 * 10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),
        ("2M", Decimal(2 * 10**6)),
        ("1.", Decimal(1)),
        ("0", Decimal(0)),
        ("12e+2", Decimal(1200)),
    ],
)
def test_parse(text: str, value: Decimal) -> None:
    assert model.ResourceList(cpu=text).cpu == text
    assert parse_quantity(text) == value
    assert quantity_value(text) == value


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
