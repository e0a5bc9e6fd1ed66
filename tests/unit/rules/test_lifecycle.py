"""The incident lifecycle table, walked completely, and the lifecycle as the engine drives it: deterministic ids,
severity that only rises, acknowledgement, closing, flapping, refreshes, and a rule that changes version."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind
from domain.incidents import IncidentState
from rules.clock import to_micros
from rules.detection import acknowledge, tick
from rules.lifecycle import (
    QUIET,
    TRANSITIONS,
    IllegalIncidentTransitionError,
    IncidentAction,
    LifecyclePolicy,
    Subject,
    UnknownIncidentError,
    acknowledge_alarm,
    allowed_actions,
    close_alarm,
    correlate_alarm,
    drop_alarm,
    hold_alarm,
    incident_id,
    next_state,
    raise_alarm,
    settle_alarm,
)
from tests.unit.rules.city import at, catalogue, incident_events, kinds, run, series

ALL_PAIRS = list(itertools.product(IncidentState, IncidentAction))


@pytest.mark.parametrize(("state", "action"), ALL_PAIRS, ids=[f"{s}-{a}" for s, a in ALL_PAIRS])
def test_every_pair_follows_the_table(state: IncidentState, action: IncidentAction) -> None:
    target = TRANSITIONS.get((state, action))
    if target is None:
        with pytest.raises(IllegalIncidentTransitionError) as raised:
            next_state("inc-1", state, action)
        assert raised.value.state is state
        assert raised.value.action is action
        assert "inc-1" in str(raised.value)
        return
    assert next_state("inc-1", state, action) is target
    assert action in allowed_actions(state)


def test_closed_is_final_and_every_state_is_reachable() -> None:
    assert allowed_actions(IncidentState.CLOSED) == frozenset()
    assert set(TRANSITIONS.values()) == set(IncidentState)
    with pytest.raises(IllegalIncidentTransitionError, match="nothing, it is final"):
        next_state("inc-1", IncidentState.CLOSED, IncidentAction.REOPEN)


POLICY = LifecyclePolicy(
    close_after=1800 * 10**6,
    refresh=0,
    flapping_window=3600 * 10**6,
    flapping_max_cycles=3,
    flapping_settle=1800 * 10**6,
    evidence_limit=5,
)
SUBJECT = Subject(
    rule_id="drainage.waterlogging.depth",
    kind=IncidentKind.DEVICE,
    title="Waterlogging: wl-1",
    condition="water_level_cm ≥ 15 cm",
    category_code="drainage.waterlogging",
    source="wl-1",
    grid_cell="cell-a1",
    district="kallio",
)
MINUTE = 60 * 10**6


def test_the_functions_walk_the_table_with_one_event_per_change() -> None:
    from domain.categories import Severity

    start = to_micros(at(0))
    row = ("wl-1", "water_level_cm", start, 16.0)
    events: list[IncidentEvent] = []
    alarm, told = raise_alarm(
        POLICY, SUBJECT, QUIET, at=start, severity=Severity.MEDIUM, evidence=(row,), rule_version=1
    )
    events += told
    alarm, told = hold_alarm(POLICY, SUBJECT, alarm, at=start + MINUTE, severity=Severity.HIGH, evidence=(row,))
    events += told
    alarm, told = acknowledge_alarm(SUBJECT, alarm, by="d.li", at=start + 2 * MINUTE)
    events += told
    alarm, told = correlate_alarm(SUBJECT, alarm, children=("child-1",), at=start + 3 * MINUTE)
    events += told
    alarm, told = drop_alarm(POLICY, SUBJECT, alarm, at=start + 4 * MINUTE)
    events += told
    alarm, told = raise_alarm(
        POLICY, SUBJECT, alarm, at=start + 5 * MINUTE, severity=Severity.MEDIUM, evidence=(row,), rule_version=1
    )
    events += told
    alarm, told = drop_alarm(POLICY, SUBJECT, alarm, at=start + 6 * MINUTE)
    events += told
    alarm, told = settle_alarm(POLICY, SUBJECT, alarm, now=start + 6 * MINUTE + POLICY.close_after - 1)
    assert told == ()
    alarm, told = settle_alarm(POLICY, SUBJECT, alarm, now=start + 600 * MINUTE)
    events += told
    assert alarm.tracked is None
    assert [event.type for event in events] == [
        IncidentEventType.OPENED,
        IncidentEventType.UPDATED,
        IncidentEventType.ACKNOWLEDGED,
        IncidentEventType.CORRELATED,
        IncidentEventType.CLEARED,
        IncidentEventType.REOPENED,
        IncidentEventType.CLEARED,
        IncidentEventType.CLOSED,
    ]
    assert [event.seq for event in events] == list(range(1, 9))
    assert {event.incident.id for event in events} == {incident_id(SUBJECT.rule_id, "wl-1", start)}
    closed = events[-1].incident
    assert closed.state is IncidentState.CLOSED
    assert closed.closed_at == at(36)  # the deadline, not the time settle ran
    assert closed.severity.value == "high"  # the reopen did not lower it
    assert closed.acknowledged_by == "d.li"
    assert events[3].children == ("child-1",)
    for event in events:
        assert event.incident.opened_at == at(0)
        assert event.at >= event.incident.opened_at


def test_nothing_to_do_on_a_closed_alarm_and_unknown_acknowledgements_are_refused() -> None:
    assert drop_alarm(POLICY, SUBJECT, QUIET, at=0) == (QUIET, ())
    assert correlate_alarm(SUBJECT, QUIET, children=("x",), at=0) == (QUIET, ())
    assert close_alarm(SUBJECT, QUIET, at=0) == (QUIET, ())
    with pytest.raises(UnknownIncidentError):
        acknowledge_alarm(SUBJECT, QUIET, by="d.li", at=0)


def test_incident_ids_are_deterministic_and_distinct() -> None:
    first = incident_id("drainage.waterlogging.depth", "wl-1", 1)
    assert first == incident_id("drainage.waterlogging.depth", "wl-1", 1)
    assert len({first, incident_id("drainage.waterlogging.depth", "wl-2", 1)}) == 2
    assert len({first, incident_id("drainage.waterlogging.depth", "wl-1", 2)}) == 2
    assert len({first, incident_id("gas.leak.lel", "wl-1", 1)}) == 2


WATER = """
[[rule]]
id = "drainage.waterlogging.depth"
version = {version}
title = "Waterlogging"
kind = "threshold"
device_types = ["water_level"]
metric = "water_level_cm"
above = 15.0
clear = 5.0
severity = "medium"
category = "drainage.waterlogging"
"""


def test_flapping_is_suppressed_into_one_incident() -> None:
    rules = catalogue(WATER.format(version=1))
    # Up and down every 5 minutes for an hour, then quiet.
    levels = [16.0, 2.0] * 6 + [2.0] * 8
    state, outputs = run(rules, series("wl-1", "water_level_cm", levels))
    events = incident_events(outputs)
    assert [event.type for event in events] == [
        IncidentEventType.OPENED,
        IncidentEventType.CLEARED,
        IncidentEventType.REOPENED,
        IncidentEventType.CLEARED,
        IncidentEventType.REOPENED,
        IncidentEventType.CLEARED,
        IncidentEventType.REOPENED,  # the 4th opening within the hour: flapping, and it stays open
        IncidentEventType.CLEARED,  # only after 30 quiet minutes
    ]
    flapping = events[6]
    assert flapping.flapping
    assert flapping.incident.title.endswith("(flapping)")
    assert len({event.incident.id for event in events}) == 1
    # Suppressed: the flips at 35..55 told nothing. Quiet since 55, settled 30 minutes later, closed 30 after that.
    assert events[-1].at == at(55 + 30)
    _, told = tick(rules, state, at(600))
    assert kinds(told) == [(IncidentEventType.CLOSED, at(85 + 30))]


def test_acknowledgement() -> None:
    rules = catalogue(WATER.format(version=1))
    state, outputs = run(rules, series("wl-1", "water_level_cm", [20.0]))
    [opened] = incident_events(outputs)
    state, told = acknowledge(rules, state, opened.incident.id, by="d.li", at=at(3))
    [event] = told
    assert event.type is IncidentEventType.ACKNOWLEDGED
    assert (event.incident.acknowledged_by, event.incident.acknowledged_at) == ("d.li", at(3))
    assert event.seq == 2
    state, told = acknowledge(rules, state, opened.incident.id, by="d.wang", at=at(4))
    assert told == ()  # a repeated request changes nothing
    with pytest.raises(UnknownIncidentError):
        acknowledge(rules, state, "no-such-incident", by="d.li", at=at(5))
    # Acknowledged while cleared, too.
    state, outputs = run(rules, series("wl-2", "water_level_cm", [20.0, 1.0]))
    cleared_id = incident_events(outputs)[0].incident.id
    _, told = acknowledge(rules, state, cleared_id, by="d.li", at=at(10))
    assert told[0].incident.state is IncidentState.CLEARED


def test_a_cleared_incident_closes_at_its_deadline_whenever_the_tick_runs() -> None:
    rules = catalogue(WATER.format(version=1))
    state, _ = run(rules, series("wl-1", "water_level_cm", [20.0, 1.0]))
    assert tick(rules, state, at(34))[1] == ()
    for late_tick in (35, 36, 240):
        _, told = tick(rules, state, at(late_tick))
        assert kinds(told) == [(IncidentEventType.CLOSED, at(35))]


def test_a_reading_past_the_deadline_closes_before_it_opens_a_new_incident() -> None:
    rules = catalogue(WATER.format(version=1))
    _, outputs = run(
        rules, series("wl-1", "water_level_cm", [20.0, 1.0]) + series("wl-1", "water_level_cm", [20.0], start=60)
    )
    events = incident_events(outputs)
    assert [event.type for event in events] == [
        IncidentEventType.OPENED,
        IncidentEventType.CLEARED,
        IncidentEventType.CLOSED,
        IncidentEventType.OPENED,
    ]
    assert events[0].incident.id != events[3].incident.id


def test_refresh_tells_the_latest_reading_of_a_long_incident() -> None:
    rules = catalogue(WATER.format(version=1), refresh=600)
    _, outputs = run(rules, series("wl-1", "water_level_cm", [20.0, 21.0, 22.0, 23.0, 24.0]))
    assert kinds(outputs) == [
        (IncidentEventType.OPENED, at(0)),
        (IncidentEventType.UPDATED, at(10)),
        (IncidentEventType.UPDATED, at(20)),
    ]
    assert incident_events(outputs)[1].incident.evidence[-1].value == 22.0


def test_a_new_rule_version_closes_the_old_versions_incident() -> None:
    old = catalogue(WATER.format(version=1), version=1)
    new = catalogue(WATER.format(version=2), version=2)
    state, outputs = run(old, series("wl-1", "water_level_cm", [20.0]))
    opened = incident_events(outputs)[0]
    state, outputs = run(new, series("wl-1", "water_level_cm", [20.0], start=5), state)
    events = incident_events(outputs)
    assert [(event.type, event.incident.rule_version) for event in events] == [
        (IncidentEventType.CLOSED, 1),
        (IncidentEventType.OPENED, 2),
    ]
    assert events[0].incident.id == opened.incident.id
    assert "version 2" in events[0].detail
    assert state.catalogue_version == 2


def test_a_withdrawn_rule_closes_its_incident() -> None:
    old = catalogue(WATER.format(version=1), version=1)
    empty = catalogue("", version=2)
    state, _ = run(old, series("wl-1", "water_level_cm", [20.0]))
    state, outputs = run(empty, series("wl-1", "water_level_cm", [20.0], start=5), state)
    [closed] = incident_events(outputs)
    assert closed.type is IncidentEventType.CLOSED
    assert closed.incident.title.endswith("(rule withdrawn)")
    assert state.slots == ()
    assert state.open_incidents() == ()


def test_open_incidents_lists_what_is_open_or_cleared() -> None:
    rules = catalogue(WATER.format(version=1))
    state, outputs = run(rules, series("wl-1", "water_level_cm", [20.0, 1.0]))
    assert state.open_incidents() == (incident_events(outputs)[0].incident.id,)
    state, _ = tick(rules, state, at(0) + timedelta(hours=2))
    assert state.open_incidents() == ()
