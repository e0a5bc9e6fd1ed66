"""Rate-of-change rules: the change per hour measured against the oldest reading within the look-back span."""

from __future__ import annotations

import pytest

from domain.incident_events import IncidentEventType
from tests.unit.rules.city import at, catalogue, kinds, reading, run, series

OPENED = IncidentEventType.OPENED
CLEARED = IncidentEventType.CLEARED

RISING = """
[[rule]]
id = "drainage.water_level.rising"
version = 1
title = "Water rising fast"
kind = "rate_of_change"
device_types = ["water_level"]
metric = "water_level_cm"
per = "hour"
over_s = 900
above = 20.0
clear = 5.0
for_count = {count}
severity = "low"
category = "drainage.waterlogging"
"""

CASES = [
    # every 15 min: the rate is measured against the reading 15 min before (exactly at the span's edge)
    ("exactly 20 cm/h opens", 1, 15, [0, 5], [(OPENED, 15)]),
    ("just under never opens", 1, 15, [0, 4.99, 9.98], []),
    ("the first reading has no rate", 1, 15, [100], []),
    ("the band holds", 1, 15, [0, 5, 7.5, 10], [(OPENED, 15)]),  # 10 cm/h stays open
    ("exactly 5 cm/h clears", 1, 15, [0, 5, 6.25], [(OPENED, 15), (CLEARED, 30)]),
    ("falling clears", 1, 15, [0, 5, 3], [(OPENED, 15), (CLEARED, 30)]),
    # every 5 min: against the oldest reading within the last 15 min
    ("two rates in a row", 2, 5, [0, 2, 4, 6], [(OPENED, 10)]),
    ("a slow stretch breaks the run", 2, 5, [0, 2, 2, 2, 2, 10, 18], [(OPENED, 30)]),
]


@pytest.mark.parametrize(
    ("count", "every", "levels", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_rate_of_change(
    count: int, every: float, levels: list[float], expected: list[tuple[IncidentEventType, int]]
) -> None:
    rules = catalogue(RISING.format(count=count))
    _, outputs = run(rules, series("wl-1", "water_level_cm", levels, every_minutes=every))
    assert kinds(outputs) == [(kind, at(minute)) for kind, minute in expected]


def test_a_gap_leaves_no_reading_to_compare_with() -> None:
    rules = catalogue(RISING.format(count=2))
    items = [
        reading("wl-1", 0, {"water_level_cm": 0}),
        reading("wl-1", 5, {"water_level_cm": 2}),  # 24 cm/h: one in a row
        reading("wl-1", 30, {"water_level_cm": 20}),  # nothing within 15 min before: no rate
        reading("wl-1", 35, {"water_level_cm": 22}),  # 24 cm/h, but the gap broke the run: one in a row again
        reading("wl-1", 40, {"water_level_cm": 24}),
    ]
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(OPENED, at(40))]
