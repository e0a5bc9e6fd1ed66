"""Rule state as JSON for faust Tables: exact round trips, continuing after a restore, and its size."""

from __future__ import annotations

import json
from typing import Any

from domain.incident_events import FactChange, IncidentEvent
from rules.catalogue import load_rules
from rules.correlation import area_from_json, area_to_json, correlate
from rules.detection import DeviceState, evaluate, state_from_json, state_to_json
from tests.unit.rules.city import catalogue, facts, incident_events, reading, run, series
from tests.unit.rules.test_correlation import flooded_area

RULES = load_rules()


def through_json(data: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(data))
    return loaded


def test_a_device_state_survives_json_exactly_and_carries_on_the_same() -> None:
    items = series("wl-1", "water_level_cm", [0, 8, 16, 24, 32, 40, 12, 3, 2], extra={"battery_pct": 50})
    state, _ = run(RULES, items[:5])
    data = state_to_json(state)
    assert through_json(data) == through_json(through_json(data))  # nothing but JSON: a second trip is the identity
    restored = state_from_json(RULES, through_json(data))
    assert restored == state
    _, outputs = run(RULES, items[5:], state)
    _, restored_outputs = run(RULES, items[5:], restored)
    assert restored_outputs == outputs
    assert incident_events(outputs)


def test_window_and_flat_line_states_survive_json() -> None:
    items = [
        reading("aq-1", minute, {"pm25_ugm3": 80.0, "pm10_ugm3": 20.0, "no2_ugm3": 230.0}, device_type="air_quality")
        for minute in range(0, 24 * 60, 5)
    ]
    state, _ = run(RULES, items)
    restored = state_from_json(RULES, through_json(state_to_json(state)))
    assert restored == state
    size = len(json.dumps(state_to_json(state)))
    assert size < 16_000, size  # two 24-hour sliding windows (24 buckets each, checkpoint and current) dominate


def test_a_water_gauge_state_is_small() -> None:
    state, _ = run(RULES, series("wl-1", "water_level_cm", [1.0] * 20, extra={"battery_pct": 80}))
    assert len(json.dumps(state_to_json(state))) < 1_500


def test_a_state_saved_under_an_older_catalogue_is_realigned_on_the_next_reading() -> None:
    rule = """
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
    old = catalogue(rule.format(version=1), version=1)
    new = catalogue(rule.format(version=2), version=2)
    state, _ = run(old, series("wl-1", "water_level_cm", [20.0]))
    restored = state_from_json(new, through_json(state_to_json(state)))
    assert restored.catalogue_version == 0  # not aligned: the slot's rule version differs
    assert restored.slots[0].settled is None
    state, outputs = evaluate(new, restored, series("wl-1", "water_level_cm", [20.0], start=5)[0])
    assert [event.type.value for event in incident_events(outputs)] == ["closed", "opened"]
    # The realigned detector caught up on the pending readings: saving and restoring it changes nothing.
    assert state_from_json(new, through_json(state_to_json(state))) == state


def test_an_area_state_survives_json_exactly() -> None:
    area = None
    devices: dict[str, DeviceState] = {}
    for item in flooded_area()[:3000]:
        device, outputs = evaluate(RULES, devices.get(item.device_id), item)
        devices[item.device_id] = device
        told: list[FactChange | IncidentEvent] = [*facts(outputs), *incident_events(outputs)]
        for output in told:
            area, _ = correlate(RULES, area, output)
    assert area is not None
    assert area.parents
    assert area.children
    assert area.facts
    data = area_to_json(area)
    assert through_json(data) == data
    assert area_from_json(through_json(data)) == area
