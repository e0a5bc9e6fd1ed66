"""Composites and correlation per area: the flood composite, facts remembered within a window, correlation parents,
and the scenario the issue names: a hundred sensors in one flooded area give one parent incident, not 100 alarms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from domain.categories import Severity
from domain.incident_events import FactChange, IncidentEvent, IncidentEventType, IncidentKind, area_key, area_key_of
from domain.incidents import Incident, IncidentState
from domain.readings import Reading
from rules.backtest import backtest
from rules.catalogue import load_rules
from rules.correlation import AreaState, children_of, correlate, next_area_deadline, tick_area
from tests.unit.rules.city import at, reading

RULES = load_rules()
RAIN = "drainage.rain.heavy"
RISING = "drainage.water_level.rising"
COVER = "drainage.manhole_open.flag"
FLOOD = "drainage.flood.cell"
OPENED = IncidentEventType.OPENED
CLEARED = IncidentEventType.CLEARED
CORRELATED = IncidentEventType.CORRELATED


def fact(rule_id: str, device_id: str, minute: float, *, active: bool = True, cell: str = "cell-a1") -> FactChange:
    return FactChange(
        rule_id=rule_id, device_id=device_id, grid_cell=cell, district="kallio", active=active, at=at(minute)
    )


def device_incident(
    incident_id: str,
    category: str,
    minute: float,
    *,
    kind: IncidentEventType = OPENED,
    seq: int = 1,
    cell: str = "cell-a1",
    severity: Severity = Severity.MEDIUM,
    opened: float | None = None,
) -> IncidentEvent:
    opened_at = at(opened if opened is not None else minute)
    state = {CLEARED: IncidentState.CLEARED, IncidentEventType.CLOSED: IncidentState.CLOSED}.get(
        kind, IncidentState.OPEN
    )
    return IncidentEvent(
        type=kind,
        incident=Incident(
            id=incident_id,
            rule_id=f"{category}.rule",
            rule_version=1,
            source=incident_id.split(":")[0],
            category_code=category,
            severity=severity,
            state=state,
            title="t",
            condition="c",
            opened_at=opened_at,
            updated_at=at(minute),
            cleared_at=at(minute) if state is not IncidentState.OPEN else None,
            grid_cell=cell,
            district="kallio",
        ),
        seq=seq,
        at=at(minute),
        kind=IncidentKind.DEVICE,
    )


def feed(
    items: Sequence[FactChange | IncidentEvent], state: AreaState | None = None
) -> tuple[AreaState, list[IncidentEvent]]:
    events: list[IncidentEvent] = []
    for item in items:
        state, told = correlate(RULES, state, item)
        events.extend(told)
    assert state is not None
    return state, events


def summary(events: Sequence[IncidentEvent]) -> list[tuple[IncidentEventType, str, datetime]]:
    return [(event.type, event.incident.rule_id, event.at) for event in events]


FLOOD_FACTS = [fact(RAIN, "rg-1", 0, cell="cell-b9"), fact(RISING, "wl-1", 5), fact(COVER, "mh-1", 10)]


def test_a_flood_opens_when_every_member_holds() -> None:
    _, events = feed(FLOOD_FACTS)
    [opened] = events
    assert (opened.type, opened.kind, opened.at) == (OPENED, IncidentKind.COMPOSITE, at(10))
    incident = opened.incident
    assert (incident.rule_id, incident.source, incident.grid_cell, incident.district) == (
        FLOOD,
        "cell-a1",
        "cell-a1",
        "kallio",
    )
    assert incident.category_code == "drainage.flood"
    assert incident.severity is Severity.HIGH
    assert "drainage.rain.heavy on a device in the same district" in incident.condition


@pytest.mark.parametrize(
    "facts",
    [
        FLOOD_FACTS[:2],
        [FLOOD_FACTS[0], FLOOD_FACTS[1], fact(COVER, "mh-1", 10, cell="cell-a2")],
        [fact(RISING, "wl-1", 5), fact(COVER, "mh-1", 10), fact(RAIN, "rg-1", 0, active=False)],
    ],
    ids=["two of three", "cover in another cell", "no rain"],
)
def test_no_flood_without_every_member_in_scope(facts: list[FactChange]) -> None:
    assert feed(list(facts))[1] == []


def test_a_fact_is_remembered_for_the_window() -> None:
    items = [fact(RAIN, "rg-1", 0), fact(RISING, "wl-1", 5), fact(RISING, "wl-1", 10, active=False)]
    _, events = feed([*items, fact(COVER, "mh-1", 70)])  # rising ended at :10, remembered until 01:10
    assert summary(events) == [(OPENED, FLOOD, at(70))]
    _, events = feed([*items, fact(COVER, "mh-1", 70.01)])
    assert events == []


def test_a_flood_clears_when_a_member_lapses_at_the_moment_it_lapsed() -> None:
    state, _ = feed([*FLOOD_FACTS, fact(RAIN, "rg-1", 20, active=False)])
    assert next_area_deadline(RULES, state) is not None
    assert tick_area(RULES, state, at(80))[1] == ()  # 20 + 60 min: still remembered, exactly at the edge
    for when in (at(80.5), at(109)):
        _, events = tick_area(RULES, state, when)
        assert summary(events) == [(CLEARED, FLOOD, at(80))]
    _, events = tick_area(RULES, state, at(200))  # one late tick tells both, each at its own moment
    assert summary(events) == [(CLEARED, FLOOD, at(80)), (IncidentEventType.CLOSED, FLOOD, at(110))]


def test_a_flood_grows_more_severe_with_the_devices_behind_it() -> None:
    covers = [fact(COVER, f"mh-{n}", 10 + n) for n in range(8)]
    _, events = feed([*FLOOD_FACTS[:2], *covers])
    assert [(event.type, event.incident.severity) for event in events] == [
        (OPENED, Severity.HIGH),
        (IncidentEventType.UPDATED, Severity.CRITICAL),  # rain gauge + water gauge + 8 covers = 10 devices
    ]


def test_the_composite_adopts_related_incidents_before_and_after_it_opens() -> None:
    before = device_incident("wl-1:a", "drainage.waterlogging", 3)
    elsewhere = device_incident("wl-9:a", "drainage.waterlogging", 3, cell="cell-z9")
    unrelated = device_incident("sl-1:a", "lighting.outage", 4)
    after = device_incident("mh-1:a", "drainage.manhole_open", 10)
    _, events = feed([before, elsewhere, unrelated, *FLOOD_FACTS, after])
    flood_id = next(event.incident.id for event in events if event.type is OPENED)
    assert children_of(events) == {"wl-1:a": flood_id, "mh-1:a": flood_id}
    assert [event.children for event in events if event.type is CORRELATED] == [("wl-1:a",), ("mh-1:a",)]


def test_related_incidents_without_a_composite_get_a_correlation_parent() -> None:
    outages = [device_incident(f"sl-{n}:a", "lighting.outage", n) for n in range(4)]
    _, events = feed(outages[:2])
    assert events == []
    state, events = feed(outages[:3])
    parent = events[0]
    assert (parent.type, parent.kind, parent.incident.rule_id) == (
        OPENED,
        IncidentKind.CORRELATION,
        "correlation.lighting.outage",
    )
    assert parent.incident.title == "Street-light failure: several devices in cell-a1"
    assert children_of(events) == {f"sl-{n}:a": parent.incident.id for n in range(3)}
    _, events = feed([outages[3]], state)
    assert [(event.type, event.children) for event in events] == [(CORRELATED, ("sl-3:a",))]


@pytest.mark.parametrize(
    "outages",
    [
        [device_incident(f"sl-{n}:a", "lighting.outage", n, cell=f"cell-{n}") for n in range(3)],
        [device_incident(f"sl-{n}:a", "lighting.outage", 31 * n) for n in range(3)],
        [
            device_incident("sl-1:a", "lighting.outage", 1),
            *[device_incident(f"gd-{n}:a", "gas.leak", n) for n in range(2)],
        ],
    ],
    ids=["different cells", "further apart than the window", "different categories"],
)
def test_unrelated_incidents_stay_apart(outages: list[IncidentEvent]) -> None:
    assert feed(list(outages))[1] == []


def test_a_correlation_parent_follows_its_children_and_closes_after_them() -> None:
    outages = [device_incident(f"sl-{n}:a", "lighting.outage", n) for n in range(3)]
    state, events = feed(outages)
    parent_id = events[0].incident.id
    cleared = [device_incident(f"sl-{n}:a", "lighting.outage", 20 + n, kind=CLEARED, seq=2, opened=n) for n in range(3)]
    state, events = feed(cleared, state)
    assert summary(events) == [(CLEARED, "correlation.lighting.outage", at(22))]
    state, ticked = tick_area(RULES, state, at(120))
    assert ticked == ()  # its children are cleared but not closed: the parent waits for them
    closed = [
        device_incident(f"sl-{n}:a", "lighting.outage", 52 + n, kind=IncidentEventType.CLOSED, seq=3, opened=n)
        for n in range(3)
    ]
    state, events = feed(closed, state)
    assert [(event.type, event.incident.id) for event in events] == [(IncidentEventType.CLOSED, parent_id)]


def test_a_composite_adopts_a_correlation_parent_formed_before_it() -> None:
    logged = [device_incident(f"wl-{n}:a", "drainage.waterlogging", n) for n in range(3)]
    _, events = feed([*logged, *FLOOD_FACTS])
    parents = children_of(events)
    cluster = parents["wl-0:a"]
    flood = next(event.incident.id for event in events if event.incident.rule_id == FLOOD)
    assert parents[cluster] == flood  # the wall sees one flood; under it the waterlogging group; under that, gauges


def test_a_composite_stays_open_while_an_incident_under_it_is_open() -> None:
    child = device_incident("wl-1:a", "drainage.waterlogging", 12)
    state, _ = feed([*FLOOD_FACTS, child, fact(RAIN, "rg-1", 20, active=False)])
    state, ticked = tick_area(RULES, state, at(100))
    assert ticked == ()  # the rain lapsed at 01:20, but the street is still under water
    _, events = feed([device_incident("wl-1:a", "drainage.waterlogging", 130, kind=CLEARED, seq=2, opened=12)], state)
    assert summary(events) == [(CLEARED, FLOOD, at(130))]


def test_duplicate_and_stale_incident_events_are_ignored() -> None:
    outages = [device_incident(f"sl-{n}:a", "lighting.outage", n) for n in range(3)]
    state, events = feed(outages)
    again, events = feed(outages, state)
    assert events == []
    assert again.children == state.children


def test_area_keys() -> None:
    assert area_key("cell-a1", "kallio") == "district:kallio"
    assert area_key("cell-a1", None) == "cell:cell-a1"
    assert area_key(None, None) is None
    assert area_key_of(FLOOD_FACTS[0]) == "district:kallio"
    with pytest.raises(ValueError, match="no area"):
        correlate(
            RULES, None, FactChange(rule_id=RAIN, device_id="x", grid_cell=None, district=None, active=True, at=at(0))
        )


# --- the scenario: a hundred sensors in one flooded area ---------------------------------------------------------


def flooded_area() -> list[Reading]:
    """Two hours of a cloudburst over cell-a1: a rain gauge next door, 60 water-level gauges and 39 manhole covers."""
    items: list[Reading] = []
    for minute in range(0, 125, 5):
        items.append(
            reading(
                "rg-1",
                minute,
                {"rain_intensity_mmh": 35.0, "battery_pct": 90},
                device_type="rain_gauge",
                grid_cell="cell-b9",
            )
        )
        for gauge in range(60):
            level = max(0.0, (minute - gauge % 7) * 0.7)  # ~42 cm/h, the gauges a few minutes apart
            items.append(reading(f"wl-{gauge:02d}", minute, {"water_level_cm": level, "battery_pct": 90}))
        for cover in range(39):
            lifted = 1.0 if minute >= 20 + 5 * (cover % 8) else 0.0
            metrics = {"cover_open_flag": lifted, "cover_tilt_deg": 0.0, "battery_pct": 90}
            items.append(reading(f"mh-{cover:02d}", minute, metrics, device_type="manhole_cover"))
    return sorted(items, key=lambda item: (item.ts, item.device_id))


def test_a_hundred_sensors_in_one_flooded_area_make_one_flood() -> None:
    report = backtest(RULES, flooded_area())
    events = report.events
    device_opened = [event.incident for event in events if event.type is OPENED and event.kind is IncidentKind.DEVICE]
    assert len({incident.source for incident in device_opened}) == 99  # every gauge and cover has its incident
    [flood] = [event.incident for event in events if event.type is OPENED and event.incident.rule_id == FLOOD]
    parents = children_of(events)

    def root(incident_id: str) -> str:
        while incident_id in parents:
            incident_id = parents[incident_id]
        return incident_id

    assert {root(incident.id) for incident in device_opened} == {flood.id}
    assert report.summary.top_level == 1  # the wall shows one flood, not 99 alarms
    final_severity = [event.incident.severity for event in events if event.incident.id == flood.id][-1]
    assert final_severity is Severity.CRITICAL
    assert report.summary.opened_by_category["drainage.waterlogging"] == 60
    assert report.summary.opened_by_category["drainage.manhole_open"] == 39
