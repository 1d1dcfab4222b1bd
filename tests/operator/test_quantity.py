"""Kubernetes quantities as exact values."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adbm_operator import quantity


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
    assert quantity.parse(text) == value


@pytest.mark.parametrize("text", ["-1", "+1", "1 Gi", "Gi", "", "1Gb", "1.2.3"])
def test_rejects_what_kubernetes_would_not_take_as_a_resource(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity.parse(text)


def test_binary_and_decimal_suffixes_compare_by_value() -> None:
    assert quantity.parse("1Gi") > quantity.parse("1G")
    assert quantity.parse("1000m") == quantity.parse("1")
