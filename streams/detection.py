"""Detection, per device: the ``detect_incidents`` agent over ``readings`` and ``device.status`` (co-partitioned,
keyed by device id), the ``DeviceState`` table keyed by device id, and the timer that ticks devices whose
deadline has passed (silence, an unanswered Last Will, a cleared incident to close).

The agent is a thin loop around :mod:`rules.detection`; :class:`DeviceEngine` keeps the order in which outputs,
states and offsets become durable (streams/engine.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.readings import Reading, StatusChange
from domain.wire import WireError, decode_reading, decode_status
from rules.catalogue import RuleSet
from rules.clock import from_micros, micros_of
from rules.detection import DeviceState, acknowledge, evaluate, next_deadline, observe_status, tick
from rules.lifecycle import UnknownIncidentError
from streams.batching import ack_batch, batches
from streams.engine import Ack, KeyedEngine, deadline_us
from streams.outputs import Outbound, route_device_outputs

if TYPE_CHECKING:
    import faust

    from streams.app import StreamsContext

log = logging.getLogger(__name__)

DeviceRecord = Reading | StatusChange


class DeviceEngine(KeyedEngine[DeviceState]):
    name = "devices"

    def __init__(self, rules: RuleSet, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rules = rules

    def next_due(self, state: DeviceState) -> int | None:
        return deadline_us(next_deadline(self.rules, state))

    async def take(self, records: Sequence[DeviceRecord], *, full: bool, ack: Ack | None) -> None:
        """Judge a batch of readings and status changes, in their order (per device it is the partition's)."""
        rules = self.rules
        routes = self.routes
        metrics = self.metrics
        async with self.lock:
            with metrics.batch_seconds.labels(self.name).time():
                outbound: list[Outbound] = []
                newest = -1
                readings = 0
                for record in records:
                    key = record.device_id
                    before = state = self.state(key)
                    if isinstance(record, Reading):
                        state, outputs = evaluate(rules, state, record)
                        heard = micros_of(record.ingested_at, field="ingested_at")
                        readings += 1
                    else:
                        state, outputs = observe_status(rules, state, record)
                        heard = micros_of(record.ts, field="ts")
                    newest = max(newest, heard)
                    if state is not before:  # a rejected reading (duplicate, too late) changes nothing to write
                        self.put(key, state)
                    if outputs:
                        route_device_outputs(outputs, routes, outbound, metrics)
                metrics.records.labels("reading").inc(readings)
                metrics.records.labels("status").inc(len(records) - readings)
                await self.commit(outbound, ack)
            if newest >= 0:
                self.clock.observe_batch(full=full, newest_us=newest)

    async def acknowledge(self, device_id: str, incident_id: str, *, by: str, at: datetime) -> bool:
        """A person acknowledged one of this device's incidents. False if the engine no longer holds it."""
        async with self.lock:
            state = self.state(device_id)
            if state is None:
                return False
            try:
                state, events = acknowledge(self.rules, state, incident_id, by=by, at=at)
            except UnknownIncidentError:
                return False
            self.put(device_id, state)
            outbound: list[Outbound] = []
            route_device_outputs(events, self.routes, outbound, self.metrics)
            await self.commit(outbound, None)
            return True

    def tick_key(self, key: str, state: DeviceState, now_us: int, into: list[Outbound]) -> DeviceState:
        state, outputs = tick(self.rules, state, from_micros(now_us))
        route_device_outputs(outputs, self.routes, into, self.metrics)
        return state


def decode_device_record(topic: str, data: bytes, context: StreamsContext) -> DeviceRecord:
    """A record of ``readings`` or ``device.status``. A test channel carries no topic name; its records are told
    apart by shape (a status change has no metrics)."""
    if topic == context.config.readings_topic:
        return decode_reading(data)
    if topic == context.config.status_topic:
        return decode_status(data)
    return decode_reading(data) if b'"metrics"' in data else decode_status(data)


def install(app: faust.App, context: StreamsContext) -> None:
    config = context.config
    engine = context.devices
    metrics = context.metrics

    @app.agent(context.topics.device_inputs, name="detect_incidents", supervisor_strategy=context.supervisor)
    async def detect_incidents(stream: Any) -> Any:
        """Readings and status changes → incident events and fact changes, one DeviceState per device."""
        async for events in batches(stream, config.batch_size, config.batch_within_s):
            records: list[DeviceRecord] = []
            for event in events:
                message = event.message
                try:
                    records.append(decode_device_record(message.topic, message.value, context))
                except WireError as error:
                    # A producer bug, not device data (ingest validated it): skip it, loudly, and move on.
                    metrics.undecodable.labels(message.topic).inc()
                    log.error(
                        "record breaks the topic contract; skipped",
                        extra={"fields": {"topic": message.topic, "offset": message.offset, "error": str(error)[:300]}},
                    )

            async def ack(batch: list[Any] = events) -> None:
                await ack_batch(stream, batch, context.progress)

            await engine.take(records, full=len(events) >= config.batch_size, ack=ack)
            yield len(records)

    @app.timer(config.tick_interval_s, name="tick_devices")  # type: ignore[untyped-decorator]
    async def tick_devices() -> None:
        """Silence, unanswered Last Wills, incidents to close: only the devices whose deadline has passed."""
        await context.guarded(engine.tick)

    context.agents["detect_incidents"] = detect_incidents
