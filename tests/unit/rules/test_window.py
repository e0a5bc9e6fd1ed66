"""Windowed aggregates on event time: tumbling and sliding windows, data validity, the energy mean of decibels,
and windows judged only in the city's local night hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.incident_events import IncidentEventType
from domain.readings import Reading
from tests.unit.rules.city import T0, at, catalogue, incident_events, kinds, run, series

OPENED = IncidentEventType.OPENED
UPDATED = IncidentEventType.UPDATED
CLEARED = IncidentEventType.CLEARED

NO2 = """
[[rule]]
id = "environment.air_quality.no2_1h"
version = 1
title = "NO2 hourly limit exceeded"
kind = "window"
device_types = ["air_quality"]
metric = "no2_ugm3"
aggregate = "{aggregate}"
window_s = 3600
{hop}
min_count = 9
above = {above}
clear = {clear}
severity = "medium"
escalation = [{{ at = 700.0, severity = "high" }}]
category = "environment.air_quality"
"""


def no2(values: list[float], *, start: float = 0.0) -> list[Reading]:
    return series("aq-1", "no2_ugm3", values, every_minutes=5, start=start, device_type="air_quality")


def hour_rule(aggregate: str = "mean", hop: str = "", above: float = 200.0, clear: float = 150.0) -> str:
    return NO2.format(aggregate=aggregate, hop=hop, above=above, clear=clear)


CASES = [
    ("an hour at 210 opens at the hour's end", [210.0] * 12 + [10.0], [(OPENED, 60)]),
    ("a mean of exactly 200 opens", [190.0, 210.0] * 6 + [10.0], [(OPENED, 60)]),
    ("a mean just under 200 does not", [199.99] * 12 + [10.0], []),
    ("the hour is not judged before the next one starts", [210.0] * 12, []),
    ("an hour with 8 readings is no verdict", [210.0] * 8, []),
    ("9 readings are enough", [210.0] * 9 + [None, None, None, 10.0], [(OPENED, 60)]),
    ("the next hour in the band holds", [210.0] * 12 + [170.0] * 12 + [10.0], [(OPENED, 60)]),
    ("the next hour at 150 clears", [210.0] * 12 + [150.0] * 12 + [10.0], [(OPENED, 60), (CLEARED, 120)]),
    ("an hour at 700 escalates", [210.0] * 12 + [700.0] * 12 + [10.0], [(OPENED, 60), (UPDATED, 120)]),
]


@pytest.mark.parametrize(("values", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hourly_mean(values: list[float | None], expected: list[tuple[IncidentEventType, int]]) -> None:
    rules = catalogue(hour_rule())
    items = [item for item, value in zip(no2([v or 0.0 for v in values]), values, strict=True) if value is not None]
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(kind, at(minute)) for kind, minute in expected]


def test_the_evidence_is_the_highest_reading_of_the_window() -> None:
    rules = catalogue(hour_rule())
    values = [205.0] * 12
    values[7] = 260.0
    _, outputs = run(rules, no2([*values, 10.0]))
    [opened] = incident_events(outputs)
    assert [(item.ts, item.value) for item in opened.incident.evidence] == [(at(35), 260.0)]
    assert "1 h mean of no2_ugm3" in opened.incident.condition


def test_a_gap_of_hours_judges_the_last_window_and_skips_the_empty_ones() -> None:
    rules = catalogue(hour_rule())
    _, outputs = run(rules, no2([210.0] * 12) + no2([10.0], start=300))
    assert kinds(outputs) == [(OPENED, at(60))]


def test_a_sliding_window_is_judged_every_hop() -> None:
    rules = catalogue(hour_rule(hop="hop_s = 900"))
    # Quiet until 08:30, loud 08:30-09:30, quiet after.
    values = [10.0] * 6 + [380.0] * 12 + [10.0] * 12
    _, outputs = run(rules, no2(values))
    # 08:00-09:00 has 6 loud readings of 12 (mean 195); 08:15-09:15 has 9 (287.5): judged at 09:15.
    # 09:00-10:00 (195) is in the band; 09:15-10:15 has 3 loud readings (102.5): cleared at 10:15.
    assert kinds(outputs) == [(OPENED, at(75)), (CLEARED, at(135))]


@pytest.mark.parametrize(("every", "expected"), [(5, []), (4, [(OPENED, 60)])], ids=["12 an hour", "15 an hour"])
def test_count_counts_readings(every: int, expected: list[tuple[IncidentEventType, int]]) -> None:
    rules = catalogue(hour_rule(aggregate="count", above=13, clear=12).replace("min_count = 9", "min_count = 1"))
    items = series("aq-1", "no2_ugm3", [1.0] * 18, every_minutes=every, device_type="air_quality")
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(kind, at(minute)) for kind, minute in expected]


NOISE = """
[[rule]]
id = "environment.night_noise.laeq"
version = 1
title = "Noise at night"
kind = "window"
device_types = ["noise"]
metric = "noise_dba"
aggregate = "{aggregate}"
window_s = 900
min_count = 10
{hours}
above = 55.0
clear = 50.0
for_count = {count}
severity = "medium"
category = "environment.night_noise"
"""


def noise(start: datetime, minutes: int, level: float | list[float]) -> list[Reading]:
    levels = level if isinstance(level, list) else [level] * minutes
    return [
        Reading(
            device_id="nz-1",
            ts=start + timedelta(minutes=index),
            ingested_at=start + timedelta(minutes=index, seconds=1),
            metrics={"noise_dba": value},
            device_type="noise",
            grid_cell="cell-a1",
            district="kallio",
        )
        for index, value in enumerate(levels)
    ]


def test_laeq_is_the_energy_mean_not_the_arithmetic_mean() -> None:
    # 14 minutes at 40 dB(A) and one at 70: arithmetic mean 42, LAeq 58.3 — a night-time disturbance.
    window = [40.0] * 14 + [70.0] + [40.0]
    energy = catalogue(NOISE.format(aggregate="energy_mean", hours="", count=1))
    arithmetic = catalogue(NOISE.format(aggregate="mean", hours="", count=1))
    assert kinds(run(energy, noise(T0, 16, window))[1]) == [(OPENED, at(15))]
    assert kinds(run(arithmetic, noise(T0, 16, window))[1]) == []


def test_night_noise_is_judged_in_the_citys_local_night() -> None:
    rules = catalogue(NOISE.format(aggregate="energy_mean", hours='local_hours = ["22:00", "07:00"]', count=2))
    # Helsinki is UTC+3 in June: the night is 19:00-04:00 UTC. Loud from 18:00 UTC to 05:00 UTC.
    evening = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)
    _, outputs = run(rules, noise(evening, 11 * 60 + 16, 62.0))
    assert kinds(outputs) == [
        (OPENED, datetime(2026, 6, 1, 19, 30, tzinfo=UTC)),  # two night windows: 22:00-22:15 and 22:15-22:30
        (CLEARED, datetime(2026, 6, 2, 4, 15, tzinfo=UTC)),  # the 07:00 window is day: the night is over
        (IncidentEventType.CLOSED, datetime(2026, 6, 2, 4, 45, tzinfo=UTC)),  # 30 min after it cleared
    ]


def test_local_hours_follow_daylight_saving_time() -> None:
    rules = catalogue(NOISE.format(aggregate="energy_mean", hours='local_hours = ["22:00", "07:00"]', count=1))
    # In January Helsinki is UTC+2: 22:00 local is 20:00 UTC.
    evening = datetime(2026, 1, 15, 19, 0, tzinfo=UTC)
    _, outputs = run(rules, noise(evening, 2 * 60, 62.0))
    assert kinds(outputs)[0] == (OPENED, datetime(2026, 1, 15, 20, 15, tzinfo=UTC))
