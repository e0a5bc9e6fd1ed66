"""The dispatch policy as a table: (event, situation) -> decision. Hold, merge, take over, cancel, escalate."""

from __future__ import annotations

import pytest

from domain.categories import Priority, Severity
from domain.incident_events import IncidentEventType as E
from domain.incident_events import IncidentKind
from domain.incidents import IncidentState
from domain.sla import SlaPolicy
from domain.work_orders import WorkOrderState as S
from streams.dispatch.policy import (
    Decision,
    HoldPolicy,
    IncidentSituation,
    decide,
    decide_release,
    holdable,
    more_urgent,
)
from tests.unit.dispatch.conftest import T0, incident, minutes, order

POLICY = HoldPolicy(hold_s=90, exempt_families=frozenset({"gas", "fire"}))


def situation(**kwargs: object) -> IncidentSituation:
    values: dict[str, object] = {"incident": incident(), "kind": IncidentKind.DEVICE, "parent_id": None, "order": None}
    values.update(kwargs)
    return IncidentSituation(**values)  # type: ignore[arg-type]


def test_a_correlatable_device_incident_is_held_for_the_configured_window(sla: SlaPolicy) -> None:
    outcome = decide(E.OPENED, situation(), policy=POLICY, sla=sla, now=T0)
    assert outcome.decision is Decision.HELD
    assert outcome.hold_until == T0 + minutes(1.5)


@pytest.mark.parametrize(
    ("why", "changes"),
    [
        ("life safety never waits", {"incident": incident(category="gas.leak")}),
        ("critical never waits", {"incident": incident(severity=Severity.CRITICAL)}),
        ("placed nowhere: nothing can correlate it", {"incident": incident(grid_cell=None)}),
        ("a composite is a parent", {"kind": IncidentKind.COMPOSITE}),
        ("a correlation group is a parent", {"kind": IncidentKind.CORRELATION}),
        ("a person reported it", {"kind": IncidentKind.REPORT}),
    ],
)
def test_incidents_that_are_not_held_are_dispatched_at_once(
    sla: SlaPolicy, why: str, changes: dict[str, object]
) -> None:
    assert decide(E.OPENED, situation(**changes), policy=POLICY, sla=sla, now=T0).decision is Decision.CREATED, why


def test_no_hold_when_the_window_is_zero(sla: SlaPolicy) -> None:
    assert not holdable(situation(), HoldPolicy(hold_s=0))
    assert decide(E.OPENED, situation(), policy=HoldPolicy(hold_s=0), sla=sla, now=T0).decision is Decision.CREATED


def test_an_incident_under_a_parent_gets_no_order_of_its_own(sla: SlaPolicy) -> None:
    for held in (None, T0 + minutes(1)):
        outcome = decide(E.OPENED, situation(parent_id="flood-1", held_until=held), policy=POLICY, sla=sla, now=T0)
        assert outcome.decision is Decision.MERGED
        assert "flood-1" in outcome.detail


@pytest.mark.parametrize("state", [S.CREATED, S.REJECTED, S.REOPENED])
def test_a_parent_takes_over_a_childs_order_that_no_crew_holds(sla: SlaPolicy, state: S) -> None:
    outcome = decide(E.CORRELATED, situation(parent_id="flood-1", order=order(state)), policy=POLICY, sla=sla, now=T0)
    assert outcome.decision is Decision.TAKEN_OVER


@pytest.mark.parametrize("state", [S.DISPATCHED, S.ACCEPTED, S.EN_ROUTE, S.ON_SITE, S.RESOLVED, S.VERIFYING])
def test_a_child_whose_order_a_crew_holds_keeps_it_and_is_attached(sla: SlaPolicy, state: S) -> None:
    outcome = decide(
        E.CORRELATED, situation(parent_id="flood-1", order=order(state, crew_id="c1")), policy=POLICY, sla=sla, now=T0
    )
    assert outcome.decision is Decision.ATTACHED


def test_cleared_while_held_cancels_only_where_the_category_says_so(sla: SlaPolicy) -> None:
    held = T0 + minutes(1)
    bin_full = situation(
        incident=incident(category="sanitation.bin_overflow", state=IncidentState.CLEARED), held_until=held
    )
    assert decide(E.CLEARED, bin_full, policy=POLICY, sla=sla, now=T0).decision is Decision.CANCELLED
    water = situation(incident=incident(state=IncidentState.CLEARED), held_until=held)
    outcome = decide(E.CLEARED, water, policy=POLICY, sla=sla, now=T0)
    assert outcome.decision is Decision.NO_ACTION
    assert "dispatched when the hold ends" in outcome.detail


@pytest.mark.parametrize(
    ("state", "expected"),
    [(S.CREATED, Decision.CANCELLED), (S.REJECTED, Decision.CANCELLED), (S.DISPATCHED, Decision.NO_ACTION)],
)
def test_cleared_before_a_crew_took_it_cancels_the_order(sla: SlaPolicy, state: S, expected: Decision) -> None:
    cleared = incident(category="sanitation.bin_overflow", state=IncidentState.CLEARED)
    current = order(state, category="sanitation.bin_overflow", crew_id="c1" if state is S.DISPATCHED else None)
    assert decide(E.CLEARED, situation(incident=cleared, order=current), policy=POLICY, sla=sla, now=T0).decision is (
        expected
    )


def test_a_category_that_is_not_cancelled_keeps_its_order_when_cleared(sla: SlaPolicy) -> None:
    cleared = incident(state=IncidentState.CLEARED)
    outcome = decide(E.CLEARED, situation(incident=cleared, order=order()), policy=POLICY, sla=sla, now=T0)
    assert outcome.decision is Decision.NO_ACTION


@pytest.mark.parametrize(
    ("severity", "current", "target"),
    [
        (Severity.HIGH, Priority.P3, Priority.P2),
        (Severity.CRITICAL, Priority.P3, Priority.P1),
        (Severity.HIGH, Priority.P2, None),  # already there
        (Severity.MEDIUM, Priority.P2, None),  # never lowered (an SLA escalation raised it)
    ],
)
def test_rising_severity_raises_the_priority(
    sla: SlaPolicy, severity: Severity, current: Priority, target: Priority | None
) -> None:
    current_order = order(S.DISPATCHED, crew_id="c1", priority=current)
    outcome = decide(
        E.UPDATED, situation(incident=incident(severity=severity), order=current_order), policy=POLICY, sla=sla, now=T0
    )
    if target is None:
        assert outcome.decision is Decision.NO_ACTION
    else:
        assert outcome.decision is Decision.ESCALATED
        assert outcome.target_priority is target


@pytest.mark.parametrize("final", [S.CLOSED, S.CANCELLED])
def test_an_incident_that_recurs_after_its_order_ended_gets_a_new_one(sla: SlaPolicy, final: S) -> None:
    ended = order(final, priority=Priority.P4)
    outcome = decide(
        E.REOPENED, situation(incident=incident(severity=Severity.HIGH), order=ended), policy=POLICY, sla=sla, now=T0
    )
    assert outcome.decision is Decision.CREATED
    assert "recurred" in outcome.detail


@pytest.mark.parametrize("event", [E.UPDATED, E.ACKNOWLEDGED])
def test_a_final_order_is_never_escalated(sla: SlaPolicy, event: E) -> None:
    closed = order(S.CLOSED, priority=Priority.P4)
    outcome = decide(
        event, situation(incident=incident(severity=Severity.HIGH), order=closed), policy=POLICY, sla=sla, now=T0
    )
    assert outcome.decision is Decision.NO_ACTION


def test_a_held_incident_becoming_critical_is_released_at_once(sla: SlaPolicy) -> None:
    held = T0 + minutes(1)
    critical = situation(incident=incident(severity=Severity.CRITICAL), held_until=held)
    assert decide(E.UPDATED, critical, policy=POLICY, sla=sla, now=T0).decision is Decision.RELEASED
    still = situation(incident=incident(severity=Severity.HIGH), held_until=held)
    assert decide(E.UPDATED, still, policy=POLICY, sla=sla, now=T0).decision is Decision.NO_ACTION


def test_an_incident_first_seen_cleared(sla: SlaPolicy) -> None:
    """A dispatcher that joins late sees an incident already cleared: a look is still needed unless the category
    is cancelled when it clears; a closed one needs nothing."""
    water = situation(incident=incident(state=IncidentState.CLEARED), kind=IncidentKind.REPORT)
    assert decide(E.UPDATED, water, policy=POLICY, sla=sla, now=T0).decision is Decision.CREATED
    bin_full = situation(incident=incident(category="sanitation.bin_overflow", state=IncidentState.CLEARED))
    assert decide(E.UPDATED, bin_full, policy=POLICY, sla=sla, now=T0).decision is Decision.NO_ACTION
    closed = situation(incident=incident(state=IncidentState.CLOSED))
    assert decide(E.UPDATED, closed, policy=POLICY, sla=sla, now=T0).decision is Decision.NO_ACTION


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, Decision.RELEASED),
        ({"parent_id": "flood-1"}, Decision.MERGED),
        ({"incident": incident(state=IncidentState.CLOSED)}, Decision.NO_ACTION),
        ({"incident": incident(category="sanitation.bin_overflow", state=IncidentState.CLEARED)}, Decision.CANCELLED),
        ({"incident": incident(state=IncidentState.CLEARED)}, Decision.RELEASED),
        ({"order": order()}, Decision.NO_ACTION),
    ],
)
def test_when_a_hold_ends(sla: SlaPolicy, changes: dict[str, object], expected: Decision) -> None:
    assert decide_release(situation(held_until=T0, **changes), sla=sla).decision is expected


def test_urgency_order() -> None:
    assert more_urgent(Priority.P1, Priority.P2)
    assert not more_urgent(Priority.P2, Priority.P2)
    assert not more_urgent(Priority.P4, Priority.P3)
