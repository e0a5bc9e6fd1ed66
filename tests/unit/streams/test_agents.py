"""Seam tests of the streams agents with faust's ``agent.test_context()``: records in, the engine's outputs out.

The app is the real one (streams.app.create_app, real faust tables in memory); only what leaves the process is
swapped: the sender (a recorder instead of the Kafka producer) and the projector (a list instead of PostgreSQL).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.incident_events import (
    FactChange,
    IncidentEvent,
    IncidentEventType,
    IncidentKind,
    area_key_of,
    decode_event,
    decode_fact,
    encode_event,
    encode_fact,
    format_time,
)
from domain.readings import ConnectionState, Reading, StatusChange
from domain.wire import encode_reading, encode_status
from rules.catalogue import load_rules
from rules.detection import DeviceState, evaluate
from streams.app import StreamsConfig, StreamsContext, create_app
from streams.outputs import RecordingSender

RULES = load_rules()
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class ListProjector:
    events: list[IncidentEvent] = field(default_factory=list)

    def write(self, events: Sequence[IncidentEvent]) -> int:
        fresh = [e for e in events if (e.incident.id, e.seq) not in {(x.incident.id, x.seq) for x in self.events}]
        self.events.extend(fresh)
        return len(fresh)


@dataclass
class Harness:
    context: StreamsContext
    sender: RecordingSender
    projector: ListProjector

    def incident_events(self) -> list[IncidentEvent]:
        return [decode_event(record.value) for record in self.sender.on("incidents")]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    sender = RecordingSender()
    projector = ListProjector()
    config = StreamsConfig(
        broker="127.0.0.1:9",  # never reached: nothing here talks to Kafka
        datadir=tmp_path / "faust",
        app_id=f"seam-{uuid.uuid4().hex[:8]}",
        batch_within_s=0.01,
        projection_within_s=0.01,
        tick_grace_s=0.0,
        idle_after_s=0.0,
    )
    context = create_app(config, RULES, projector=projector, sender=sender)
    context.app.finalize()
    yield Harness(context, sender, projector)
    # Acknowledging an event makes faust build its Kafka consumer, whose thread owns an event loop of its own
    # that nothing here starts or closes (no worker runs); close it, so that it is not left to the GC.
    consumer: Any = context.app._consumer
    if consumer is not None:
        consumer._thread.thread_loop.close()


def gauge(device: str, minutes: float, level: float, *, cell: str = "cell-a1", district: str = "kallio") -> Reading:
    ts = NOW - timedelta(minutes=30) + timedelta(minutes=minutes)
    return Reading(
        device_id=device,
        ts=ts,
        metrics={"water_level_cm": level, "battery_pct": 90.0},
        ingested_at=ts,
        device_type="water_level",
        grid_cell=cell,
        district=district,
    )


async def test_a_gauge_crossing_the_threshold_opens_updates_and_clears_one_incident(harness: Harness) -> None:
    agent = harness.context.agents["detect_incidents"]
    levels = [0, 20, 22, 35, 2]
    async with agent.test_context() as detect:
        for minute, level in enumerate(levels):
            await detect.put(encode_reading(gauge("wl-1", minute, level)), key=b"wl-1")
    events = harness.incident_events()
    assert [(e.type, e.seq) for e in events] == [
        (IncidentEventType.OPENED, 1),
        (IncidentEventType.UPDATED, 2),
        (IncidentEventType.CLEARED, 3),
    ]
    assert {e.incident.id for e in events} == {events[0].incident.id}
    assert all(r.key == events[0].incident.id for r in harness.sender.on("incidents"))
    # The area engine hears every device incident event and every fact, keyed by the area.
    facts_topic = harness.sender.on("incident.facts")
    assert {r.key for r in facts_topic} == {"district:kallio"}
    assert sum(1 for r in facts_topic if b'"incident"' in r.value) == 3
    assert any(
        decode_fact(r.value).rule_id == "drainage.water_level.rising"
        for r in facts_topic
        if b'"incident"' not in r.value
    )
    # The state is in the table (written once per batch), decoded.
    state = harness.context.devices.store.get("wl-1")
    assert isinstance(state, DeviceState)
    assert state.latest >= 0


async def test_a_redelivered_reading_tells_nothing(harness: Harness) -> None:
    agent = harness.context.agents["detect_incidents"]
    readings = [gauge("wl-2", minute, level) for minute, level in enumerate([0, 20, 22])]
    async with agent.test_context() as detect:
        for reading in readings:
            await detect.put(encode_reading(reading), key=b"wl-2")
        told = len(harness.sender.records)
        for reading in readings:  # at-least-once: the same records again after a restart
            await detect.put(encode_reading(reading), key=b"wl-2")
    assert len(harness.sender.records) == told
    assert harness.context.metrics.rejected.labels("duplicate")._value.get() == 3


async def test_a_last_will_opens_an_offline_incident_at_its_grace_deadline(harness: Harness) -> None:
    agent = harness.context.agents["detect_incidents"]
    reading = gauge("wl-3", 25, 1.0)  # heard five minutes ago: silence alone would wait 15 minutes
    will = StatusChange(device_id="wl-3", state=ConnectionState.OFFLINE, ts=NOW - timedelta(minutes=2))
    async with agent.test_context() as detect:
        await detect.put(encode_reading(reading), key=b"wl-3")
        await detect.put(encode_status(will), key=b"wl-3")
    assert harness.incident_events() == []
    assert await harness.context.devices.tick() == 1  # the timer: only the device that is due
    [opened] = harness.incident_events()
    assert opened.type is IncidentEventType.OPENED
    assert opened.incident.rule_id == "device.offline.silence"
    assert opened.at == will.ts + timedelta(seconds=60)  # the deadline, not the moment the timer ran
    assert await harness.context.devices.tick() == 0  # nothing else is due


async def test_facts_of_one_cell_make_a_composite_that_adopts_its_device_incidents(harness: Harness) -> None:
    state: dict[str, DeviceState | None] = {}
    items: list[FactChange | IncidentEvent] = []
    for minute in range(0, 40, 5):
        rain = Reading(
            device_id="rg-1",
            ts=NOW - timedelta(minutes=45 - minute),
            metrics={"rain_intensity_mmh": 35.0},
            ingested_at=NOW,
            device_type="rain_gauge",
            grid_cell="cell-b9",
            district="kallio",
        )
        cover = Reading(
            device_id="mh-1",
            ts=NOW - timedelta(minutes=45 - minute),
            metrics={"cover_open_flag": 1.0 if minute >= 15 else 0.0, "cover_tilt_deg": 0.0},
            ingested_at=NOW,
            device_type="manhole_cover",
            grid_cell="cell-a1",
            district="kallio",
        )
        for reading in (rain, gauge("wl-4", minute - 15, minute * 0.7), cover):
            new_state, outputs = evaluate(RULES, state.get(reading.device_id), reading)
            state[reading.device_id] = new_state
            items += [o for o in outputs if isinstance(o, FactChange | IncidentEvent)]
    assert items
    agent = harness.context.agents["correlate_incidents"]
    async with agent.test_context() as correlate:
        for item in items:
            value = encode_fact(item) if isinstance(item, FactChange) else encode_event(item)
            key = area_key_of(item)
            assert key == "district:kallio"
            await correlate.put(value, key=key.encode())
    events = harness.incident_events()
    composites = [e for e in events if e.kind is IncidentKind.COMPOSITE]
    assert composites[0].type is IncidentEventType.OPENED
    assert composites[0].incident.rule_id == "drainage.flood.cell"
    adopted = {child for e in composites if e.type is IncidentEventType.CORRELATED for child in e.children}
    device_incidents = {i.incident.id for i in items if isinstance(i, IncidentEvent)}
    assert device_incidents
    assert device_incidents <= adopted
    assert harness.context.areas.store.get("district:kallio") is not None


async def test_an_acknowledgement_reaches_the_device_engine_that_holds_the_incident(harness: Harness) -> None:
    detect = harness.context.agents["detect_incidents"]
    async with detect.test_context() as agent:
        for minute, level in enumerate([0, 20, 22]):
            await agent.put(encode_reading(gauge("wl-5", minute, level)), key=b"wl-5")
    [opened] = harness.incident_events()
    payload = {
        "incident_id": opened.incident.id,
        "kind": "device",
        "source": "wl-5",
        "grid_cell": "cell-a1",
        "district": "kallio",
        "by": "dispatcher:li",
        "at": format_time(NOW),
    }
    acknowledge = harness.context.agents["acknowledge_incidents"]
    async with acknowledge.test_context() as agent:
        await agent.put(json.dumps(payload).encode(), key=b"wl-5")
        unknown = {**payload, "incident_id": "no-such-incident"}
        await agent.put(json.dumps(unknown).encode(), key=b"wl-5")
        await agent.put(b"not json", key=b"wl-5")
    acknowledged = [e for e in harness.incident_events() if e.type is IncidentEventType.ACKNOWLEDGED]
    assert [(e.incident.id, e.incident.acknowledged_by) for e in acknowledged] == [
        (opened.incident.id, "dispatcher:li")
    ]
    assert harness.context.metrics.unknown_acks._value.get() == 1
    assert harness.context.metrics.undecodable.labels("incident.acks")._value.get() == 1


async def test_incident_events_are_projected_and_a_broken_record_is_skipped(harness: Harness) -> None:
    detect = harness.context.agents["detect_incidents"]
    async with detect.test_context() as agent:
        for minute, level in enumerate([0, 20, 22, 35, 2]):
            await agent.put(encode_reading(gauge("wl-6", minute, level)), key=b"wl-6")
    told = harness.sender.on("incidents")
    project = harness.context.agents["project_incidents"]
    async with project.test_context() as agent:
        for record in told:
            await agent.put(record.value, key=record.key.encode())
        await agent.put(b'{"type": "opened"}', key=b"broken")
        for record in told:  # a redelivery
            await agent.put(record.value, key=record.key.encode())
    assert [(e.type, e.seq) for e in harness.projector.events] == [
        (decode_event(r.value).type, decode_event(r.value).seq) for r in told
    ]
