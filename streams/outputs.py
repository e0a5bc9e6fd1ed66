"""What the engines tell, on its way to Kafka: routing of engine outputs to topics, and the sender that delivers
them and waits for the broker's acknowledgement.

Delivery comes before the state. An agent sends a batch's outputs and waits until the broker has them *before*
it writes the states that produced them to the table's changelog, so a state recovered after a crash never knows of
an output that was lost (docs/STREAMS.md, "Delivery"). The sender is an adapter passed in: faust topics in the
worker, a recorder in the seam tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import faust
from prometheus_client import CollectorRegistry, Counter, Histogram

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
    """Delivers through the faust app's producer (aiokafka: batched, lz4, acks=all), straight to the client.

    Not through faust's ``Topic.send_soon`` buffer (which ``table[key] = value`` uses): that buffer is drained one
    message per event-loop turn, and when it holds more than 100 messages faust pauses every stream until it
    drains, which at thousands of state writes a second stalled the worker (measured: 0.1 core busy, lag growing).
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def deliver(self, records: Sequence[Outbound]) -> None:
        if not records:
            return
        producer = self._app.producer
        pending = [
            await producer.send(record.topic, record.key.encode(), record.value, record.partition, None, None)
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
        self.rewinds = Counter(
            "cityops_streams_partition_rewinds",
            "partitions sought back to their committed offset after a record never reached an agent",
            ["topic"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "cityops_streams_batch_seconds",
            "time to judge a batch and deliver its outputs",
            ["engine"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
