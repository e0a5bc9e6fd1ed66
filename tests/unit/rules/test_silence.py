"""Offline detection: silence for k x the device's expected interval (on ingest time), and the MQTT Last Will,
with the grace a quick reconnect gets; births and readings clear it; retained statuses are not news."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.incident_events import IncidentEvent, IncidentEventType
from rules.catalogue import RuleSet
from rules.detection import DeviceState, next_deadline, observe_status, tick
from tests.unit.rules.city import at, catalogue, incident_events, kinds, reading, run, status

OPENED = IncidentEventType.OPENED
CLEARED = IncidentEventType.CLEARED

SILENCE = """
[[rule]]
id = "device.offline.silence"
version = 1
title = "Device offline"
kind = "silence"
device_types = ["*"]
intervals = 3
last_will = true
last_will_grace_s = {grace}
severity = "low"
category = "device.offline"
"""


def heard_once(grace: int = 60) -> tuple[RuleSet, DeviceState]:
    rules = catalogue(SILENCE.format(grace=grace))
    # A water-level gauge reports every 300 s: silent after 900 s from when the platform last heard it.
    state, _ = run(rules, [reading("wl-1", 0, {"water_level_cm": 1}, delay_s=2)])
    return rules, state


def test_silence_opens_at_the_deadline_not_at_the_tick() -> None:
    rules, state = heard_once()
    deadline = at(15, seconds=2)
    assert next_deadline(rules, state) == deadline
    assert tick(rules, state, deadline - timedelta(microseconds=1))[1] == ()
    for when in (deadline, deadline + timedelta(minutes=7)):
        _, told = tick(rules, state, when)
        [event] = told
        assert isinstance(event, IncidentEvent)
        assert (event.type, event.at, event.incident.opened_at) == (OPENED, deadline, deadline)
        assert [item.metric for item in event.incident.evidence] == ["water_level_cm"]  # the last reading heard


def test_the_next_reading_clears_it() -> None:
    rules, state = heard_once()
    state, _ = tick(rules, state, at(40))
    assert next_deadline(rules, state) is None
    state, outputs = run(rules, [reading("wl-1", 41, {"water_level_cm": 1}, delay_s=2)], state)
    assert kinds(outputs) == [(CLEARED, at(41, seconds=2))]
    assert next_deadline(rules, state) == at(56, seconds=2)


@pytest.mark.parametrize(("grace", "opens_at"), [(0, 10), (60, 11)])
def test_a_last_will_opens_it_after_the_grace(grace: int, opens_at: int) -> None:
    rules, state = heard_once(grace)
    state, told = observe_status(rules, state, status("wl-1", 10, online=False))
    if grace == 0:
        assert kinds(told) == [(OPENED, at(10))]
        return
    assert told == ()
    assert next_deadline(rules, state) == at(opens_at)
    _, told = tick(rules, state, at(12))
    assert kinds(told) == [(OPENED, at(opens_at))]
    assert "Last Will" in incident_events(told)[0].detail


def test_a_quick_reconnect_is_no_news() -> None:
    rules, state = heard_once(60)
    state, _ = observe_status(rules, state, status("wl-1", 10, online=False))
    state, told = observe_status(rules, state, status("wl-1", 10.5, online=True))
    assert told == ()
    assert tick(rules, state, at(12))[1] == ()


def test_a_birth_clears_it() -> None:
    rules, state = heard_once(0)
    state, _ = observe_status(rules, state, status("wl-1", 10, online=False))
    state, told = observe_status(rules, state, status("wl-1", 20, online=True))
    assert kinds(told) == [(CLEARED, at(20))]


def test_a_reading_heard_before_the_will_does_not_answer_it() -> None:
    rules, state = heard_once(0)
    state, _ = observe_status(rules, state, status("wl-1", 10, online=False))
    # Delivered after the Will (another topic), but the platform heard it before: the device is still gone.
    state, outputs = run(rules, [reading("wl-1", 5, {"water_level_cm": 1}, ingested_minutes=9)], state)
    assert kinds(outputs) == []
    state, outputs = run(rules, [reading("wl-1", 11, {"water_level_cm": 1}, ingested_minutes=11)], state)
    assert kinds(outputs) == [(CLEARED, at(11))]


def test_a_stale_will_is_ignored() -> None:
    rules, state = heard_once(0)
    state, told = observe_status(rules, state, status("wl-1", -5, online=False))
    assert told == ()
    assert state.will_at == -1


def test_retained_statuses_are_not_news() -> None:
    rules, state = heard_once(0)
    _, told = observe_status(rules, state, status("wl-1", 10, online=False, retained=True))
    assert told == ()
    # For a device this state knows nothing about, the retained Will is remembered; its type is unknown, so no
    # rule applies yet and nothing opens.
    fresh, told = observe_status(rules, None, status("wl-9", 10, online=False, retained=True))
    assert told == ()
    assert fresh.will_at > 0


def test_a_device_that_keeps_reporting_never_goes_offline() -> None:
    rules, state = heard_once()
    items = [reading("wl-1", minute, {"water_level_cm": 1}) for minute in range(5, 120, 5)]
    state, _ = run(rules, items, state)
    assert tick(rules, state, at(120))[1] == ()
