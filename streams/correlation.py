"""Correlation, per area: the engine over ``incident.facts`` (fact changes and device incident events, regrouped by
area key), with one ``AreaState`` per area key, ticked when a deadline has passed (remembered facts ageing out,
parents clearing and closing).

A thin loop around :mod:`rules.correlation`; :class:`AreaEngine` keeps the delivery order of streams/engine.py.
Every composite and correlation event goes to ``incidents``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from domain.incident_events import (
    EventDecodeError,
    FactChange,
    IncidentEvent,
    IncidentKind,
    area_key_of,
    event_from_json,
    fact_from_json,
)
from rules.catalogue import RuleSet
from rules.clock import from_micros, micros_of
from rules.correlation import AreaState, acknowledge_in_area, correlate, next_area_deadline, tick_area
from rules.lifecycle import UnknownIncidentError
from streams.engine import Ack, KeyedEngine, deadline_us
from streams.outputs import Outbound, route_area_events

log = logging.getLogger(__name__)

AreaInput = FactChange | IncidentEvent


class AreaEngine(KeyedEngine[AreaState]):
    name = "areas"

    def __init__(self, rules: RuleSet, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rules = rules

    def next_due(self, state: AreaState) -> int | None:
        return deadline_us(next_area_deadline(self.rules, state))

    async def take(self, items: Sequence[AreaInput], *, full: bool, ack: Ack | None) -> None:
        rules = self.rules
        async with self.lock:
            with self.metrics.batch_seconds.labels(self.name).time():
                outbound: list[Outbound] = []
                newest = -1
                for item in items:
                    key = area_key_of(item)
                    if key is None:
                        continue  # placed nowhere: takes part in no composite (the device engine routes none such)
                    before = self.state(key)
                    state, events = correlate(rules, before, item)
                    if state != before:  # correlate rebuilds the state; an ignored input leaves it equal
                        self.put(key, state)
                    newest = max(newest, micros_of(item.at, field="at"))
                    route_area_events(events, self.routes, outbound, self.metrics)
                self.metrics.records.labels("area_input").inc(len(items))
                await self.commit(outbound, ack)
            if newest >= 0:
                self.clock.observe_batch(full=full, newest_us=newest)

    async def acknowledge(self, key: str, incident_id: str, *, by: str, at: datetime) -> bool:
        async with self.lock:
            state = self.state(key)
            if state is None:
                return False
            try:
                state, events = acknowledge_in_area(self.rules, state, incident_id, by=by, at=at)
            except UnknownIncidentError:
                return False
            self.put(key, state)
            outbound: list[Outbound] = []
            route_area_events(events, self.routes, outbound, self.metrics)
            await self.commit(outbound, None)
            return True

    def tick_key(self, key: str, state: AreaState, now_us: int, into: list[Outbound]) -> AreaState:
        state, events = tick_area(self.rules, state, from_micros(now_us))
        route_area_events(events, self.routes, into, self.metrics)
        return state


def decode_area_input(data: bytes) -> AreaInput:
    """A record of ``incident.facts``: an incident event if it has an ``incident`` member, else a fact change."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise EventDecodeError(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise EventDecodeError("a record of the facts topic is a JSON object")
    if "incident" in document:
        event = event_from_json(document)
        if event.kind is not IncidentKind.DEVICE:
            raise EventDecodeError(f"the facts topic carries device incident events, not {event.kind.value}")
        return event
    return fact_from_json(document)
