"""The incident lifecycle: one transitions table, and the pure functions that move one incident along it.

    opened ──update──▶ open ──clear──▶ cleared ──close──▶ closed
                        ▲                 │
                        └─────reopen──────┘
    acknowledge and correlate keep an open or cleared incident where it is.

* An incident is opened when its rule's condition becomes true and no incident of that rule is open or cleared for
  the same source; so there is never more than one open incident per (source, rule), and a repeat updates it.
* ``update`` is told only when there is news: the severity rose (it never falls while open), flapping started, or
  ``refresh`` has passed since the last event (the wall then sees the latest reading).
* ``clear`` comes from the rule's own hysteresis and debounce; a cleared incident that sees its condition again
  within ``close_after`` is *reopened* (the same incident, not a new one); otherwise it is closed ``close_after``
  after it cleared. ``close`` from open exists only for an incident whose rule was withdrawn from the catalogue.
* Flapping: when an (source, rule) opens or reopens more than ``flapping_max_cycles`` times within
  ``flapping_window``, its incident is marked flapping and stays open: further clears and reopens are suppressed,
  and it clears only after the condition has stayed false for ``flapping_settle`` (one flapping incident, not a
  storm of open/clear pairs).

Every moment written here is an event time derived from the readings (the trigger reading, a deadline computed from
them), never the time a timer happened to run: a replay yields the same times, and the same ids
(:func:`incident_id` is a uuid5 of rule, source and opening time).

Bookkeeping is kept in NamedTuples (:class:`Tracked`, :class:`Alarm`) so it can sit in a faust Table as JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from domain.categories import Severity
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind
from domain.incidents import Evidence, Incident, IncidentState
from rules.clock import from_micros


class IncidentAction(StrEnum):
    UPDATE = "update"
    CLEAR = "clear"
    REOPEN = "reopen"
    CLOSE = "close"
    ACKNOWLEDGE = "acknowledge"
    CORRELATE = "correlate"


_S = IncidentState
_A = IncidentAction

# The one table: (state, action) -> next state. Anything not listed is illegal. Opening is not a transition: it
# creates the incident in state ``open`` (see raise_alarm).
TRANSITIONS: Mapping[tuple[IncidentState, IncidentAction], IncidentState] = {
    (_S.OPEN, _A.UPDATE): _S.OPEN,
    (_S.OPEN, _A.CLEAR): _S.CLEARED,
    (_S.OPEN, _A.ACKNOWLEDGE): _S.OPEN,
    (_S.OPEN, _A.CORRELATE): _S.OPEN,
    (_S.OPEN, _A.CLOSE): _S.CLOSED,  # only when the rule behind it is withdrawn
    (_S.CLEARED, _A.REOPEN): _S.OPEN,
    (_S.CLEARED, _A.ACKNOWLEDGE): _S.CLEARED,
    (_S.CLEARED, _A.CORRELATE): _S.CLEARED,
    (_S.CLEARED, _A.CLOSE): _S.CLOSED,
}
del _S, _A

EVENT_FOR_ACTION: Mapping[IncidentAction, IncidentEventType] = {
    IncidentAction.UPDATE: IncidentEventType.UPDATED,
    IncidentAction.CLEAR: IncidentEventType.CLEARED,
    IncidentAction.REOPEN: IncidentEventType.REOPENED,
    IncidentAction.CLOSE: IncidentEventType.CLOSED,
    IncidentAction.ACKNOWLEDGE: IncidentEventType.ACKNOWLEDGED,
    IncidentAction.CORRELATE: IncidentEventType.CORRELATED,
}


class IncidentLifecycleError(ValueError):
    """Base of every refusal to change an incident."""


class IllegalIncidentTransitionError(IncidentLifecycleError):
    """The action is not allowed from the incident's current state."""

    def __init__(self, incident_id: str, state: IncidentState, action: IncidentAction) -> None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is state)
        super().__init__(
            f"incident {incident_id}: cannot {action.value} when {state.value}"
            f" (allowed from {state.value}: {', '.join(allowed) or 'nothing, it is final'})"
        )
        self.incident_id = incident_id
        self.state = state
        self.action = action


class UnknownIncidentError(IncidentLifecycleError):
    """An incident id this state does not hold (never opened here, or already closed)."""


def next_state(incident_id: str, state: IncidentState, action: IncidentAction) -> IncidentState:
    """The table lookup, with the named error for a move it does not list."""
    target = TRANSITIONS.get((state, action))
    if target is None:
        raise IllegalIncidentTransitionError(incident_id, state, action)
    return target


def allowed_actions(state: IncidentState) -> frozenset[IncidentAction]:
    return frozenset(action for (s, action) in TRANSITIONS if s is state)


_INCIDENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:cityops:incident")


def incident_id(rule_id: str, source: str, opened_at: int) -> str:
    """The incident's id: a uuid5 of its rule, its source and its opening event time (µs), so replays agree."""
    return str(uuid.uuid5(_INCIDENT_NAMESPACE, f"{rule_id}\x1f{source}\x1f{opened_at}"))


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecyclePolicy:
    """The catalogue's ``[lifecycle]`` section, durations in µs."""

    close_after: int
    refresh: int  # 0: no periodic refresh
    flapping_window: int
    flapping_max_cycles: int
    flapping_settle: int
    evidence_limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """What an incident is about, as its snapshot shows it: built only when an event is told, never per reading."""

    rule_id: str
    kind: IncidentKind
    title: str
    condition: str
    category_code: str
    source: str
    grid_cell: str | None
    district: str | None


EvidenceRow = tuple[str, str, int, float]  # (device_id, metric, ts µs, value): one stored reading


class Tracked(NamedTuple):
    """The bookkeeping of one incident from opened until closed. Times in µs; -1 means "not yet"."""

    id: str
    rule_id: str
    rule_version: int
    category_code: str  # kept so the incident can be closed even if its rule leaves the catalogue
    state: str  # an IncidentState value
    severity: str  # a Severity value: the highest reached while open
    opened_at: int
    cleared_at: int
    updated_at: int
    seq: int
    flapping: bool
    quiet_since: int  # flapping and the condition is false since then (-1: not quiet)
    acknowledged_at: int
    acknowledged_by: str | None
    parent_id: str | None
    evidence: tuple[EvidenceRow, ...]  # the readings that opened it


class Alarm(NamedTuple):
    """One (source, rule)'s incident, if any, and its recent opening times (for flapping)."""

    tracked: Tracked | None
    cycles: tuple[int, ...]


QUIET = Alarm(None, ())

Told = tuple[Alarm, tuple[IncidentEvent, ...]]
_NOTHING: tuple[IncidentEvent, ...] = ()


def raise_alarm(
    policy: LifecyclePolicy,
    subject: Subject,
    alarm: Alarm,
    *,
    at: int,
    severity: Severity,
    evidence: tuple[EvidenceRow, ...],
    rule_version: int,
    detail: str = "",
) -> Told:
    """The condition is true (since ``at``): open an incident, reopen the cleared one, or keep the open one."""
    tracked = alarm.tracked
    if tracked is not None and tracked.state == IncidentState.OPEN:
        if tracked.quiet_since >= 0:  # flapping, and back on: nothing new to tell
            return Alarm(tracked._replace(quiet_since=-1), alarm.cycles), _NOTHING
        return hold_alarm(
            policy,
            subject,
            alarm,
            at=max(at, tracked.updated_at),
            severity=severity,
            evidence=evidence,
            refresh=subject.kind is IncidentKind.DEVICE,
        )
    cycles = _recent_cycles(policy, alarm.cycles, at)
    flapping = len(cycles) > policy.flapping_max_cycles
    evidence = evidence[-policy.evidence_limit :]
    if tracked is None:
        tracked = Tracked(
            incident_id(subject.rule_id, subject.source, at),
            subject.rule_id,
            rule_version,
            subject.category_code,
            IncidentState.OPEN.value,
            severity.value,
            at,
            -1,
            at,
            1,
            flapping,
            -1,
            -1,
            None,
            None,
            evidence,
        )
        return Alarm(tracked, cycles), (_event(subject, tracked, IncidentEventType.OPENED, at, detail=detail),)
    at = max(at, tracked.cleared_at)
    state = next_state(tracked.id, IncidentState(tracked.state), IncidentAction.REOPEN)
    tracked = tracked._replace(
        state=state.value,
        severity=max(severity, Severity(tracked.severity)).value,
        cleared_at=-1,
        updated_at=at,
        seq=tracked.seq + 1,
        flapping=flapping,
        quiet_since=-1,
    )
    event = _event(subject, tracked, IncidentEventType.REOPENED, at, extra=evidence, detail=detail)
    return Alarm(tracked, cycles), (event,)


def hold_alarm(
    policy: LifecyclePolicy,
    subject: Subject,
    alarm: Alarm,
    *,
    at: int,
    severity: Severity,
    evidence: tuple[EvidenceRow, ...],
    detail: str = "",
    refresh: bool = True,
) -> Told:
    """The condition is still true: tell an update if the severity rose or (``refresh``: a device incident with a
    new reading to show) a refresh is due, else nothing."""
    tracked = alarm.tracked
    if tracked is None or tracked.state != IncidentState.OPEN:
        return alarm, _NOTHING
    rose = severity > Severity(tracked.severity)
    if not rose and not (refresh and policy.refresh and at - tracked.updated_at >= policy.refresh):
        return alarm, _NOTHING
    next_state(tracked.id, IncidentState.OPEN, IncidentAction.UPDATE)
    if rose:
        tracked = tracked._replace(severity=severity.value)
    tracked = tracked._replace(updated_at=at, seq=tracked.seq + 1)
    event = _event(
        subject, tracked, IncidentEventType.UPDATED, at, extra=evidence[-policy.evidence_limit :], detail=detail
    )
    return Alarm(tracked, alarm.cycles), (event,)


def drop_alarm(policy: LifecyclePolicy, subject: Subject, alarm: Alarm, *, at: int, detail: str = "") -> Told:
    """The condition is false (since ``at``): clear the open incident, or let a flapping one go quiet."""
    tracked = alarm.tracked
    if tracked is None or tracked.state != IncidentState.OPEN:
        return alarm, _NOTHING
    if tracked.flapping:
        if tracked.quiet_since < 0:
            return Alarm(tracked._replace(quiet_since=max(at, tracked.opened_at)), alarm.cycles), _NOTHING
        return alarm, _NOTHING
    return _clear(subject, alarm, max(at, tracked.updated_at, tracked.opened_at), detail)


def _clear(subject: Subject, alarm: Alarm, at: int, detail: str) -> Told:
    tracked = alarm.tracked
    assert tracked is not None
    state = next_state(tracked.id, IncidentState(tracked.state), IncidentAction.CLEAR)
    tracked = tracked._replace(state=state.value, cleared_at=at, updated_at=at, seq=tracked.seq + 1, quiet_since=-1)
    return Alarm(tracked, alarm.cycles), (_event(subject, tracked, IncidentEventType.CLEARED, at, detail=detail),)


def due_at(policy: LifecyclePolicy, alarm: Alarm) -> int | None:
    """When time alone will next change this alarm (settle a flapping one, close a cleared one); None if never."""
    tracked = alarm.tracked
    if tracked is None:
        return None
    if tracked.state == IncidentState.CLEARED:
        return tracked.cleared_at + policy.close_after
    if tracked.flapping and tracked.quiet_since >= 0:
        return tracked.quiet_since + policy.flapping_settle
    return None


def settle_alarm(policy: LifecyclePolicy, subject: Subject, alarm: Alarm, *, now: int) -> Told:
    """Apply what is due by ``now``: a quiet flapping incident clears, a cleared one closes. Times are the deadlines."""
    events: list[IncidentEvent] = []
    tracked = alarm.tracked
    if tracked is not None and tracked.state == IncidentState.OPEN and tracked.flapping and tracked.quiet_since >= 0:
        settled = tracked.quiet_since + policy.flapping_settle
        if settled <= now:
            alarm, told = _clear(subject, alarm, max(settled, tracked.updated_at), "the flapping condition settled")
            events.extend(told)
            tracked = alarm.tracked
    if tracked is not None and tracked.state == IncidentState.CLEARED:
        closing = tracked.cleared_at + policy.close_after
        if closing <= now:
            alarm, told = close_alarm(subject, alarm, at=closing)
            events.extend(told)
    return alarm, tuple(events)


def close_alarm(subject: Subject, alarm: Alarm, *, at: int, detail: str = "") -> Told:
    """Close the incident (cleared long enough, or its rule withdrawn). The alarm keeps only its flapping history."""
    tracked = alarm.tracked
    if tracked is None:
        return alarm, _NOTHING
    state = next_state(tracked.id, IncidentState(tracked.state), IncidentAction.CLOSE)
    at = max(at, tracked.updated_at)
    closed = tracked._replace(state=state.value, updated_at=at, seq=tracked.seq + 1)
    event = _event(subject, closed, IncidentEventType.CLOSED, at, closed_at=at, detail=detail)
    return Alarm(None, alarm.cycles), (event,)


def acknowledge_alarm(subject: Subject, alarm: Alarm, *, by: str, at: int) -> Told:
    """A person has seen the incident. Acknowledging twice tells nothing (at-least-once delivery of the request)."""
    tracked = alarm.tracked
    if tracked is None:
        raise UnknownIncidentError(f"no open or cleared incident of {subject.rule_id} for {subject.source}")
    if tracked.acknowledged_at >= 0:
        return alarm, _NOTHING
    next_state(tracked.id, IncidentState(tracked.state), IncidentAction.ACKNOWLEDGE)
    at = max(at, tracked.opened_at)
    tracked = tracked._replace(
        acknowledged_at=at, acknowledged_by=by, updated_at=max(at, tracked.updated_at), seq=tracked.seq + 1
    )
    return Alarm(tracked, alarm.cycles), (_event(subject, tracked, IncidentEventType.ACKNOWLEDGED, at),)


def correlate_alarm(subject: Subject, alarm: Alarm, *, children: tuple[str, ...], at: int) -> Told:
    """Put ``children`` under this incident (which must be open or cleared)."""
    tracked = alarm.tracked
    if tracked is None or not children:
        return alarm, _NOTHING
    next_state(tracked.id, IncidentState(tracked.state), IncidentAction.CORRELATE)
    at = max(at, tracked.updated_at)
    tracked = tracked._replace(updated_at=at, seq=tracked.seq + 1)
    return Alarm(tracked, alarm.cycles), (
        _event(subject, tracked, IncidentEventType.CORRELATED, at, children=children),
    )


def _recent_cycles(policy: LifecyclePolicy, cycles: tuple[int, ...], at: int) -> tuple[int, ...]:
    horizon = at - policy.flapping_window
    recent = tuple(moment for moment in cycles if moment > horizon)
    # One more than the limit is all flapping needs to know.
    return (*recent, at)[-(policy.flapping_max_cycles + 1) :]


def _event(
    subject: Subject,
    tracked: Tracked,
    kind: IncidentEventType,
    at: int,
    *,
    extra: tuple[EvidenceRow, ...] = (),
    closed_at: int = -1,
    children: tuple[str, ...] = (),
    detail: str = "",
) -> IncidentEvent:
    return IncidentEvent(
        type=kind,
        incident=snapshot(subject, tracked, extra=extra, closed_at=closed_at),
        seq=tracked.seq,
        at=from_micros(at),
        kind=subject.kind,
        flapping=tracked.flapping,
        children=children,
        detail=detail,
    )


def snapshot(
    subject: Subject, tracked: Tracked, *, extra: tuple[EvidenceRow, ...] = (), closed_at: int = -1
) -> Incident:
    """The incident as the rest of the platform sees it (domain.incidents.Incident)."""
    rows = tracked.evidence
    if extra:
        rows = rows + tuple(row for row in extra if row not in rows)
    title = subject.title
    if tracked.flapping:
        title += " (flapping)"
    return Incident(
        id=tracked.id,
        rule_id=tracked.rule_id,
        rule_version=tracked.rule_version,
        source=subject.source,
        category_code=tracked.category_code,
        severity=Severity(tracked.severity),
        state=IncidentState(tracked.state),
        title=title,
        condition=subject.condition,
        opened_at=from_micros(tracked.opened_at),
        updated_at=from_micros(tracked.updated_at),
        grid_cell=subject.grid_cell,
        district=subject.district,
        parent_id=tracked.parent_id,
        cleared_at=from_micros(tracked.cleared_at) if tracked.cleared_at >= 0 else None,
        closed_at=from_micros(closed_at) if closed_at >= 0 else None,
        acknowledged_at=from_micros(tracked.acknowledged_at) if tracked.acknowledged_at >= 0 else None,
        acknowledged_by=tracked.acknowledged_by,
        evidence=tuple(
            Evidence(device_id=device, metric=metric, ts=from_micros(ts), value=value)
            for device, metric, ts, value in rows
        ),
    )


# --- JSON --------------------------------------------------------------------------------------------------------


def alarm_to_json(alarm: Alarm) -> Any:
    tracked = alarm.tracked
    return [None if tracked is None else [*tracked[:15], [list(row) for row in tracked.evidence]], list(alarm.cycles)]


def alarm_from_json(data: Any) -> Alarm:
    tracked, cycles = data
    if tracked is None:
        return Alarm(None, tuple(int(moment) for moment in cycles))
    (
        id_,
        rule_id,
        rule_version,
        category_code,
        state,
        severity,
        opened_at,
        cleared_at,
        updated_at,
        seq,
        flapping,
        quiet_since,
        acknowledged_at,
        acknowledged_by,
        parent_id,
        evidence,
    ) = tracked
    return Alarm(
        Tracked(
            str(id_),
            str(rule_id),
            int(rule_version),
            str(category_code),
            IncidentState(state).value,
            Severity(severity).value,
            int(opened_at),
            int(cleared_at),
            int(updated_at),
            int(seq),
            bool(flapping),
            int(quiet_since),
            int(acknowledged_at),
            None if acknowledged_by is None else str(acknowledged_by),
            None if parent_id is None else str(parent_id),
            tuple((str(d), str(m), int(t), float(v)) for d, m, t, v in evidence),
        ),
        tuple(int(moment) for moment in cycles),
    )
