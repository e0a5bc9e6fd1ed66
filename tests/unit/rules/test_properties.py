"""Invariants that hold for any readings, in any arrival order within the allowed lateness (hypothesis):

* never two open incidents for one (source, rule);
* each incident's events follow the lifecycle table, numbered 1, 2, 3, ...; it opens first and clears before closing;
* clear never precedes open, close never precedes clear; ids are the uuid5 of rule, source and opening time;
* the verdict after any disorder within the allowed lateness equals the verdict in event-time order;
* saving and restoring the state as JSON between any two readings changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.incident_events import DeviceOutput, IncidentEvent, IncidentEventType, ReadingRejected
from domain.incidents import IncidentState
from domain.readings import Reading
from rules.catalogue import RuleSet, load_rules
from rules.clock import to_micros
from rules.detection import DeviceState, evaluate, state_from_json, state_to_json, tick
from rules.lifecycle import TRANSITIONS, IncidentAction, incident_id
from tests.unit.rules.city import at

RULES = load_rules()
ACTION_OF = {
    IncidentEventType.UPDATED: IncidentAction.UPDATE,
    IncidentEventType.CLEARED: IncidentAction.CLEAR,
    IncidentEventType.REOPENED: IncidentAction.REOPEN,
    IncidentEventType.CLOSED: IncidentAction.CLOSE,
    IncidentEventType.ACKNOWLEDGED: IncidentAction.ACKNOWLEDGE,
    IncidentEventType.CORRELATED: IncidentAction.CORRELATE,
}
LEVELS = st.one_of(st.sampled_from([0.0, 4.99, 5.0, 5.01, 14.99, 15.0, 15.01, 29.99, 30.0, 50.0]), st.floats(0, 120))


@st.composite
def gauge_readings(draw: st.DrawFn) -> list[Reading]:
    """A water-level gauge's readings in event-time order: levels near every threshold, gaps of 1-40 minutes."""
    count = draw(st.integers(1, 40))
    minute = 0.0
    items = []
    for _ in range(count):
        minute += draw(st.sampled_from([1, 2, 5, 5, 5, 10, 16, 40]))
        ts = at(minute)
        items.append(
            Reading(
                device_id="wl-1",
                ts=ts,
                ingested_at=ts + timedelta(seconds=1),
                metrics={"water_level_cm": draw(LEVELS), "battery_pct": draw(st.sampled_from([90.0, 14.0, 4.0]))},
                device_type="water_level",
                grid_cell="cell-a1",
                district="kallio",
            )
        )
    return items


@st.composite
def disordered(draw: st.DrawFn) -> tuple[list[Reading], list[Reading]]:
    """In-order readings and an arrival order that swaps neighbours no further apart than the allowed lateness."""
    items = draw(gauge_readings())
    arrival = list(items)
    lateness = timedelta(microseconds=RULES.profiles["water_level"].allowed_lateness)
    for index in range(len(arrival) - 1):
        if arrival[index + 1].ts - arrival[index].ts <= lateness and draw(st.booleans()):
            arrival[index], arrival[index + 1] = arrival[index + 1], arrival[index]
    return items, arrival


def replay(
    items: list[Reading], ticks: list[bool] | None = None, *, rules: RuleSet = RULES
) -> tuple[DeviceState, list[DeviceOutput]]:
    state: DeviceState | None = None
    outputs: list[DeviceOutput] = []
    for index, item in enumerate(items):
        state, told = evaluate(rules, state, item)
        outputs.extend(told)
        if ticks is not None and ticks[index % len(ticks)]:
            state, told = tick(rules, state, item.ts + timedelta(minutes=20))
            outputs.extend(told)
    assert state is not None
    return state, outputs


def check_lifecycle(outputs: list[DeviceOutput]) -> None:
    events = [output for output in outputs if isinstance(output, IncidentEvent)]
    state: dict[str, IncidentState] = {}
    seq: dict[str, int] = {}
    open_by_rule: dict[tuple[str, str], str] = {}
    for event in events:
        incident = event.incident
        key = (incident.source, incident.rule_id)
        if event.type is IncidentEventType.OPENED:
            assert incident.id not in state, "an incident opens once"
            assert incident.id == incident_id(incident.rule_id, incident.source, to_micros(incident.opened_at))
            assert event.seq == 1
        else:
            assert incident.id in state, f"{event.type} before opened"
            assert TRANSITIONS[(state[incident.id], ACTION_OF[event.type])] is incident.state
            assert event.seq == seq[incident.id] + 1
        state[incident.id] = incident.state
        seq[incident.id] = event.seq
        if incident.state is IncidentState.OPEN:
            assert open_by_rule.get(key, incident.id) == incident.id, "two open incidents for one source and rule"
            open_by_rule[key] = incident.id
        elif open_by_rule.get(key) == incident.id:
            del open_by_rule[key]
        assert event.at >= incident.opened_at
        assert incident.updated_at >= incident.opened_at
        if incident.cleared_at is not None:
            assert incident.cleared_at >= incident.opened_at
        if incident.closed_at is not None:
            assert incident.closed_at >= incident.opened_at
            assert incident.cleared_at is None or incident.closed_at >= incident.cleared_at


@settings(max_examples=150, deadline=None)
@given(gauge_readings(), st.lists(st.booleans(), min_size=1, max_size=5))
def test_the_lifecycle_invariants_hold_for_any_readings(items: list[Reading], ticks: list[bool]) -> None:
    _, outputs = replay(items, ticks)
    check_lifecycle(outputs)


@settings(max_examples=150, deadline=None)
@given(gauge_readings(), st.lists(st.booleans(), min_size=1, max_size=5))
def test_current_is_always_the_checkpoint_with_the_pending_readings_folded_in(
    items: list[Reading], ticks: list[bool]
) -> None:
    state, _ = replay(items, ticks)
    profile = RULES.profiles["water_level"]
    lateness = profile.allowed_lateness
    assert all(ts >= state.latest - lateness for ts, _ in state.pending)
    for binding, slot in zip(profile.bindings, state.slots, strict=True):
        folded = slot.settled
        for ts, metrics in state.pending:
            value = metrics.get(binding.detector.metric)
            if value is not None:
                folded = binding.detector.step(folded, ts, value, metrics)
        assert folded == slot.current


@settings(max_examples=150, deadline=None)
@given(disordered())
def test_disorder_within_the_lateness_gives_the_in_order_verdict(orders: tuple[list[Reading], list[Reading]]) -> None:
    in_order, arrival = orders
    ordered_state, _ = replay(in_order)
    arrived_state, outputs = replay(arrival)
    assert [slot.current for slot in arrived_state.slots] == [slot.current for slot in ordered_state.slots]
    assert [slot.settled for slot in arrived_state.slots] == [slot.settled for slot in ordered_state.slots]
    assert not [output for output in outputs if isinstance(output, ReadingRejected)]  # all within the lateness
    check_lifecycle(outputs)


@st.composite
def one_behind(draw: st.DrawFn) -> tuple[list[Reading], list[Reading]]:
    """In-order readings and an arrival order in which a reading is at most one place late (disjoint swaps)."""
    items = draw(gauge_readings())
    arrival = list(items)
    lateness = timedelta(microseconds=RULES.profiles["water_level"].allowed_lateness)
    index = 0
    while index < len(arrival) - 1:
        if arrival[index + 1].ts - arrival[index].ts <= lateness and draw(st.booleans()):
            arrival[index], arrival[index + 1] = arrival[index + 1], arrival[index]
            index += 1
        index += 1
    return items, arrival


@settings(max_examples=150, deadline=None)
@given(one_behind())
def test_a_span_of_two_readings_still_orders_a_reading_one_place_late(
    orders: tuple[list[Reading], list[Reading]],
) -> None:
    rules = replace(RULES, lateness_max_readings=2)
    in_order, arrival = orders
    ordered_state, _ = replay(in_order, rules=rules)
    arrived_state, outputs = replay(arrival, rules=rules)
    assert len(arrived_state.pending) <= 2
    assert [slot.current for slot in arrived_state.slots] == [slot.current for slot in ordered_state.slots]
    assert not [output for output in outputs if isinstance(output, ReadingRejected)]
    # Leaving the span early changes nothing: the verdict is the one of the unbounded span.
    unbounded_state, _ = replay(in_order)
    assert [slot.current for slot in arrived_state.slots] == [slot.current for slot in unbounded_state.slots]
    check_lifecycle(outputs)


@settings(max_examples=75, deadline=None)
@given(disordered())
def test_a_json_round_trip_between_readings_changes_nothing(orders: tuple[list[Reading], list[Reading]]) -> None:
    _, arrival = orders
    _, expected = replay(arrival)
    state: DeviceState | None = None
    outputs: list[DeviceOutput] = []
    for item in arrival:
        if state is not None:
            state = state_from_json(RULES, json.loads(json.dumps(state_to_json(state))))
        state, told = evaluate(RULES, state, item)
        outputs.extend(told)
    assert outputs == expected


# --- the area engine: composites and correlation ------------------------------------------------------------------

FACT_RULES = ("drainage.rain.heavy", "drainage.water_level.rising", "drainage.manhole_open.flag")
CHILD_CATEGORIES = ("drainage.waterlogging", "drainage.manhole_open", "lighting.outage")
CELLS = ("cell-a1", "cell-a2")
NEXT_STEP = {
    None: IncidentEventType.OPENED,
    IncidentEventType.OPENED: IncidentEventType.CLEARED,
    IncidentEventType.REOPENED: IncidentEventType.CLEARED,
}


@st.composite
def area_inputs(draw: st.DrawFn) -> list[tuple[str, object]]:
    """A timeline of facts toggling, device incidents walking their lifecycle, and ticks, in time order."""
    from domain.categories import Severity
    from domain.incident_events import FactChange, IncidentKind
    from domain.incidents import Incident

    minute = 0.0
    facts: dict[tuple[str, str], bool] = {}
    children: dict[str, tuple[IncidentEventType | None, int, float, str, str]] = {}
    timeline: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 60))):
        minute += draw(st.sampled_from([0.5, 1, 5, 10, 30, 61]))
        choice = draw(st.sampled_from(["fact", "fact", "child", "child", "tick"]))
        if choice == "fact":
            rule = draw(st.sampled_from(FACT_RULES))
            device = draw(st.sampled_from(["d1", "d2", "d3"]))
            cell = CELLS[hash(device) % 2] if rule != FACT_RULES[0] else "cell-z9"
            active = not facts.get((rule, device), False)
            facts[(rule, device)] = active
            fact = FactChange(
                rule_id=rule,
                device_id=f"{rule}-{device}",
                grid_cell=cell,
                district="kallio",
                active=active,
                at=at(minute),
            )
            timeline.append(("input", fact))
        elif choice == "child":
            name = draw(st.sampled_from([f"c{n}" for n in range(8)]))
            last, seq, opened, category, cell = children.get(
                name, (None, 0, minute, draw(st.sampled_from(CHILD_CATEGORIES)), draw(st.sampled_from(CELLS)))
            )
            if last is IncidentEventType.CLOSED:
                continue
            if last is IncidentEventType.CLEARED:
                step = draw(st.sampled_from([IncidentEventType.REOPENED, IncidentEventType.CLOSED]))
            else:
                step = NEXT_STEP[last]
            state = {IncidentEventType.CLEARED: IncidentState.CLEARED, IncidentEventType.CLOSED: IncidentState.CLOSED}
            incident = Incident(
                id=name, rule_id=f"{category}.rule", rule_version=1, source=name, category_code=category,
                severity=Severity.MEDIUM, state=state.get(step, IncidentState.OPEN), title="t", condition="c",
                opened_at=at(opened), updated_at=at(minute), grid_cell=cell, district="kallio",
            )  # fmt: skip
            children[name] = (step, seq + 1, opened, category, cell)
            timeline.append(
                (
                    "input",
                    IncidentEvent(type=step, incident=incident, seq=seq + 1, at=at(minute), kind=IncidentKind.DEVICE),
                )
            )
        else:
            timeline.append(("tick", at(minute)))
    return timeline


@settings(max_examples=200, deadline=None)
@given(area_inputs())
def test_the_area_engine_keeps_the_lifecycle_and_never_hides_an_incident(timeline: list[tuple[str, object]]) -> None:
    from datetime import datetime

    from domain.incident_events import FactChange
    from rules.correlation import AreaState, area_from_json, area_to_json, correlate, tick_area

    area: AreaState | None = None
    told: list[IncidentEvent] = []
    child_state: dict[str, IncidentEventType] = {}
    parent_of: dict[str, str] = {}
    for kind, item in timeline:
        if kind == "input":
            assert isinstance(item, FactChange | IncidentEvent)
            if isinstance(item, IncidentEvent):
                child_state[item.incident.id] = item.type
            area, events = correlate(RULES, area, item)
        elif area is not None:
            assert isinstance(item, datetime)
            area, events = tick_area(RULES, area, item)
        else:
            continue
        area = area_from_json(json.loads(json.dumps(area_to_json(area))))
        for event in events:
            for child in event.children:
                assert child not in parent_of, "an incident has one parent"
                parent_of[child] = event.incident.id
            if event.type is IncidentEventType.CLOSED:
                for child in [child for child, parent in parent_of.items() if parent == event.incident.id]:
                    assert child_state[child] is IncidentEventType.CLOSED, (
                        f"{event.incident.rule_id} closed over {child}, still {child_state[child]}"
                    )
            if event.type is not IncidentEventType.CORRELATED:
                child_state[event.incident.id] = event.type
        told.extend(events)
    check_lifecycle(list(told))
