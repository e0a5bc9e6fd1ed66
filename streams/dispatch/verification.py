"""Verification by the city (核查): does the evidence show the problem gone? Pure: no I/O, no clock.

After a crew reports an order resolved, the order is ``verifying`` from ``started_at`` (START_VERIFICATION). It
covers its own incident and every incident attached to it (the children of a parent). The verdict:

* **fail at once** when a covered incident *came back* after ``started_at``: it reopened, or a new incident was put
  under the order's incident (the flood spread). The crew's fix did not hold.
* **fail** when a covered incident is still open one verification period after ``started_at``: the water did not
  fall.
* **pass** when every covered incident has cleared (or closed) and has stayed so for one full verification
  period, counted from ``started_at`` or from the last clearing, whichever is later: the sensors stayed normal
  for the whole period after the fix. "Cleared" is the rule's own verdict, with its hysteresis and clear debounce
  (docs/RULES.md), so one reading under the line is not enough.
* otherwise **wait**: until the period ends, or, once everything has cleared, until it has been normal for a full
  period (``normal_until``, which the order's ``verify_until`` is moved to).

Categories no sensor can confirm (``SlaPolicy.verified_by_hand``) are never judged here: a dispatcher verifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.incidents import IncidentState


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    WAITING = "waiting"
    BY_HAND = "by_hand"


@dataclass(frozen=True, slots=True, kw_only=True)
class CoveredIncident:
    """One incident a verifying order answers for, as the projection shows it now."""

    id: str
    state: IncidentState
    cleared_at: datetime | None  # event time of its latest clearing
    came_back: bool  # reopened, or newly opened under the order's incident, after verification started


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    verdict: Verdict
    reason: str
    normal_until: datetime | None = None  # WAIT after everything cleared: when it will have been normal a period


def judge(
    *,
    started_at: datetime,
    period: timedelta,
    covered: Sequence[CoveredIncident],
    now: datetime,
    by_hand: bool = False,
) -> Judgement:
    """The verdict on a verifying order at ``now`` (rules in the module docstring)."""
    if by_hand:
        return Judgement(verdict=Verdict.BY_HAND, reason="no sensor confirms this category: a dispatcher verifies")
    if not covered:
        return Judgement(verdict=Verdict.BY_HAND, reason="the order covers no incident a sensor could confirm")
    returned = sorted(c.id for c in covered if c.came_back)
    if returned:
        return Judgement(
            verdict=Verdict.FAILED, reason=f"the problem came back during verification: {', '.join(returned)}"
        )
    period_end = started_at + period
    still_open = sorted(c.id for c in covered if c.state is IncidentState.OPEN)
    if still_open:
        if now >= period_end:
            return Judgement(
                verdict=Verdict.FAILED,
                reason=f"still open {_minutes(period)} after the crew reported it resolved: {', '.join(still_open)}",
            )
        return Judgement(verdict=Verdict.WAITING, reason=f"waiting for {', '.join(still_open)} to clear")
    last_cleared = max((c.cleared_at for c in covered if c.cleared_at is not None), default=started_at)
    normal_until = max(started_at, last_cleared) + period
    if now >= normal_until:
        return Judgement(
            verdict=Verdict.PASSED,
            reason=f"{len(covered)} incident(s) cleared and normal for {_minutes(period)}: verified by the sensors",
        )
    return Judgement(
        verdict=Verdict.WAITING,
        reason=f"cleared; must stay normal until {normal_until.isoformat()}",
        normal_until=normal_until,
    )


def _minutes(period: timedelta) -> str:
    minutes = period.total_seconds() / 60
    return f"{minutes:g} min"
