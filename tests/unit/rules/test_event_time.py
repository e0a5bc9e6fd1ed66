"""Event time: readings within the allowed lateness are judged as if they had arrived in order; later ones are
reported and not applied; duplicates are ignored."""

from __future__ import annotations

from domain.incident_events import IncidentEventType, RejectionReason
from domain.readings import Reading
from rules.clock import to_micros
from tests.unit.rules.city import at, catalogue, incident_events, kinds, reading, rejections, run, series

OPENED = IncidentEventType.OPENED
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
for_count = 2
severity = "medium"
category = "drainage.waterlogging"
"""


def level(minute: float, value: float) -> Reading:
    return reading("wl-1", minute, {"water_level_cm": value})


def test_a_late_reading_that_completes_a_run_opens_at_its_own_time() -> None:
    rules = catalogue(WATER)  # allowed lateness 300 s
    _, outputs = run(rules, [level(0, 16), level(10, 2), level(5, 16)])
    # In event-time order: 16 at :00 and :05 open it at :05; 2 at :10 clears it.
    assert kinds(outputs) == [(OPENED, at(5)), (CLEARED, at(10))]


def test_a_late_reading_that_breaks_a_run_clears_what_order_would_not_have_opened() -> None:
    rules = catalogue(WATER)
    _, outputs = run(rules, [level(0, 16), level(10, 16), level(5, 2)])
    # Arrival order opened it at :10; the late 2 at :05 shows there never were two in a row.
    assert kinds(outputs) == [(OPENED, at(10)), (CLEARED, at(10))]


def test_the_verdict_after_disorder_equals_the_verdict_in_order() -> None:
    rules = catalogue(WATER)
    values = [16, 2, 16, 17, 3, 18, 19, 20, 4, 1]
    ordered = series("wl-1", "water_level_cm", values)
    shuffled = [
        ordered[1],
        ordered[0],
        ordered[3],
        ordered[2],
        ordered[5],
        ordered[4],
        ordered[6],
        ordered[8],
        ordered[7],
        ordered[9],
    ]
    in_order, _ = run(rules, ordered)
    disordered, _ = run(rules, shuffled)
    assert [slot.current for slot in disordered.slots] == [slot.current for slot in in_order.slots]
    assert [slot.settled for slot in disordered.slots] == [slot.settled for slot in in_order.slots]


def test_exactly_at_the_allowed_lateness_is_still_judged_and_beyond_is_too_late() -> None:
    rules = catalogue(WATER)
    state, outputs = run(rules, [level(0, 2), level(20, 2), level(15, 16)])
    assert rejections(outputs) == []
    _, outputs = run(rules, [level(14.99, 30)], state)
    [rejected] = rejections(outputs)
    assert rejected.reason is RejectionReason.TOO_LATE
    assert rejected.watermark == at(20)


def test_a_chatty_device_keeps_only_its_last_readings_for_lateness() -> None:
    # A device reporting every 10 s would keep 30 readings for a 300 s lateness; the span holds at most 4 here.
    rules = catalogue(WATER, max_readings=4)
    state, outputs = run(rules, [level(n / 6, 16 if n == 11 else 2) for n in range(12)])  # 0:00-1:50, every 10 s
    assert rejections(outputs) == []
    assert [ts for ts, _ in state.pending] == [to_micros(at(n / 6)) for n in range(8, 12)]
    # Within the span by age and newer than its oldest reading: judged in order; with the 16 at 1:50 it makes two
    # in a row, and the incident opens at 1:50.
    state, outputs = run(rules, [level(1.75, 16)], state)
    assert rejections(outputs) == []
    assert kinds(outputs) == [(OPENED, at(11 / 6))]
    # Within 300 s but older than every reading the full span holds: too late, although not by age.
    _, outputs = run(rules, [level(0.5, 40)], state)
    [rejected] = rejections(outputs)
    assert rejected.reason is RejectionReason.TOO_LATE
    assert incident_events(outputs) == []


def test_the_lateness_span_never_holds_more_than_its_bound() -> None:
    rules = catalogue(WATER, max_readings=3)
    readings = [level(n / 60, float(n % 20)) for n in range(50)]  # one a second
    state, _ = run(rules, readings)
    assert len(state.pending) == 3
    # What left the span early went into the checkpoint: the state is the one in-order arrival gives.
    ordered, _ = run(catalogue(WATER), readings)
    assert [slot.current for slot in state.slots] == [slot.current for slot in ordered.slots]


def test_a_too_late_reading_neither_reopens_nor_invents_an_incident() -> None:
    rules = catalogue(WATER)
    state, outputs = run(rules, [level(0, 16), level(5, 16), level(10, 1), level(60, 1)])
    assert [event.type for event in incident_events(outputs)] == [OPENED, CLEARED, IncidentEventType.CLOSED]
    _, outputs = run(rules, [level(20, 40), level(25, 40)], state)
    assert [item.reason for item in rejections(outputs)] == [RejectionReason.TOO_LATE] * 2
    assert incident_events(outputs) == []


def test_a_duplicate_is_ignored() -> None:
    rules = catalogue(WATER)
    state, _ = run(rules, [level(0, 16)])
    again, outputs = run(rules, [level(0, 16)], state)
    assert [item.reason for item in rejections(outputs)] == [RejectionReason.DUPLICATE]
    assert again == state


NO2 = """
[[rule]]
id = "environment.air_quality.no2_1h"
version = 1
title = "NO2"
kind = "window"
device_types = ["air_quality"]
metric = "no2_ugm3"
aggregate = "mean"
window_s = 3600
min_count = 9
above = 200.0
clear = 150.0
severity = "medium"
category = "environment.air_quality"
"""


def test_a_late_reading_completes_a_window_already_judged() -> None:
    rules = catalogue(NO2)
    hour = series("aq-1", "no2_ugm3", [250.0] * 12, device_type="air_quality")
    next_hour = series("aq-1", "no2_ugm3", [10.0], start=60, device_type="air_quality")
    # Only 8 of the hour's readings arrive in time for 09:00: no verdict. The 9th (08:55) arrives at 09:00:30.
    items = hour[:8] + next_hour + [hour[11]]
    _, outputs = run(rules, items)
    assert kinds(outputs) == [(OPENED, at(60))]
