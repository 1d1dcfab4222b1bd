"""The condition set: a happy condition derived from its dependents as Knative's
LivingConditionSet derives it, but by declared order."""

from __future__ import annotations

import pytest

from adbm_operator.conditions import ConditionSet, Verdict
from adbm_operator.model import ConditionStatus

T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
SET = ConditionSet("Ready", ("A", "B", "C"))


def v(kind: str, status: ConditionStatus, reason: str = "Why") -> Verdict:
    return Verdict(kind, status, reason, f"{kind} says {reason}")


def test_true_only_when_every_dependent_is_true() -> None:
    happy = SET.happy_verdict([v("A", T), v("B", T), v("C", T)], "all good")
    assert (happy.type, happy.status, happy.message) == ("Ready", T, "all good")


def test_false_trumps_unknown_and_the_first_false_is_carried() -> None:
    happy = SET.happy_verdict([v("A", U, "Waiting"), v("B", F, "Broken"), v("C", F, "Late")], "")
    assert (happy.status, happy.reason, happy.message) == (F, "Broken", "B says Broken")


def test_unknown_when_nothing_is_false() -> None:
    happy = SET.happy_verdict([v("A", T), v("B", U, "Waiting"), v("C", T)], "")
    assert (happy.status, happy.reason) == (U, "Waiting")


def test_a_dependent_never_observed_is_unknown() -> None:
    happy = SET.happy_verdict([v("A", T), v("C", T)], "")
    assert (happy.status, happy.reason) == (U, "NotObserved")
    assert "B" in happy.message


def test_conditions_outside_the_set_do_not_count() -> None:
    happy = SET.happy_verdict([v("A", T), v("B", T), v("C", T), v("Info", F)], "ok")
    assert happy.status == T


def test_a_dependent_can_be_added_later() -> None:
    # How database provisioning joins: one more dependent, nothing else changes.
    with_db = SET.with_dependents("DatabaseReady")
    assert with_db.dependents == ("A", "B", "C", "DatabaseReady")
    assert with_db.happy_verdict([v("A", T), v("B", T), v("C", T)], "").status == U
    happy = with_db.happy_verdict(
        [v("A", T), v("B", T), v("C", T), v("DatabaseReady", F, "RoleMissing")], ""
    )
    assert (happy.status, happy.reason) == (F, "RoleMissing")


@pytest.mark.parametrize("dependents", [("Ready",), ("A", "A")])
def test_a_set_must_be_well_formed(dependents: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        ConditionSet("Ready", dependents)
