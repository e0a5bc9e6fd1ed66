"""Flat-line (stuck sensor) rules: no change beyond epsilon for a period, over enough readings."""

from __future__ import annotations

import pytest

from domain.incident_events import IncidentEventType
from tests.unit.rules.city import at, catalogue, incident_events, kinds, run, series

OPENED = IncidentEventType.OPENED
CLEARED = IncidentEventType.CLEARED

STUCK = """
[[rule]]
id = "device.stuck_sensor.noise"
version = 1
title = "Noise sensor stuck"
kind = "flat_line"
device_types = ["noise"]
metric = "noise_dba"
epsilon = 0.125
for_s = 3600
min_count = {min_count}
severity = "low"
category = "device.stuck_sensor"
"""

CASES = [
    ("an hour flat, exactly", 30, 1, [50.0] * 61, [(OPENED, 60)]),
    ("a minute short", 30, 1, [50.0] * 60, []),
    ("change exactly epsilon is still flat", 30, 1, [50.0, 50.125] * 31, [(OPENED, 60)]),
    ("change beyond epsilon is alive", 30, 1, [50.0, 50.25] * 31, []),
    ("a slow drift past epsilon restarts the run", 30, 1, [50.0] * 30 + [50.25] * 31, []),
    ("too few readings", 30, 10, [50.0] * 7, []),
    ("a live reading clears", 30, 1, [50.0] * 61 + [57.0], [(OPENED, 60), (CLEARED, 61)]),
]


@pytest.mark.parametrize(
    ("min_count", "every", "levels", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_stuck_sensor(
    min_count: int, every: float, levels: list[float], expected: list[tuple[IncidentEventType, int]]
) -> None:
    rules = catalogue(STUCK.format(min_count=min_count))
    _, outputs = run(rules, series("nz-1", "noise_dba", levels, every_minutes=every, device_type="noise"))
    assert kinds(outputs) == [(kind, at(minute)) for kind, minute in expected]


def test_the_evidence_is_the_first_and_the_last_flat_reading() -> None:
    rules = catalogue(STUCK.format(min_count=30))
    _, outputs = run(rules, series("nz-1", "noise_dba", [60.0] + [50.0] * 61, every_minutes=1, device_type="noise"))
    [event] = incident_events(outputs)
    assert [(item.ts, item.value) for item in event.incident.evidence] == [(at(1), 50.0), (at(61), 50.0)]
