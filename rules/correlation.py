"""Composites and correlation, per area: the state the worker keeps per area key, and the pure functions that
advance it.

    key = area_key(grid_cell, district)           # where a fact or a device incident event must be routed
    state, events = correlate(rules, state, item)  # item: a FactChange, or an IncidentEvent of kind "device"
    state, events = tick_area(rules, state, now)   # a timer: facts age out, composites clear, incidents close
    state, events = acknowledge_in_area(rules, state, incident_id, by=..., at=...)
    deadline = next_area_deadline(rules, state)
    data = area_to_json(state); state = area_from_json(data)

Why the area is the district and not the grid cell: a composite member may ask for "the same district" (one rain
gauge serves many cells), so the facts of a whole district must meet in one place; facts and incident events are
rare next to readings, so a district's partition is never hot. Within the area everything is still grouped by grid
cell. Without a district, the area is the grid cell itself.

* **Composites** (kind ``composite``): when every member rule is active on enough devices within its scope (same
  grid cell, or anywhere in the district), each within ``within`` of now, one incident opens per group (cell). Its
  severity rises with the number of devices behind it. It clears when a member has had no active device for
  ``within`` (so the member's memory is its hysteresis), at the moment that happened.
* **Correlation**: a composite adopts the device incidents of its ``adopts`` categories in its group that opened
  from ``within`` before it opened onward, while it is open or cleared. Related device incidents that no composite
  explains (same category, same cell, within the ``[correlation]`` window, at least ``min_incidents`` of them) get a
  parent of kind ``correlation``, which a composite opening later adopts in turn. An incident has one parent; the
  wall lists incidents without a parent, so forty flooded sensors show as one flood.

Correlation is told by ``correlated`` events on the parent (``children`` = the ids put under it); the projection
sets ``parent_id`` on those children.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain.categories import Severity
from domain.incident_events import FactChange, IncidentEvent, IncidentEventType, IncidentKind, area_key_of
from domain.incidents import IncidentState
from rules.catalogue import RuleSet
from rules.clock import describe_duration, from_micros, micros_of
from rules.conditions import CompositeCondition, Rule, Scope
from rules.lifecycle import (
    QUIET,
    Alarm,
    EvidenceRow,
    Subject,
    Told,
    UnknownIncidentError,
    acknowledge_alarm,
    alarm_from_json,
    alarm_to_json,
    close_alarm,
    correlate_alarm,
    drop_alarm,
    due_at,
    hold_alarm,
    raise_alarm,
    settle_alarm,
)

STATE_FORMAT = 1
CORRELATION_RULE_PREFIX = "correlation."
_OPEN = IncidentState.OPEN.value
_CLEARED = IncidentState.CLEARED.value


@dataclass(frozen=True, slots=True)
class FactRecord:
    """One device's fact for one rule: active since ``since``, until ``until`` (-1 while active)."""

    rule_id: str
    device_id: str
    grid_cell: str | None
    since: int
    until: int
    evidence: tuple[EvidenceRow, ...]


@dataclass(frozen=True, slots=True)
class ChildRecord:
    """A device incident of this area, as its events told it, while it is open or cleared."""

    incident_id: str
    category_code: str
    severity: str
    grid_cell: str
    opened_at: int
    state: str
    cleared_at: int
    parent_id: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class ParentSlot:
    """A composite's or a correlation parent's incident in one group (grid cell, or the district)."""

    rule_id: str
    kind: IncidentKind
    group: str
    category_code: str
    alarm: Alarm
    children: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AreaState:
    key: str
    district: str | None = None
    clock: int = -1  # the latest event time seen here (facts, incident events, ticks)
    catalogue_version: int = 0
    facts: tuple[FactRecord, ...] = ()
    children: tuple[ChildRecord, ...] = ()
    parents: tuple[ParentSlot, ...] = ()


Events = tuple[IncidentEvent, ...]


def correlate(rules: RuleSet, state: AreaState | None, item: FactChange | IncidentEvent) -> tuple[AreaState, Events]:
    """Take in one fact change or one device incident event; tell composite and correlation events."""
    if state is None:
        key = area_key_of(item)
        if key is None:
            raise ValueError("an item without grid cell and district belongs to no area")
        district = item.district if isinstance(item, FactChange) else item.incident.district
        state = AreaState(key, district)
    work = _Area(rules, state)
    if isinstance(item, FactChange):
        work.take_fact(item)
    elif item.kind is IncidentKind.DEVICE:
        work.take_incident(item)
    return work.freeze(), tuple(work.events)


def tick_area(rules: RuleSet, state: AreaState, now: datetime) -> tuple[AreaState, Events]:
    """Apply what time alone decides by ``now``: remembered facts age out (composites clear at the moment they did),
    quiet flapping parents clear, cleared parents close."""
    work = _Area(rules, state)
    work.advance(micros_of(now, field="now"))
    return work.freeze(), tuple(work.events)


def acknowledge_in_area(
    rules: RuleSet, state: AreaState, incident_id: str, *, by: str, at: datetime
) -> tuple[AreaState, Events]:
    """A person acknowledged a composite or correlation incident of this area."""
    work = _Area(rules, state)
    for index, slot in enumerate(work.parents):
        tracked = slot.alarm.tracked
        if tracked is not None and tracked.id == incident_id:
            alarm, told = acknowledge_alarm(work.subject(slot), slot.alarm, by=by, at=micros_of(at, field="at"))
            work.parents[index] = replace(slot, alarm=alarm)
            work.events.extend(told)
            return work.freeze(), tuple(work.events)
    raise UnknownIncidentError(f"area {state.key} holds no open or cleared incident {incident_id}")


def next_area_deadline(rules: RuleSet, state: AreaState) -> datetime | None:
    """When :func:`tick_area` will next have something to do (None: only new input can change this area)."""
    moments: list[int] = []
    waiting = {child.parent_id for child in state.children if child.parent_id is not None}
    waiting |= {
        slot.alarm.tracked.parent_id
        for slot in state.parents
        if slot.alarm.tracked is not None and slot.alarm.tracked.parent_id is not None
    }
    for slot in state.parents:
        tracked = slot.alarm.tracked
        if tracked is None:
            continue
        moment = due_at(rules.lifecycle, slot.alarm)
        if moment is not None and tracked.id not in waiting:  # a parent with children waits for their events
            moments.append(moment)
        rule = rules.rules.get(slot.rule_id)
        if tracked.state == _OPEN and rule is not None and isinstance(rule.condition, CompositeCondition):
            # A remembered fact ages out just after until + within: the composite may lapse then.
            within = rule.condition.within
            moments.extend(
                fact.until + within + 1
                for fact in state.facts
                if fact.until >= 0 and fact.until + within >= state.clock
            )
    return from_micros(min(moments)) if moments else None


class _Area:
    """A working copy of an AreaState: plain lists while one input is handled, frozen again at the end."""

    def __init__(self, rules: RuleSet, state: AreaState) -> None:
        self.rules = rules
        self.key = state.key
        self.district = state.district
        self.clock = state.clock
        self.facts = list(state.facts)
        self.children = list(state.children)
        self.parents = list(state.parents)
        self.events: list[IncidentEvent] = []
        if state.catalogue_version != rules.version:
            self.realign()

    def freeze(self) -> AreaState:
        return AreaState(
            self.key,
            self.district,
            self.clock,
            self.rules.version,
            tuple(self.facts),
            tuple(self.children),
            tuple(self.parents),
        )

    # --- input ----------------------------------------------------------------------------------------------

    def take_fact(self, fact: FactChange) -> None:
        at = micros_of(fact.at, field="at")
        self.clock = max(self.clock, at)
        if fact.rule_id not in self.rules.fact_rules:
            return
        index = self._fact_index(fact.rule_id, fact.device_id)
        if fact.active:
            evidence = tuple(
                (item.device_id, item.metric, micros_of(item.ts, field="ts"), item.value) for item in fact.evidence
            )
            record = FactRecord(fact.rule_id, fact.device_id, fact.grid_cell, at, -1, evidence)
            if index is None:
                self.facts.append(record)
            else:
                self.facts[index] = record
        elif index is not None and self.facts[index].until < 0:
            self.facts[index] = replace(self.facts[index], until=max(at, self.facts[index].since))
        else:
            return
        for rule in self.rules.composites:
            condition = rule.condition
            assert isinstance(condition, CompositeCondition)
            for member in condition.members:
                if member.rule_id != fact.rule_id:
                    continue
                if condition.group_by is Scope.DISTRICT:
                    groups = {self.area_group}
                elif member.scope is Scope.GRID_CELL:
                    groups = {fact.grid_cell} if fact.grid_cell else set()
                else:
                    groups = self._cells_of(rule)
                for group in sorted(groups):
                    self.judge_composite(rule, group)
        self.advance(self.clock)

    def take_incident(self, event: IncidentEvent) -> None:
        incident = event.incident
        at = micros_of(event.at, field="at")
        self.clock = max(self.clock, at)
        if incident.grid_cell is None:
            return
        index = self._child_index(incident.id)
        record = self.children[index] if index is not None else None
        if record is not None and event.seq <= record.seq:
            return  # a duplicate or stale event
        kind = event.type
        if kind in (IncidentEventType.OPENED, IncidentEventType.REOPENED, IncidentEventType.UPDATED):
            fresh = ChildRecord(
                incident.id,
                incident.category_code,
                incident.severity.value,
                incident.grid_cell,
                micros_of(incident.opened_at, field="opened_at"),
                _OPEN,
                -1,
                record.parent_id if record is not None else None,
                event.seq,
            )
            if index is None:
                self.children.append(fresh)
            else:
                self.children[index] = fresh
            if fresh.parent_id is None:
                self.place_child(fresh, at)
            else:
                self.child_changed(fresh.parent_id, at)
        elif kind is IncidentEventType.CLEARED and record is not None:
            cleared_at = micros_of(incident.cleared_at or event.at, field="cleared_at")
            self.children[_required(index)] = replace(record, state=_CLEARED, cleared_at=cleared_at, seq=event.seq)
            if record.parent_id is not None:
                self.child_changed(record.parent_id, at)
        elif kind is IncidentEventType.CLOSED and record is not None:
            del self.children[_required(index)]
            if record.parent_id is not None:
                self.child_changed(record.parent_id, at)
        elif record is not None:
            self.children[_required(index)] = replace(record, seq=event.seq)
        self.advance(self.clock)

    # --- composites -----------------------------------------------------------------------------------------

    def judge_composite(self, rule: Rule, group: str) -> None:
        condition = rule.condition
        assert isinstance(condition, CompositeCondition)
        now = self.clock
        satisfied, devices, evidence, false_since = self._members(condition, group, now)
        index = self._parent_index(rule.id, group)
        slot = (
            self.parents[index]
            if index is not None
            else ParentSlot(rule.id, IncidentKind.COMPOSITE, group, rule.category_code or "", QUIET, ())
        )
        tracked = slot.alarm.tracked
        told: Told
        if satisfied:
            level = sum(1 for threshold in condition.device_escalation if len(devices) >= threshold)
            severity = rule.severities[level]
            reopened = tracked is None or tracked.state != _OPEN
            if reopened or _required(tracked).quiet_since >= 0:
                told = raise_alarm(
                    self.rules.lifecycle,
                    self.subject(slot),
                    slot.alarm,
                    at=now,
                    severity=severity,
                    evidence=evidence,
                    rule_version=rule.version,
                    detail=f"{len(devices)} devices",
                )
            else:
                told = hold_alarm(
                    self.rules.lifecycle,
                    self.subject(slot),
                    slot.alarm,
                    at=now,
                    severity=severity,
                    evidence=evidence[-1:],
                    detail=f"{len(devices)} devices",
                    refresh=False,
                )
            slot = replace(slot, alarm=told[0])
            self.events.extend(told[1])
            self._store_parent(index, slot)
            if reopened:
                self.adopt_into_composite(rule, group)
        elif tracked is not None and tracked.state == _OPEN:
            still_open, cleared_at = self._under(tracked.id)
            if still_open:
                return  # the situation is not over while an incident under it is open
            at = max(min(false_since, now), cleared_at)
            told = drop_alarm(self.rules.lifecycle, self.subject(slot), slot.alarm, at=at, detail="a member lapsed")
            self.events.extend(told[1])
            self._store_parent(index, replace(slot, alarm=told[0]))

    def _members(
        self, condition: CompositeCondition, group: str, now: int
    ) -> tuple[bool, set[str], tuple[EvidenceRow, ...], int]:
        """Whether every member holds in ``group`` at ``now``; the devices behind them, evidence, and (when not)
        the moment the first lapsed member lapsed."""
        within = condition.within
        satisfied = True
        devices: set[str] = set()
        evidence: list[EvidenceRow] = []
        false_since = now
        for member in condition.members:
            active: set[str] = set()
            lasting = 0  # devices whose fact is still active: they never age out
            expiries: list[int] = []
            for fact in self.facts:
                if fact.rule_id != member.rule_id:
                    continue
                if (
                    member.scope is Scope.GRID_CELL
                    and condition.group_by is Scope.GRID_CELL
                    and fact.grid_cell != group
                ):
                    continue
                if fact.until < 0:
                    active.add(fact.device_id)
                    lasting += 1
                elif fact.until + within >= now:
                    expiries.append(fact.until + within)
                    active.add(fact.device_id)
                else:
                    expiries.append(fact.until + within)
                    continue
                if len(evidence) < self.rules.lifecycle.evidence_limit * len(condition.members):
                    evidence.extend(fact.evidence[:1])
            if len(active) >= member.min_devices:
                devices |= active
                continue
            satisfied = False
            # It lapsed when the devices still counting fell below min_devices: at the expiry of the one that was
            # the last needed.
            needed = member.min_devices - lasting
            expiries.sort(reverse=True)
            lapsed = expiries[needed - 1] if 0 < needed <= len(expiries) else now
            false_since = min(false_since, lapsed)
        return satisfied, devices, tuple(evidence), false_since

    def adopt_into_composite(self, rule: Rule, group: str) -> None:
        condition = rule.condition
        assert isinstance(condition, CompositeCondition)
        index = self._parent_index(rule.id, group)
        if index is None:
            return
        slot = self.parents[index]
        tracked = slot.alarm.tracked
        if tracked is None:
            return
        earliest = tracked.opened_at - condition.within
        adopted: list[str] = []
        for position, child in enumerate(self.children):
            if (
                child.parent_id is None
                and (condition.group_by is Scope.DISTRICT or child.grid_cell == group)
                and condition.adopts_category(child.category_code)
                and child.opened_at >= earliest
            ):
                self.children[position] = replace(child, parent_id=tracked.id)
                adopted.append(child.incident_id)
        for position, other in enumerate(self.parents):
            other_tracked = other.alarm.tracked
            if (
                other.kind is IncidentKind.CORRELATION
                and other_tracked is not None
                and other_tracked.parent_id is None
                and (condition.group_by is Scope.DISTRICT or other.group == group)
                and condition.adopts_category(other.category_code)
            ):
                self.parents[position] = replace(
                    other, alarm=other.alarm._replace(tracked=other_tracked._replace(parent_id=tracked.id))
                )
                adopted.append(other_tracked.id)
        self._tell_adoption(index, adopted)

    # --- correlation ----------------------------------------------------------------------------------------

    def place_child(self, child: ChildRecord, at: int) -> None:
        """Find a parent for a device incident that has none: a composite, an existing correlation parent, or a
        new correlation parent once enough related incidents share its cell and window."""
        for index, slot in enumerate(self.parents):
            tracked = slot.alarm.tracked
            if slot.kind is not IncidentKind.COMPOSITE or tracked is None:
                continue
            rule = self.rules.rules.get(slot.rule_id)
            if rule is None or not isinstance(rule.condition, CompositeCondition):
                continue
            condition = rule.condition
            if (
                (condition.group_by is Scope.DISTRICT or slot.group == child.grid_cell)
                and condition.adopts_category(child.category_code)
                and child.opened_at >= tracked.opened_at - condition.within
            ):
                self._set_parent(child.incident_id, tracked.id)
                self._tell_adoption(index, [child.incident_id])
                return
        policy = self.rules.correlation
        rule_id = CORRELATION_RULE_PREFIX + child.category_code
        cluster = self._parent_index(rule_id, child.grid_cell)
        if cluster is not None and self.parents[cluster].alarm.tracked is not None:
            self._set_parent(child.incident_id, _required(self.parents[cluster].alarm.tracked).id)
            self._tell_adoption(cluster, [child.incident_id])
            self.child_changed(_required(self.parents[cluster].alarm.tracked).id, at)
            return
        related = [
            other
            for other in self.children
            if other.parent_id is None
            and other.grid_cell == child.grid_cell
            and other.category_code == child.category_code
            and abs(other.opened_at - child.opened_at) <= policy.window
        ]
        if len(related) < policy.min_incidents:
            return
        slot = (
            self.parents[cluster]
            if cluster is not None
            else ParentSlot(rule_id, IncidentKind.CORRELATION, child.grid_cell, child.category_code, QUIET, ())
        )
        slot = replace(slot, children=())
        severity = max(Severity(other.severity) for other in related)
        alarm, told = raise_alarm(
            self.rules.lifecycle,
            self.subject(slot),
            slot.alarm,
            at=child.opened_at,
            severity=severity,
            evidence=(),
            rule_version=self.rules.version,
            detail=f"{len(related)} related incidents",
        )
        self.events.extend(told)
        tracked = _required(alarm.tracked)
        self._store_parent(cluster, replace(slot, alarm=alarm))
        for other in related:
            self._set_parent(other.incident_id, tracked.id)
        new_index = _required(self._parent_index(rule_id, child.grid_cell))
        self._tell_adoption(new_index, [other.incident_id for other in related])
        # A composite already open here takes the new parent under it.
        for rule in self.rules.composites:
            adopting = rule.condition
            assert isinstance(adopting, CompositeCondition)
            if adopting.adopts_category(child.category_code):
                group = self.area_group if adopting.group_by is Scope.DISTRICT else child.grid_cell
                composite = self._parent_index(rule.id, group)
                if composite is not None and self.parents[composite].alarm.tracked is not None:
                    self.adopt_into_composite(rule, group)
                    break

    def child_changed(self, parent_id: str, at: int) -> None:
        """A child of a correlation parent changed: the parent follows (open while any child is open)."""
        index = next(
            (
                position
                for position, slot in enumerate(self.parents)
                if slot.alarm.tracked is not None and slot.alarm.tracked.id == parent_id
            ),
            None,
        )
        if index is None:
            return
        slot = self.parents[index]
        if slot.kind is IncidentKind.COMPOSITE:
            rule = self.rules.rules.get(slot.rule_id)
            if rule is not None:
                self.judge_composite(rule, slot.group)
            return
        tracked = _required(slot.alarm.tracked)
        open_children = [child for child in self.children if child.parent_id == parent_id and child.state == _OPEN]
        policy = self.rules.lifecycle
        told: Told
        if open_children:
            severity = max(Severity(child.severity) for child in open_children)
            if tracked.state != _OPEN:
                told = raise_alarm(
                    policy, self.subject(slot), slot.alarm, at=at, severity=severity, evidence=(),
                    rule_version=tracked.rule_version, detail=f"{len(open_children)} open incidents",
                )  # fmt: skip
            else:
                told = hold_alarm(
                    policy, self.subject(slot), slot.alarm, at=at, severity=severity, evidence=(), refresh=False
                )
        elif tracked.state == _OPEN:
            _, cleared_at = self._under(parent_id)
            told = drop_alarm(policy, self.subject(slot), slot.alarm, at=cleared_at if cleared_at >= 0 else at)
        else:
            return
        self.events.extend(told[1])
        self.parents[index] = replace(slot, alarm=told[0])
        if tracked.parent_id is not None and told[1]:
            self.child_changed(tracked.parent_id, at)  # a composite above follows its nested parents too

    # --- time -----------------------------------------------------------------------------------------------

    def advance(self, now: int) -> None:
        """Bring everything time-driven up to ``now``."""
        self.clock = max(self.clock, now)
        now = self.clock
        for rule in self.rules.composites:
            for slot in list(self.parents):
                if slot.rule_id == rule.id and slot.alarm.tracked is not None and slot.alarm.tracked.state == _OPEN:
                    self.judge_composite(rule, slot.group)
        policy = self.rules.lifecycle
        settling = True
        while settling:  # a parent closing may release the one above it in the same moment
            settling = False
            for index, slot in enumerate(self.parents):
                moment = due_at(policy, slot.alarm)
                if moment is not None and moment <= now and not self._holds_children(slot):
                    alarm, told = settle_alarm(policy, self.subject(slot), slot.alarm, now=now)
                    self.events.extend(told)
                    self.parents[index] = replace(slot, alarm=alarm)
                    settling = settling or alarm.tracked is None
        longest = self.rules.longest_composite_window
        self.facts = [fact for fact in self.facts if fact.until < 0 or fact.until + longest >= now]
        horizon = now - policy.flapping_window
        self.parents = [
            slot
            for slot in self.parents
            if slot.alarm.tracked is not None or any(moment > horizon for moment in slot.alarm.cycles)
        ]

    def realign(self) -> None:
        """A new catalogue: composites whose rule changed version or left close their incident; facts of rules no
        composite listens to any more are forgotten."""
        kept: list[ParentSlot] = []
        at = max(self.clock, 0)
        for slot in self.parents:
            tracked = slot.alarm.tracked
            if slot.kind is IncidentKind.COMPOSITE and tracked is not None:
                rule = self.rules.rules.get(slot.rule_id)
                if rule is None or rule.version != tracked.rule_version:
                    _, told = close_alarm(self.subject(slot), slot.alarm, at=at, detail="the composite rule changed")
                    self.events.extend(told)
                    continue
            kept.append(slot)
        self.parents = kept
        self.facts = [fact for fact in self.facts if fact.rule_id in self.rules.fact_rules]

    # --- small helpers --------------------------------------------------------------------------------------

    @property
    def area_group(self) -> str:
        return self.district or self.key

    def subject(self, slot: ParentSlot) -> Subject:
        rule = self.rules.rules.get(slot.rule_id)
        if slot.kind is IncidentKind.COMPOSITE:
            group_is_cell = rule is None or (
                isinstance(rule.condition, CompositeCondition) and rule.condition.group_by is Scope.GRID_CELL
            )
            return Subject(
                rule_id=slot.rule_id,
                kind=IncidentKind.COMPOSITE,
                title=f"{rule.title if rule is not None else slot.rule_id}: {slot.group}",
                condition=rule.description if rule is not None else "rule withdrawn from the catalogue",
                category_code=slot.category_code,
                source=slot.group,
                grid_cell=slot.group if group_is_cell else None,
                district=self.district,
            )
        name = self.rules.category_names.get(slot.category_code, slot.category_code)
        policy = self.rules.correlation
        return Subject(
            rule_id=slot.rule_id,
            kind=IncidentKind.CORRELATION,
            title=f"{name}: several devices in {slot.group}",
            condition=(
                f"{policy.min_incidents} or more {slot.category_code} incidents in one grid cell within"
                f" {describe_duration(policy.window)}"
            ),
            category_code=slot.category_code,
            source=slot.group,
            grid_cell=slot.group,
            district=self.district,
        )

    def _tell_adoption(self, index: int, children: list[str]) -> None:
        if not children:
            return
        slot = self.parents[index]
        alarm, told = correlate_alarm(self.subject(slot), slot.alarm, children=tuple(children), at=self.clock)
        self.events.extend(told)
        self.parents[index] = replace(slot, alarm=alarm, children=(*slot.children, *children))

    def _holds_children(self, slot: ParentSlot) -> bool:
        """A parent closes only after every incident under it has closed, so no incident hides under a closed one."""
        tracked = slot.alarm.tracked
        if tracked is None:
            return False
        return any(child.parent_id == tracked.id for child in self.children) or any(
            other.alarm.tracked is not None and other.alarm.tracked.parent_id == tracked.id for other in self.parents
        )

    def _under(self, parent_id: str) -> tuple[bool, int]:
        """Whether an incident under ``parent_id`` (a device incident or a nested parent) is open, and the latest
        time one of them cleared (-1: none has)."""
        still_open = False
        cleared_at = -1
        for child in self.children:
            if child.parent_id == parent_id:
                still_open = still_open or child.state == _OPEN
                cleared_at = max(cleared_at, child.cleared_at)
        for other in self.parents:
            tracked = other.alarm.tracked
            if tracked is not None and tracked.parent_id == parent_id:
                still_open = still_open or tracked.state == _OPEN
                cleared_at = max(cleared_at, tracked.cleared_at)
        return still_open, cleared_at

    def _set_parent(self, incident_id: str, parent_id: str) -> None:
        index = self._child_index(incident_id)
        if index is not None:
            self.children[index] = replace(self.children[index], parent_id=parent_id)

    def _store_parent(self, index: int | None, slot: ParentSlot) -> None:
        if index is None:
            self.parents.append(slot)
        else:
            self.parents[index] = slot

    def _cells_of(self, rule: Rule) -> set[str]:
        condition = rule.condition
        assert isinstance(condition, CompositeCondition)
        cell_rules = {member.rule_id for member in condition.members if member.scope is Scope.GRID_CELL}
        cells = {fact.grid_cell for fact in self.facts if fact.rule_id in cell_rules and fact.grid_cell}
        cells |= {slot.group for slot in self.parents if slot.rule_id == rule.id}
        return {cell for cell in cells if cell}

    def _fact_index(self, rule_id: str, device_id: str) -> int | None:
        for index, fact in enumerate(self.facts):
            if fact.rule_id == rule_id and fact.device_id == device_id:
                return index
        return None

    def _child_index(self, incident_id: str) -> int | None:
        for index, child in enumerate(self.children):
            if child.incident_id == incident_id:
                return index
        return None

    def _parent_index(self, rule_id: str, group: str) -> int | None:
        for index, slot in enumerate(self.parents):
            if slot.rule_id == rule_id and slot.group == group:
                return index
        return None


def _required(value: Any) -> Any:
    assert value is not None
    return value


# --- JSON --------------------------------------------------------------------------------------------------------


def area_to_json(state: AreaState) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "key": state.key,
        "district": state.district,
        "clock": state.clock,
        "catalogue_version": state.catalogue_version,
        "facts": [
            [f.rule_id, f.device_id, f.grid_cell, f.since, f.until, [list(row) for row in f.evidence]]
            for f in state.facts
        ],
        "children": [
            [
                c.incident_id,
                c.category_code,
                c.severity,
                c.grid_cell,
                c.opened_at,
                c.state,
                c.cleared_at,
                c.parent_id,
                c.seq,
            ]
            for c in state.children
        ],
        "parents": [
            [p.rule_id, p.kind.value, p.group, p.category_code, alarm_to_json(p.alarm), list(p.children)]
            for p in state.parents
        ],
    }


def area_from_json(data: Mapping[str, Any]) -> AreaState:
    if data.get("format") != STATE_FORMAT:
        raise ValueError(f"area state format {data.get('format')!r} is not {STATE_FORMAT}")
    return AreaState(
        key=str(data["key"]),
        district=data.get("district"),
        clock=int(data["clock"]),
        catalogue_version=int(data["catalogue_version"]),
        facts=tuple(
            FactRecord(
                str(rule_id),
                str(device_id),
                grid_cell,
                int(since),
                int(until),
                tuple((str(d), str(m), int(t), float(v)) for d, m, t, v in evidence),
            )
            for rule_id, device_id, grid_cell, since, until, evidence in data["facts"]
        ),
        children=tuple(
            ChildRecord(str(i), str(cat), str(sev), str(cell), int(opened), str(st), int(cleared), parent, int(seq))
            for i, cat, sev, cell, opened, st, cleared, parent, seq in data["children"]
        ),
        parents=tuple(
            ParentSlot(
                str(rule_id), IncidentKind(kind), str(group), str(category), alarm_from_json(alarm), tuple(children)
            )
            for rule_id, kind, group, category, alarm, children in data["parents"]
        ),
    )


def children_of(events: Iterable[IncidentEvent]) -> dict[str, str]:
    """Child id -> parent id, as a sequence of events tells it (for reports and tests)."""
    parents: dict[str, str] = {}
    for event in events:
        if event.type is IncidentEventType.CORRELATED:
            for child in event.children:
                parents[child] = event.incident.id
    return parents
