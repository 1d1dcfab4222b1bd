"""A top-level condition derived from its dependents, the way Knative's `LivingConditionSet`
(knative.dev/pkg `apis/condition_set.go`) derives `Ready`.

The happy condition is True only when every dependent is True. Otherwise it carries the status,
reason and message of an unhappy dependent: a False one trumps an Unknown one, and a dependent
that was not observed at all counts as Unknown. One deliberate difference: Knative picks, among
the False (or Unknown) dependents, the one that changed most recently; here it is the first in
the declared order, so the same observation always gives the same Ready, whatever came before.
Conditions outside the set (Knative's Info severity) never affect the happy one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from adbm_operator.model import ConditionStatus


@dataclass(frozen=True)
class Verdict:
    """One condition as decided from an observation, before it gets its timestamps."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class ConditionSet:
    happy: str
    dependents: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.happy in self.dependents or len(set(self.dependents)) != len(self.dependents):
            raise ValueError("dependents must be distinct and must not include the happy type")

    def with_dependents(self, *types: str) -> ConditionSet:
        """The set with more dependents, after the existing ones."""
        return ConditionSet(self.happy, (*self.dependents, *types))

    def happy_verdict(self, verdicts: Iterable[Verdict], true_message: str) -> Verdict:
        """The happy condition, from the dependents' verdicts (others are ignored)."""
        by_type: Mapping[str, Verdict] = {v.type: v for v in verdicts}
        observed = [
            by_type.get(t)
            or Verdict(t, ConditionStatus.UNKNOWN, "NotObserved", f"{t} has not been observed")
            for t in self.dependents
        ]
        for status in (ConditionStatus.FALSE, ConditionStatus.UNKNOWN):
            for v in observed:
                if v.status == status:
                    return Verdict(self.happy, status, v.reason, v.message)
        return Verdict(self.happy, ConditionStatus.TRUE, self.happy, true_message)
