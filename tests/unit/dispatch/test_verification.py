"""Verification by the city: the verdict at its edges."""

from __future__ import annotations

from datetime import timedelta

from domain.incidents import IncidentState
from streams.dispatch.verification import CoveredIncident, Verdict, judge
from tests.unit.dispatch.conftest import T0, minutes

PERIOD = minutes(20)


def covered(
    state: IncidentState, cleared_at: object = None, came_back: bool = False, id: str = "i1"
) -> CoveredIncident:
    return CoveredIncident(id=id, state=state, cleared_at=cleared_at, came_back=came_back)  # type: ignore[arg-type]


def test_cleared_before_the_report_and_normal_for_the_period_passes_at_its_end() -> None:
    items = [covered(IncidentState.CLEARED, T0 - minutes(5))]
    before = judge(started_at=T0, period=PERIOD, covered=items, now=T0 + PERIOD - timedelta(microseconds=1))
    assert before.verdict is Verdict.WAITING
    at_end = judge(started_at=T0, period=PERIOD, covered=items, now=T0 + PERIOD)
    assert at_end.verdict is Verdict.PASSED


def test_a_late_clearing_must_still_be_normal_for_a_full_period() -> None:
    items = [covered(IncidentState.CLEARED, T0 + minutes(15))]
    waiting = judge(started_at=T0, period=PERIOD, covered=items, now=T0 + PERIOD)
    assert waiting.verdict is Verdict.WAITING
    assert waiting.normal_until == T0 + minutes(35)
    assert judge(started_at=T0, period=PERIOD, covered=items, now=T0 + minutes(35)).verdict is Verdict.PASSED


def test_still_open_fails_at_the_end_of_the_period_not_before() -> None:
    items = [covered(IncidentState.OPEN)]
    assert judge(started_at=T0, period=PERIOD, covered=items, now=T0 + minutes(19)).verdict is Verdict.WAITING
    failed = judge(started_at=T0, period=PERIOD, covered=items, now=T0 + PERIOD)
    assert failed.verdict is Verdict.FAILED
    assert "still open" in failed.reason


def test_coming_back_fails_at_once() -> None:
    items = [covered(IncidentState.OPEN, came_back=True)]
    failed = judge(started_at=T0, period=PERIOD, covered=items, now=T0 + minutes(1))
    assert failed.verdict is Verdict.FAILED
    assert "came back" in failed.reason


def test_a_parent_passes_only_when_every_child_has_cleared() -> None:
    items = [
        covered(IncidentState.CLEARED, T0, id="parent"),
        covered(IncidentState.CLOSED, T0 - minutes(30), id="child-1"),
        covered(IncidentState.OPEN, id="child-2"),
    ]
    assert judge(started_at=T0, period=PERIOD, covered=items, now=T0 + minutes(5)).verdict is Verdict.WAITING
    failed = judge(started_at=T0, period=PERIOD, covered=items, now=T0 + PERIOD)
    assert failed.verdict is Verdict.FAILED
    assert "child-2" in failed.reason
    items[2] = covered(IncidentState.CLEARED, T0 + minutes(2), id="child-2")
    assert judge(started_at=T0, period=PERIOD, covered=items, now=T0 + minutes(22)).verdict is Verdict.PASSED


def test_categories_verified_by_hand_are_never_judged_by_the_sensors() -> None:
    items = [covered(IncidentState.CLEARED, T0)]
    assert judge(started_at=T0, period=PERIOD, covered=items, now=T0 + minutes(99), by_hand=True).verdict is (
        Verdict.BY_HAND
    )
    assert judge(started_at=T0, period=PERIOD, covered=[], now=T0 + minutes(99)).verdict is Verdict.BY_HAND
