"""Seam tests of the streams worker (streams/worker.py): records in, the engines' outputs out.

The worker is the real one (its engines, tables in memory, decoding and routing); only what leaves the process is
swapped: the sender (a recorder instead of the Kafka producer) and the projector (a list instead of PostgreSQL).
Records are handed to ``StreamsWorker.take`` as the Kafka consumer would hand them over.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError

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
from streams.outputs import Outbound, RecordingSender, StreamsMetrics
from streams.projection import ProjectionConsumer
from streams.worker import StreamsConfig, StreamsWorker

RULES = load_rules()
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class ListProjector:
    events: list[IncidentEvent] = field(default_factory=list)

    def write(self, events: Sequence[IncidentEvent]) -> int:
        fresh = [e for e in events if (e.incident.id, e.seq) not in {(x.incident.id, x.seq) for x in self.events}]
        self.events.extend(fresh)
        return len(fresh)


@dataclass(frozen=True)
class Record:
    """What aiokafka's ConsumerRecord gives the worker."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int = 0
    offset: int = 0


@dataclass
class Harness:
    worker: StreamsWorker
    sender: RecordingSender
    projector: ListProjector

    def incident_events(self) -> list[IncidentEvent]:
        return [decode_event(record.value) for record in self.sender.on("incidents")]

    async def put(self, topic: str, *values: bytes) -> None:
        """Each value as a batch of its own, in order (as the consumer hands over a stream of single records)."""
        for value in values:
            await self.worker.take([Record(topic, value)])


@pytest.fixture
def harness() -> Harness:
    sender = RecordingSender()
    projector = ListProjector()
    config = StreamsConfig(broker="127.0.0.1:9", tick_grace_s=0.0, idle_after_s=0.0)  # never reached
    worker = StreamsWorker(config, RULES, projector=projector, sender=sender)
    return Harness(worker, sender, projector)


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
    levels = [0, 20, 22, 35, 2]
    await harness.put(
        "readings", *(encode_reading(gauge("wl-1", minute, level)) for minute, level in enumerate(levels))
    )
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
    state = harness.worker.devices.store.get("wl-1")
    assert isinstance(state, DeviceState)
    assert state.latest >= 0


async def test_a_redelivered_reading_tells_nothing(harness: Harness) -> None:
    readings = [encode_reading(gauge("wl-2", minute, level)) for minute, level in enumerate([0, 20, 22])]
    await harness.put("readings", *readings)
    told = len(harness.sender.records)
    await harness.put("readings", *readings)  # at-least-once: the same records again after a restart
    assert len(harness.sender.records) == told
    assert harness.worker.metrics.rejected.labels("duplicate")._value.get() == 3


async def test_a_last_will_opens_an_offline_incident_at_its_grace_deadline(harness: Harness) -> None:
    reading = gauge("wl-3", 25, 1.0)  # heard five minutes ago: silence alone would wait 15 minutes
    will = StatusChange(device_id="wl-3", state=ConnectionState.OFFLINE, ts=NOW - timedelta(minutes=2))
    await harness.put("readings", encode_reading(reading))
    await harness.put("device.status", encode_status(will))
    assert harness.incident_events() == []
    assert await harness.worker.tick() == 1  # the timer: only the device that is due
    [opened] = harness.incident_events()
    assert opened.type is IncidentEventType.OPENED
    assert opened.incident.rule_id == "device.offline.silence"
    assert opened.at == will.ts + timedelta(seconds=60)  # the deadline, not the moment the timer ran
    assert await harness.worker.tick() == 0  # nothing else is due


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
    for item in items:
        assert area_key_of(item) == "district:kallio"
        await harness.put("incident.facts", encode_fact(item) if isinstance(item, FactChange) else encode_event(item))
    events = harness.incident_events()
    composites = [e for e in events if e.kind is IncidentKind.COMPOSITE]
    assert composites[0].type is IncidentEventType.OPENED
    assert composites[0].incident.rule_id == "drainage.flood.cell"
    adopted = {child for e in composites if e.type is IncidentEventType.CORRELATED for child in e.children}
    device_incidents = {i.incident.id for i in items if isinstance(i, IncidentEvent)}
    assert device_incidents
    assert device_incidents <= adopted
    assert harness.worker.areas.store.get("district:kallio") is not None


async def test_an_acknowledgement_reaches_the_device_engine_that_holds_the_incident(harness: Harness) -> None:
    await harness.put(
        "readings", *(encode_reading(gauge("wl-5", minute, level)) for minute, level in enumerate([0, 20, 22]))
    )
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
    unknown = {**payload, "incident_id": "no-such-incident"}
    await harness.put("incident.acks", json.dumps(payload).encode(), json.dumps(unknown).encode(), b"not json")
    acknowledged = [e for e in harness.incident_events() if e.type is IncidentEventType.ACKNOWLEDGED]
    assert [(e.incident.id, e.incident.acknowledged_by) for e in acknowledged] == [
        (opened.incident.id, "dispatcher:li")
    ]
    assert harness.worker.metrics.unknown_acks._value.get() == 1
    assert harness.worker.metrics.undecodable.labels("incident.acks")._value.get() == 1


async def test_incident_events_are_projected_and_a_broken_record_is_skipped(harness: Harness) -> None:
    levels = [0, 20, 22, 35, 2]
    await harness.put(
        "readings", *(encode_reading(gauge("wl-6", minute, level)) for minute, level in enumerate(levels))
    )
    told = harness.sender.on("incidents")
    metrics = StreamsMetrics()
    projection = ProjectionConsumer(
        broker="127.0.0.1:9", group_id="seam", topic="incidents", projector=harness.projector, metrics=metrics,
        batch_size=100,
    )  # fmt: skip
    records = [Record("incidents", r.value) for r in told] + [Record("incidents", b'{"type": "opened"}')]
    harness.projector.write(projection.decode(records))
    harness.projector.write(projection.decode([Record("incidents", r.value) for r in told]))  # a redelivery
    assert [(e.type, e.seq) for e in harness.projector.events] == [
        (decode_event(r.value).type, decode_event(r.value).seq) for r in told
    ]
    assert metrics.undecodable.labels("incidents")._value.get() == 1


async def test_a_record_that_breaks_its_topic_contract_is_skipped_and_the_rest_is_judged(harness: Harness) -> None:
    good = [encode_reading(gauge("wl-7", minute, level)) for minute, level in enumerate([0, 20, 22])]
    await harness.worker.take([Record("readings", b"{not json"), *(Record("readings", value) for value in good)])
    assert [e.type for e in harness.incident_events()] == [IncidentEventType.OPENED]
    assert harness.worker.metrics.undecodable.labels("readings")._value.get() == 1


async def test_a_batch_whose_outputs_kafka_refused_is_judged_again_with_the_same_result() -> None:
    # Delivery fails: the engines keep only what is durable, so the same batch taken again tells the same events.
    class FailingOnce(RecordingSender):
        failed = False

        async def deliver(self, records: Sequence[Outbound]) -> None:
            if not self.failed:
                self.failed = True
                raise KafkaConnectionError("broker restarting")
            await super().deliver(records)

    sender = FailingOnce()
    worker = StreamsWorker(StreamsConfig(broker="127.0.0.1:9"), RULES, projector=ListProjector(), sender=sender)
    batch = [
        Record("readings", encode_reading(gauge("wl-8", minute, level))) for minute, level in enumerate([0, 20, 22])
    ]
    with pytest.raises(KafkaConnectionError):
        await worker.take(batch)
    assert worker.devices.store.get("wl-8") is None  # nothing of the failed batch was kept
    await worker.take(batch)
    assert [decode_event(r.value).type for r in sender.on("incidents")] == [IncidentEventType.OPENED]
