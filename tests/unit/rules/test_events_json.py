"""The incident event and fact change on the wire: the JSON shape, exact times, round trips, and refusals."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from domain.incident_events import (
    EventDecodeError,
    FactChange,
    IncidentEvent,
    decode_event,
    decode_fact,
    encode_event,
    encode_fact,
    event_to_json,
)
from domain.readings import Reading
from rules.catalogue import load_rules
from rules.correlation import correlate
from rules.detection import acknowledge
from tests.unit.rules.city import at, facts, incident_events, run, series

RULES = load_rules()


def scenario() -> tuple[list[IncidentEvent], list[FactChange]]:
    """A gauge floods, rises, is acknowledged; with rain and a lifted cover nearby, a flood adopts it."""
    state, outputs = run(RULES, series("wl-1", "water_level_cm", [0, 8, 16, 24, 32, 40]))
    events = incident_events(outputs)
    state, told = acknowledge(RULES, state, events[0].incident.id, by="d.li", at=at(30))
    events += told
    nearby = [
        FactChange(rule_id=rule, device_id=device, grid_cell="cell-a1", district="kallio", active=True, at=at(0))
        for rule, device in (("drainage.rain.heavy", "rg-1"), ("drainage.manhole_open.flag", "mh-1"))
    ]
    area = None
    items: list[FactChange | IncidentEvent] = [*nearby, *facts(outputs), *events]
    for item in items:
        area, told = correlate(RULES, area, item)
        events += told
    return events, facts(outputs)


def test_the_json_shape_of_an_opened_event() -> None:
    events, _ = scenario()
    document = event_to_json(events[0])
    assert set(document) == {"type", "seq", "at", "kind", "flapping", "children", "detail", "incident"}
    assert (document["type"], document["seq"], document["kind"], document["at"]) == (
        "opened",
        1,
        "device",
        "2026-06-01T08:15:00.000000Z",
    )
    incident = document["incident"]
    assert set(incident) == {
        "id", "rule_id", "rule_version", "source", "category_code", "severity", "state", "title", "condition",
        "opened_at", "updated_at", "cleared_at", "closed_at", "acknowledged_at", "acknowledged_by", "position",
        "grid_cell", "district", "parent_id", "evidence",
    }  # fmt: skip
    assert incident["evidence"] == [
        {"device_id": "wl-1", "metric": "water_level_cm", "ts": "2026-06-01T08:10:00.000000Z", "value": 16.0},
        {"device_id": "wl-1", "metric": "water_level_cm", "ts": "2026-06-01T08:15:00.000000Z", "value": 24.0},
    ]
    assert json.loads(json.dumps(document)) == document


def test_every_event_and_fact_survives_the_wire() -> None:
    events, fact_changes = scenario()
    assert {event.type.value for event in events} >= {"opened", "updated", "acknowledged", "correlated"}
    for event in events:
        assert decode_event(encode_event(event)) == event
    for fact in fact_changes:
        assert decode_fact(encode_fact(fact)) == fact


def test_evidence_names_the_stored_reading_to_the_microsecond() -> None:
    moment = at(0) + timedelta(microseconds=123_457)
    item = Reading(
        device_id="gd-1",
        ts=moment,
        ingested_at=moment,
        metrics={"gas_lel_pct": 30.0},
        device_type="gas_detector",
        grid_cell="cell-a1",
        district="kallio",
    )
    _, outputs = run(RULES, [item])
    [event] = incident_events(outputs)
    decoded = decode_event(encode_event(event))
    assert decoded.incident.evidence[0].ts == moment
    assert decoded.incident.opened_at == moment


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"type": "exploded"}',
        encode_event(scenario()[0][0]).replace(b'"seq":1', b'"seq":"x"'),
    ],
    ids=["not json", "not an object", "empty", "unknown type", "seq not a number"],
)
def test_a_record_that_is_not_an_event_is_refused(data: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_event(data)


@pytest.mark.parametrize("data", [b"{", b"1", b'{"rule_id": "x"}'])
def test_a_record_that_is_not_a_fact_is_refused(data: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_fact(data)
