"""Correlation, per area: the ``correlate_incidents`` agent over ``incident.facts`` (fact changes and device
incident events, regrouped by area key), the ``AreaState`` table keyed by area key, and the timer that ticks areas
whose deadline has passed (remembered facts ageing out, parents clearing and closing).

A thin loop around :mod:`rules.correlation`; :class:`AreaEngine` keeps the delivery order of streams/engine.py.
Every composite and correlation event goes to ``incidents``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

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
from streams.batching import ack_batch, batches
from streams.engine import Ack, KeyedEngine, deadline_us
from streams.outputs import Outbound, route_area_events

if TYPE_CHECKING:
    import faust

    from streams.app import StreamsContext

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


def install(app: faust.App, context: StreamsContext) -> None:
    config = context.config
    engine = context.areas
    metrics = context.metrics

    @app.agent(context.topics.incident_facts, name="correlate_incidents", supervisor_strategy=context.supervisor)
    async def correlate_incidents(stream: Any) -> Any:
        """Fact changes and device incident events → composite and correlation incidents, one AreaState per area."""
        async for events in batches(stream, config.batch_size, config.batch_within_s):
            items: list[AreaInput] = []
            for event in events:
                message = event.message
                try:
                    items.append(decode_area_input(message.value))
                except EventDecodeError as error:
                    metrics.undecodable.labels(message.topic).inc()
                    log.error(
                        "record breaks the topic contract; skipped",
                        extra={"fields": {"topic": message.topic, "offset": message.offset, "error": str(error)[:300]}},
                    )

            async def ack(batch: list[Any] = events) -> None:
                await ack_batch(stream, batch, context.progress)

            await engine.take(items, full=len(events) >= config.batch_size, ack=ack)
            yield len(items)

    @app.timer(config.tick_interval_s, name="tick_areas")  # type: ignore[untyped-decorator]
    async def tick_areas() -> None:
        await context.guarded(engine.tick)

    context.agents["correlate_incidents"] = correlate_incidents
