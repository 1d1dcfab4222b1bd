"""Names and labels shared by every child."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from adbm_operator import model
from adbm_operator.specs import labels
from tests.operator.specs.support import variant

DNS_LABEL = re.compile(model.DNS_LABEL)


def test_short_names_are_kept_whole(minimal: model.BackendService) -> None:
    assert labels.child_name(minimal, "worker", "orders") == "shop-worker-orders"


@given(
    st.from_regex(r"\A[a-z][a-z0-9-]{0,61}[a-z0-9]\Z"),
    st.from_regex(r"\A[a-z][a-z0-9-]{0,28}[a-z0-9]\Z"),
)
def test_long_names_are_shortened_to_valid_unique_labels(name: str, group: str) -> None:
    obj = variant("minimal", metadata__name=name)
    got = labels.child_name(obj, "worker", group)
    assert len(got) <= 63
    assert DNS_LABEL.match(got), got
    assert got == labels.child_name(obj, "worker", group), "names must be stable"
    if len(f"{name}-worker-{group}") > 63:
        assert got != labels.child_name(obj, "worker", group + "x")


def test_selector_is_a_subset_of_the_labels(full: model.BackendService) -> None:
    selector = labels.selector_labels(full, "worker", "orders")
    everything = labels.labels(full, "worker", "orders")
    assert selector.items() <= everything.items()
    assert everything["app.kubernetes.io/managed-by"] == "adbm-operator"
    assert everything["app.kubernetes.io/instance"] == "payments"
    assert everything[labels.WORKER_GROUP_LABEL] == "orders"


def test_app_role_defaults_from_the_name_and_respects_the_spec(
    minimal: model.BackendService, full: model.BackendService
) -> None:
    assert labels.app_role(minimal) == "shop_app"
    assert labels.app_role(variant("minimal", metadata__name="my-shop")) == "my_shop_app"
    assert labels.app_role(full) == "payments_app"
