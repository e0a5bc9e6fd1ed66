"""Backtest: replay stored readings and status changes through the same pure rule code that runs live, and report
which incident events would have fired. No side effects: every state lives in this call and is dropped with it.

    report = backtest(rules, records)          # records: Readings and StatusChanges, ordered by event time
    report.events, report.summary

Time in a replay is the records' own: before each record, every device and area whose deadline (silence, an
unanswered Last Will, a remembered fact ageing out, a cleared incident closing) has passed is ticked *at that
deadline*, which is what a live worker ticking often enough would do. Device outputs are handed to the area engine
in order, as the facts topic and the incidents topic would. Pass ``until`` to let time run on after the last record
(e.g. to see which incidents would have closed).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from domain.incident_events import (
    DeviceOutput,
    FactChange,
    IncidentEvent,
    IncidentEventType,
    IncidentKind,
    ReadingRejected,
    RejectionReason,
    area_key_of,
)
from domain.incidents import IncidentState
from domain.readings import Reading, StatusChange
from rules.catalogue import RuleSet
from rules.clock import from_micros, micros_of
from rules.correlation import AreaState, children_of, correlate, next_area_deadline, tick_area
from rules.detection import DeviceState, evaluate, next_deadline, observe_status, tick


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestSummary:
    readings: int
    status_changes: int
    too_late: int
    duplicates: int
    first_event_time: datetime | None
    last_event_time: datetime | None
    events_by_type: Mapping[str, int]
    opened_by_rule: Mapping[str, int]
    opened_by_category: Mapping[str, int]
    opened: int  # incidents opened, of every kind
    top_level: int  # opened incidents that ended with no parent: what the wall would have listed
    still_open: int  # opened incidents not closed at the end of the replay


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestReport:
    events: tuple[IncidentEvent, ...]
    facts: tuple[FactChange, ...]
    rejected: tuple[ReadingRejected, ...]
    summary: BacktestSummary


def backtest(
    rules: RuleSet, records: Iterable[Reading | StatusChange], *, until: datetime | None = None
) -> BacktestReport:
    replay = _Replay(rules)
    for record in records:
        replay.take(record)
    if until is not None:
        replay.run_timers(micros_of(until, field="until"))
    return replay.report()


class _Replay:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.devices: dict[str, DeviceState] = {}
        self.areas: dict[str, AreaState] = {}
        self.timers: list[tuple[int, int, str, str]] = []  # (when µs, tie-break, "device" | "area", key)
        self.scheduled: dict[tuple[str, str], int] = {}
        self.sequence = 0
        self.events: list[IncidentEvent] = []
        self.facts: list[FactChange] = []
        self.rejected: list[ReadingRejected] = []
        self.readings = 0
        self.status_changes = 0
        self.first: datetime | None = None
        self.last: datetime | None = None

    def take(self, record: Reading | StatusChange) -> None:
        self.run_timers(micros_of(record.ts, field="ts"))
        if self.first is None or record.ts < self.first:
            self.first = record.ts
        if self.last is None or record.ts > self.last:
            self.last = record.ts
        state = self.devices.get(record.device_id)
        outputs: tuple[DeviceOutput, ...]
        if isinstance(record, Reading):
            self.readings += 1
            state, outputs = evaluate(self.rules, state, record)
        else:
            self.status_changes += 1
            state, outputs = observe_status(self.rules, state, record)
        self.devices[record.device_id] = state
        self._schedule("device", record.device_id, next_deadline(self.rules, state))
        self.route(outputs)

    def run_timers(self, now: int) -> None:
        while self.timers and self.timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(self.timers)
            if self.scheduled.get((kind, key)) != when:
                continue  # superseded by a later schedule
            del self.scheduled[(kind, key)]
            moment = from_micros(when)
            if kind == "device":
                device, outputs = tick(self.rules, self.devices[key], moment)
                self.devices[key] = device
                self._schedule(kind, key, next_deadline(self.rules, device), after=when)
                self.route(outputs)
            else:
                area, told = tick_area(self.rules, self.areas[key], moment)
                self.areas[key] = area
                self._schedule(kind, key, next_area_deadline(self.rules, area), after=when)
                self.events.extend(told)

    def route(self, outputs: Iterable[DeviceOutput]) -> None:
        for output in outputs:
            if isinstance(output, ReadingRejected):
                self.rejected.append(output)
                continue
            if isinstance(output, IncidentEvent):
                self.events.append(output)
                if output.kind is not IncidentKind.DEVICE:
                    continue
            else:
                self.facts.append(output)
            key = area_key_of(output)
            if key is None:
                continue
            area, told = correlate(self.rules, self.areas.get(key), output)
            self.areas[key] = area
            self.events.extend(told)
            self._schedule("area", key, next_area_deadline(self.rules, area))

    def _schedule(self, kind: str, key: str, moment: datetime | None, *, after: int = -1) -> None:
        if moment is None:
            self.scheduled.pop((kind, key), None)
            return
        when = micros_of(moment, field="deadline")
        if when <= after:  # a timer that would not move time on: nothing more is due
            self.scheduled.pop((kind, key), None)
            return
        self.scheduled[(kind, key)] = when
        self.sequence += 1
        heapq.heappush(self.timers, (when, self.sequence, kind, key))

    def report(self) -> BacktestReport:
        opened = [event.incident for event in self.events if event.type is IncidentEventType.OPENED]
        parents = children_of(self.events)
        last_state: dict[str, IncidentState] = {}
        for event in self.events:
            last_state[event.incident.id] = event.incident.state
        summary = BacktestSummary(
            readings=self.readings,
            status_changes=self.status_changes,
            too_late=sum(1 for item in self.rejected if item.reason is RejectionReason.TOO_LATE),
            duplicates=sum(1 for item in self.rejected if item.reason is RejectionReason.DUPLICATE),
            first_event_time=self.first,
            last_event_time=self.last,
            events_by_type=dict(Counter(event.type.value for event in self.events)),
            opened_by_rule=dict(Counter(incident.rule_id for incident in opened)),
            opened_by_category=dict(Counter(incident.category_code for incident in opened)),
            opened=len(opened),
            top_level=sum(1 for incident in opened if incident.id not in parents),
            still_open=sum(1 for incident in opened if last_state[incident.id] is not IncidentState.CLOSED),
        )
        return BacktestReport(
            events=tuple(self.events), facts=tuple(self.facts), rejected=tuple(self.rejected), summary=summary
        )
