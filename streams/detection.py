"""Detection, per device: the engine over ``readings`` and ``device.status`` (co-partitioned, keyed by device id),
with one ``DeviceState`` per device id, ticked when a deadline has passed (silence, an unanswered Last Will, a
cleared incident to close).

A thin layer around :mod:`rules.detection`; :class:`~streams.engine.KeyedEngine` keeps the order in which outputs,
states and offsets become durable, and streams/worker.py feeds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.readings import Reading, StatusChange
from rules.catalogue import RuleSet
from rules.clock import from_micros, micros_of
from rules.detection import DeviceState, acknowledge, evaluate, next_deadline, observe_status, tick
from rules.lifecycle import UnknownIncidentError
from streams.engine import Ack, KeyedEngine, deadline_us
from streams.outputs import Outbound, route_device_outputs

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
