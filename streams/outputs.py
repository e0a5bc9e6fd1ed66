"""What the engines tell, on its way to Kafka: routing of engine outputs to topics, and the sender that delivers
them and waits for the broker's acknowledgement.

Delivery comes before the state. An agent sends a batch's outputs and waits until the broker has them *before*
it writes the states that produced them to the table's changelog, so a state recovered after a crash never knows of
an output that was lost (docs/STREAMS.md, "Delivery"). The sender is an adapter passed in: the worker's Kafka
producer, a recorder in the seam tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from domain.incident_events import (
    DeviceOutput,
    FactChange,
    IncidentEvent,
    IncidentKind,
    ReadingRejected,
    area_key_of,
    encode_event,
    encode_fact,
)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One record to produce."""

    topic: str
    key: str
    value: bytes
    partition: int | None = None  # None: Kafka's default partitioner picks it from the key


class Sender(Protocol):
    async def deliver(self, records: Sequence[Outbound]) -> None:
        """Produce every record and return once the broker acknowledged all of them (raise if it did not)."""


class ProducerSender:
    """Delivers through an aiokafka producer (idempotent, acks=all, batched, lz4): every record is sent, then all
    acknowledgements are awaited together, so a batch of outputs costs one broker round trip, not one per record.
    The producer is attached once the event loop runs (aiokafka objects belong to a loop)."""

    def __init__(self, producer: AIOKafkaProducer | None = None) -> None:
        self.producer = producer

    async def deliver(self, records: Sequence[Outbound]) -> None:
        if not records:
            return
        assert self.producer is not None, "no producer attached"
        send = self.producer.send
        pending = [
            await send(record.topic, value=record.value, key=record.key.encode(), partition=record.partition)
            for record in records
        ]
        await asyncio.gather(*pending)


@dataclass
class RecordingSender:
    """A sender for seam tests: keeps what would have been produced."""

    records: list[Outbound] = field(default_factory=list)

    async def deliver(self, records: Sequence[Outbound]) -> None:
        self.records.extend(records)

    def on(self, topic: str) -> list[Outbound]:
        return [record for record in self.records if record.topic == topic]


@dataclass(frozen=True, slots=True)
class Routes:
    """Topic names the engines' outputs go to."""

    incidents: str
    facts: str


def route_device_outputs(
    outputs: Iterable[DeviceOutput], routes: Routes, into: list[Outbound], metrics: StreamsMetrics
) -> None:
    """docs/RULES.md, "The API for streams/": incident events to ``incidents`` (key: the incident id); device incident
    events and fact changes also to the facts topic (key: the area key) for the area engine; rejections counted."""
    for output in outputs:
        if isinstance(output, IncidentEvent):
            value = encode_event(output)
            into.append(Outbound(routes.incidents, output.key, value))
            metrics.incident_events.labels(output.kind.value, output.type.value).inc()
            if output.kind is IncidentKind.DEVICE:
                area = area_key_of(output)
                if area is not None:
                    into.append(Outbound(routes.facts, area, value))
        elif isinstance(output, FactChange):
            area = area_key_of(output)
            metrics.facts.inc()
            if area is not None:
                into.append(Outbound(routes.facts, area, encode_fact(output)))
        elif isinstance(output, ReadingRejected):
            metrics.rejected.labels(output.reason.value).inc()


def route_area_events(
    events: Iterable[IncidentEvent], routes: Routes, into: list[Outbound], metrics: StreamsMetrics
) -> None:
    for event in events:
        into.append(Outbound(routes.incidents, event.key, encode_event(event)))
        metrics.incident_events.labels(event.kind.value, event.type.value).inc()


@dataclass
class StreamsMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.records = Counter("cityops_streams_records", "input records taken by an engine", ["kind"], registry=r)
        self.undecodable = Counter(
            "cityops_streams_undecodable", "records that break their topic's contract (skipped)", ["topic"], registry=r
        )
        self.rejected = Counter("cityops_streams_readings_rejected", "readings not judged", ["reason"], registry=r)
        self.incident_events = Counter(
            "cityops_streams_incident_events", "incident events told", ["kind", "type"], registry=r
        )
        self.facts = Counter("cityops_streams_fact_changes", "fact changes told to the area engine", registry=r)
        self.ticks = Counter("cityops_streams_ticks", "keys ticked by a timer", ["engine"], registry=r)
        self.unknown_acks = Counter(
            "cityops_streams_acks_unknown", "acknowledgements of incidents the engine no longer holds", registry=r
        )
        self.state_writes = Counter(
            "cityops_streams_state_writes", "states written to a changelog", ["engine"], registry=r
        )
        self.projected = Counter("cityops_streams_projected", "incident events projected into PostgreSQL", registry=r)
        self.rebalances = Counter(
            "cityops_streams_assignments", "partition assignments taken (each recovers the states)", registry=r
        )
        self.recovered_records = Counter(
            "cityops_streams_changelog_records_recovered",
            "changelog records read at assignments",
            ["table"],
            registry=r,
        )
        self.recovery_seconds = Histogram(
            "cityops_streams_recovery_seconds",
            "time to read the owned partitions' changelogs after an assignment",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.delivery_retries = Counter(
            "cityops_streams_delivery_retries",
            "batches judged again because Kafka did not acknowledge their outputs or states",
            registry=r,
        )
        self.assigned = Gauge("cityops_streams_assigned_partitions", "input partitions this worker owns", registry=r)
        self.lag = Gauge(
            "cityops_streams_consumer_lag",
            "records behind the end of an input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "cityops_streams_batch_seconds",
            "time to judge a batch and deliver its outputs",
            ["engine"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
