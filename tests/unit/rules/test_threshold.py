"""Threshold rules with hysteresis, debounce (N in a row, minimum duration), escalation, gaps and gates, judged
through the device engine reading by reading."""

from __future__ import annotations

import pytest

from domain.categories import Severity
from domain.incident_events import IncidentEventType
from domain.incidents import IncidentState
from domain.readings import Reading
from tests.unit.rules.city import at, catalogue, incident_events, kinds, reading, run, series

OPENED = IncidentEventType.OPENED
UPDATED = IncidentEventType.UPDATED
CLEARED = IncidentEventType.CLEARED

WATER = """
[[rule]]
id = "drainage.waterlogging.depth"
version = 1
title = "Waterlogging"
kind = "threshold"
device_types = ["water_level"]
metric = "water_level_cm"
above = 15.0
clear = 5.0
{debounce}
severity = "medium"
escalation = [{{ at = 30.0, severity = "high" }}, {{ at = 50.0, severity = "critical" }}]
category = "drainage.waterlogging"
"""

# (case, debounce fields, water levels every 5 min, expected (event, minute))
WATER_CASES = [
    ("exactly at the trigger opens", "", [14.9, 15.0], [(OPENED, 5)]),
    ("just below never opens", "", [14.99, 14.99, 14.99], []),
    ("the hysteresis band holds", "", [15, 10, 6, 5.01], [(OPENED, 0)]),
    ("exactly at the clear level clears", "", [15, 10, 5.0], [(OPENED, 0), (CLEARED, 10)]),
    ("below the clear level clears", "", [20, 1], [(OPENED, 0), (CLEARED, 5)]),
    ("three in a row", "for_count = 3", [16, 16, 16], [(OPENED, 10)]),
    ("a run broken by one reading", "for_count = 3", [16, 16, 4, 16, 16, 16], [(OPENED, 25)]),
    ("a reading in the band breaks a trigger run", "for_count = 2", [16, 10, 16, 16], [(OPENED, 15)]),
    ("minimum duration exactly", "for_s = 600", [16, 16, 16], [(OPENED, 10)]),
    ("minimum duration not reached", "for_s = 600", [16, 16], []),
    ("count and duration both", "for_count = 2\nfor_s = 600", [16, 16, 16], [(OPENED, 10)]),
    ("clear needs two in a row", "clear_for_count = 2", [16, 4, 16, 4, 4], [(OPENED, 0), (CLEARED, 20)]),
    ("clear needs a duration", "clear_for_s = 300", [16, 4, 4], [(OPENED, 0), (CLEARED, 10)]),
    ("severity rises", "", [16, 31, 20, 51], [(OPENED, 0), (UPDATED, 5), (UPDATED, 15)]),
    ("straight to critical", "", [55], [(OPENED, 0)]),
    (
        "opens again after clearing: a reopen",
        "",
        [16, 2, 16],
        [(OPENED, 0), (CLEARED, 5), (IncidentEventType.REOPENED, 10)],
    ),
]


@pytest.mark.parametrize(
    ("debounce", "levels", "expected"),
    [case[1:] for case in WATER_CASES],
    ids=[case[0] for case in WATER_CASES],
)
def test_waterlogging(debounce: str, levels: list[float], expected: list[tuple[IncidentEventType, int]]) -> None:
    rules = catalogue(WATER.format(debounce=debounce))
    _, outputs = run(rules, series("wl-1", "water_level_cm", levels))
    assert kinds(outputs) == [(kind, at(minute)) for kind, minute in expected]


def test_severity_follows_the_highest_level_and_never_falls() -> None:
    rules = catalogue(WATER.format(debounce=""))
    _, outputs = run(rules, series("wl-1", "water_level_cm", [16, 31, 20, 51, 40, 16]))
    severities = [event.incident.severity for event in incident_events(outputs)]
    assert severities == [Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]
    escalation = incident_events(outputs)[2]
    assert escalation.incident.evidence[-1].value == 51  # the reading that raised it is evidence
    assert escalation.detail == "water_level_cm = 51"


def test_the_opening_evidence_is_the_trigger_run() -> None:
    rules = catalogue(WATER.format(debounce="for_count = 3"))
    _, outputs = run(rules, series("wl-1", "water_level_cm", [2, 16, 17, 18]))
    [opened] = incident_events(outputs)
    assert [(item.ts, item.value) for item in opened.incident.evidence] == [(at(5), 16), (at(10), 17), (at(15), 18)]
    assert {item.device_id for item in opened.incident.evidence} == {"wl-1"}
    assert opened.incident.rule_id == "drainage.waterlogging.depth"
    assert opened.incident.rule_version == 1
    assert opened.incident.condition.startswith("water_level_cm ≥ 15 cm (3 readings in a row)")
    assert opened.incident.state is IncidentState.OPEN
    assert (opened.incident.grid_cell, opened.incident.district) == ("cell-a1", "kallio")


def test_a_gap_longer_than_three_intervals_breaks_a_run() -> None:
    rules = catalogue(WATER.format(debounce="for_count = 2"))  # water_level reports every 300 s
    gap = [reading("wl-1", 0, {"water_level_cm": 16}), reading("wl-1", 16, {"water_level_cm": 16})]
    _, outputs = run(rules, gap)
    assert kinds(outputs) == []
    just_within = [reading("wl-1", 0, {"water_level_cm": 16}), reading("wl-1", 15, {"water_level_cm": 16})]
    _, outputs = run(rules, just_within)
    assert kinds(outputs) == [(OPENED, at(15))]


def test_a_gap_does_not_clear_an_open_incident() -> None:
    rules = catalogue(WATER.format(debounce="clear_for_count = 2"))
    items = [
        reading("wl-1", 0, {"water_level_cm": 16}),
        reading("wl-1", 5, {"water_level_cm": 2}),
        reading("wl-1", 60, {"water_level_cm": 2}),  # the clear run starts again after the gap
        reading("wl-1", 65, {"water_level_cm": 2}),
    ]
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(OPENED, at(0)), (CLEARED, at(65))]


HYDRANT = """
[[rule]]
id = "fire.hydrant_pressure.low"
version = 1
title = "Hydrant pressure low"
kind = "threshold"
device_types = ["hydrant"]
metric = "pressure_kpa"
below = 140.0
clear = 160.0
severity = "medium"
escalation = [{ at = 100.0, severity = "high" }]
category = "fire.hydrant_pressure"
"""


@pytest.mark.parametrize(
    ("pressures", "expected"),
    [
        ([150, 140.0], [(OPENED, 15)]),
        ([150, 140.01], []),
        ([139, 150, 159.9], [(OPENED, 0)]),
        ([139, 160.0], [(OPENED, 0), (CLEARED, 15)]),
        ([139, 100], [(OPENED, 0), (UPDATED, 15)]),
    ],
    ids=["exactly at the trigger", "just above", "band holds", "exactly at clear", "escalates downward"],
)
def test_a_rule_below_a_level(pressures: list[float], expected: list[tuple[IncidentEventType, int]]) -> None:
    rules = catalogue(HYDRANT)
    items = series("hy-1", "pressure_kpa", pressures, every_minutes=15, device_type="hydrant")
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(kind, at(minute)) for kind, minute in expected]


STRAIN = """
[[rule]]
id = "roads.bridge_strain.limit"
version = 1
title = "Bridge strain"
kind = "threshold"
device_types = ["bridge_strain"]
metric = "strain_ue"
absolute = true
above = 800.0
clear = 600.0
for_count = 3
severity = "high"
category = "roads.bridge_strain"
"""


def test_absolute_values_catch_compression_and_tension() -> None:
    rules = catalogue(STRAIN)
    items = series("br-1", "strain_ue", [-850, 900, -800, 100], every_minutes=1, device_type="bridge_strain")
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(OPENED, at(2)), (CLEARED, at(3))]
    assert [item.value for item in incident_events(outputs)[0].incident.evidence] == [-850, 900, -800]


LAMP = """
[[rule]]
id = "lighting.outage.no_current"
version = 1
title = "Street light out"
kind = "threshold"
device_types = ["street_light"]
metric = "lamp_current_a"
below = 0.05
clear = 0.2
for_count = 2
only_when = { metric = "lamp_on_flag", above = 1.0 }
severity = "medium"
category = "lighting.outage"
"""


def test_a_lamp_is_judged_only_while_switched_on() -> None:
    rules = catalogue(LAMP)

    def lamp(minute: float, current: float, on: float) -> Reading:
        return reading("sl-1", minute, {"lamp_current_a": current, "lamp_on_flag": on}, device_type="street_light")

    daytime_off = [lamp(0, 0.0, 0), lamp(15, 0.0, 0), lamp(30, 0.0, 0)]
    _, outputs = run(rules, daytime_off)
    assert kinds(outputs) == []
    broken_at_dusk = [lamp(0, 0.0, 0), lamp(15, 0.01, 1), lamp(30, 0.0, 0), lamp(45, 0.02, 1), lamp(60, 0.3, 1)]
    _, outputs = run(rules, broken_at_dusk)
    # the off reading at 30 neither counts nor breaks the run; the repaired lamp clears it
    assert kinds(outputs) == [(OPENED, at(45)), (CLEARED, at(60))]


def test_a_reading_without_the_metric_changes_nothing() -> None:
    rules = catalogue(WATER.format(debounce="for_count = 2"))
    items = [
        reading("wl-1", 0, {"water_level_cm": 16}),
        reading("wl-1", 5, {"battery_pct": 50}),
        reading("wl-1", 10, {"water_level_cm": 16}),
    ]
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(OPENED, at(10))]
