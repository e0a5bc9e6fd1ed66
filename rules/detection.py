"""One device's rules, judged reading by reading: the state the worker keeps per device id, and the pure
functions that advance it.

    state, outputs = evaluate(rules, state, reading)       # a reading from the `readings` topic (state None at first)
    state, outputs = observe_status(rules, state, change)  # a birth or Last Will from `device.status`
    state, outputs = tick(rules, state, now)               # a timer: silence, settling and closing incidents
    state, outputs = acknowledge(rules, state, incident_id, by=..., at=...)
    deadline = next_deadline(rules, state)                 # when tick() next has something to do, or None
    data = state_to_json(state); state = state_from_json(rules, data)

``outputs`` are :class:`~domain.incident_events.IncidentEvent` (to the ``incidents`` topic),
:class:`~domain.incident_events.FactChange` (to the facts topic, regrouped by
:func:`domain.incident_events.area_key`) and :class:`~domain.incident_events.ReadingRejected`
(metrics, logs). Nothing here does I/O or reads a clock: ``tick``'s ``now`` is the caller's.

Event-time policy (docs/RULES.md has the long form):

* Rules run on the device's event time ``Reading.ts``. The device's *watermark* is the latest event time applied.
* A reading older than the watermark by at most the allowed lateness (catalogue, per device type) is applied *as if
  it had arrived in order*: the engine keeps the readings of the last ``allowed lateness`` (``pending``) and a
  checkpoint of every rule's state before them (``settled``), and folds the pending readings again, in order, from
  the checkpoint. The verdict after any arrival order therefore equals the verdict of the in-order sequence.
* A reading older than that is *too late*: it is stored by the persist agent but not judged here, so it can neither
  open nor reopen nor clear anything (``ReadingRejected(reason=too_late)``). A reading with the same event time as
  one already applied is a duplicate (at-least-once delivery) and is ignored.
* Silence is about the platform hearing the device, so it runs on ingest time (``Reading.ingested_at``) and on the
  Last Will; the caller's ``tick(now)`` opens the offline incident at the deadline itself, not at the tick.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from domain.categories import Severity
from domain.incident_events import (
    DeviceOutput,
    FactChange,
    IncidentEvent,
    IncidentKind,
    ReadingRejected,
    RejectionReason,
)
from domain.incidents import Evidence, IncidentState
from domain.readings import ConnectionState, Reading, StatusChange
from rules.catalogue import Binding, DeviceProfile, RuleSet
from rules.clock import from_micros, micros_of, to_micros
from rules.conditions import Rule
from rules.lifecycle import (
    QUIET,
    Alarm,
    EvidenceRow,
    LifecyclePolicy,
    Subject,
    Told,
    UnknownIncidentError,
    acknowledge_alarm,
    alarm_from_json,
    alarm_to_json,
    close_alarm,
    drop_alarm,
    due_at,
    hold_alarm,
    raise_alarm,
    settle_alarm,
)

NEVER = 1 << 62  # a deadline that never comes
_OPEN = IncidentState.OPEN.value
STATE_FORMAT = 1  # bump when the JSON layout of DeviceState changes

PendingReading = tuple[int, Mapping[str, float]]  # (event time µs, metrics)


class RuleSlot(NamedTuple):
    """One rule's state on one device."""

    rule_id: str
    rule_version: int
    settled: Any  # detector state over the readings older than the allowed lateness (the checkpoint)
    current: Any  # detector state over every applied reading
    alarm: Alarm


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Everything the rules remember about one device. Times are µs (rules/clock.py); -1 means never.

    Small by construction: a few numbers per rule, the readings of the last allowed-lateness span, and the
    bookkeeping of open incidents.
    """

    device_id: str
    device_type: str | None = None
    grid_cell: str | None = None
    district: str | None = None
    catalogue_version: int = 0  # the RuleSet version ``slots`` are aligned to (0: not yet)
    latest: int = -1  # the watermark: latest event time applied
    heard: int = -1  # latest ingest time of a reading, or birth message
    will_at: int = -1  # a Last Will not yet answered by a reading or birth
    pending: tuple[PendingReading, ...] = ()
    slots: tuple[RuleSlot, ...] = ()
    offline: Alarm = QUIET
    due: int = NEVER  # the earliest event time at which an incident settles or closes by time alone

    def open_incidents(self) -> tuple[str, ...]:
        """Ids of this device's incidents that are open or cleared (not yet closed)."""
        alarms = [slot.alarm for slot in self.slots] + [self.offline]
        return tuple(alarm.tracked.id for alarm in alarms if alarm.tracked is not None)


Outputs = tuple[DeviceOutput, ...]


def evaluate(rules: RuleSet, state: DeviceState | None, reading: Reading) -> tuple[DeviceState, Outputs]:
    """Judge one reading against every rule of the device's type."""
    ts = to_micros(reading.ts)
    if state is None:
        state = DeviceState(reading.device_id)
    device_type = reading.device_type or state.device_type
    profile = rules.profiles.get(device_type) if device_type is not None else None
    latest = state.latest
    in_order = ts > latest
    if not in_order:
        lateness = profile.allowed_lateness if profile is not None else rules.allowed_lateness
        pending = state.pending
        reason = None
        if ts < latest - lateness or (len(pending) >= rules.lateness_max_readings and ts < pending[0][0]):
            # Older than the lateness span, or than every reading of a span that is full: the checkpoint may
            # already hold readings after it, so it can no longer be judged in order.
            reason = RejectionReason.TOO_LATE
        elif any(pending_ts == ts for pending_ts, _ in state.pending):
            reason = RejectionReason.DUPLICATE
        if reason is not None:
            rejected = ReadingRejected(
                device_id=state.device_id, ts=reading.ts, reason=reason, watermark=from_micros(latest)
            )
            return state, (rejected,)

    outputs: list[DeviceOutput] = []
    if state.catalogue_version != rules.version or device_type != state.device_type:
        state = _realign(rules, state, device_type, outputs)
    grid_cell = reading.grid_cell if reading.grid_cell is not None else state.grid_cell
    district = reading.district if reading.district is not None else state.district
    place = (grid_cell, district)
    policy = rules.lifecycle
    slots = state.slots
    offline = state.offline
    due = state.due
    changed_alarms = False

    # The device is heard: an answered Last Will is forgotten, an offline incident clears.
    heard = to_micros(reading.ingested_at)
    will_at = state.will_at
    if will_at >= 0 and heard > will_at:
        will_at = -1
    tracked = offline.tracked
    if tracked is not None and tracked.state == _OPEN and will_at < 0 and profile is not None and profile.silence:
        subject = _subject(profile.silence.rule, state.device_id, place)
        offline, told = drop_alarm(policy, subject, offline, at=max(heard, tracked.opened_at), detail="heard again")
        outputs.extend(told)
        changed_alarms = True
    if heard < state.heard:
        heard = state.heard

    if ts >= due and profile is not None:  # deadlines this event time has passed come first
        slots, offline = _settle(rules, profile, state.device_id, place, slots, offline, ts, outputs)
        changed_alarms = True

    # The pending readings: insert this one in event-time order, move those past the lateness into the checkpoint.
    metrics = reading.metrics
    pending = state.pending
    if in_order:
        latest = ts
        pending = (*pending, (ts, metrics))
    else:
        index = bisect.bisect_left([pending_ts for pending_ts, _ in pending], ts)
        pending = (*pending[:index], (ts, metrics), *pending[index:])
    if profile is None:
        # No rules for an unknown type, but the watermark and the buffer still follow the readings.
        horizon = latest - rules.allowed_lateness
        pending = tuple(item for item in pending if item[0] >= horizon)[-rules.lateness_max_readings :]
        new_state = DeviceState(
            state.device_id, device_type, grid_cell, district, state.catalogue_version, latest, heard, will_at,
            pending, slots, offline, due,
        )  # fmt: skip
        return new_state, tuple(outputs)
    # Readings leave the span by age, or when it holds more than `lateness_max_readings`: a device that reports
    # every few seconds must not drag minutes of readings along in its state (each state is written out whole).
    horizon = latest - profile.allowed_lateness
    promoted: tuple[PendingReading, ...] = ()
    cut = 0
    while pending[cut][0] < horizon:  # the newest reading is the watermark, never past the horizon
        cut += 1
    cut = max(cut, len(pending) - rules.lateness_max_readings)
    if cut:
        promoted = pending[:cut]
        pending = pending[cut:]

    new_slots: list[RuleSlot] | None = None
    for index, binding in enumerate(profile.bindings):
        slot = slots[index]
        detector = binding.detector
        metric = detector.metric
        settled = slot.settled
        for promoted_ts, promoted_metrics in promoted:
            value = promoted_metrics.get(metric)
            if value is not None:
                settled = detector.step(settled, promoted_ts, value, promoted_metrics)
        value = metrics.get(metric)
        alarm = slot.alarm
        if value is None:
            if settled is slot.settled:
                continue
            current = slot.current
        elif in_order:
            current = detector.step(slot.current, ts, value, metrics)
            if binding.states_fact or alarm.tracked is not None or detector.verdict(current).active:
                told_active = detector.verdict(slot.current).active
                alarm, _ = _judge(
                    policy, binding, state.device_id, place, alarm, told_active, current, ts, value, outputs
                )
        else:
            # Fold the pending readings again, in order, from the checkpoint; from the late reading on the history
            # is new, so every step is judged, as in-order arrival would have judged it.
            told_active = detector.verdict(slot.current).active
            current = settled
            for pending_ts, pending_metrics in pending:
                pending_value = pending_metrics.get(metric)
                if pending_value is None:
                    continue
                current = detector.step(current, pending_ts, pending_value, pending_metrics)
                if pending_ts >= ts:
                    alarm, told_active = _judge(
                        policy, binding, state.device_id, place, alarm, told_active, current, pending_ts,
                        pending_value, outputs,
                    )  # fmt: skip
        if alarm is not slot.alarm:
            changed_alarms = True
        if new_slots is None:
            new_slots = list(slots)
        new_slots[index] = RuleSlot(slot.rule_id, slot.rule_version, settled, current, alarm)
    if new_slots is not None:
        slots = tuple(new_slots)
    if changed_alarms:
        due = _earliest_due(policy, slots, offline)
    new_state = DeviceState(
        state.device_id, device_type, grid_cell, district, rules.version, latest, heard, will_at, pending, slots,
        offline, due,
    )  # fmt: skip
    return new_state, tuple(outputs)


def _judge(
    policy: LifecyclePolicy,
    binding: Binding,
    device_id: str,
    place: tuple[str | None, str | None],
    alarm: Alarm,
    told_active: bool,
    after_state: Any,
    ts: int,
    value: float,
    outputs: list[DeviceOutput],
) -> tuple[Alarm, bool]:
    """React to one rule's verdict after a reading: state a fact if it differs from the last one told
    (``told_active``), open/update/clear the incident. Returns the alarm and the fact now told."""
    detector = binding.detector
    rule = binding.rule
    verdict = detector.verdict(after_state)
    metric = detector.metric
    if binding.states_fact and verdict.active != told_active:
        told_active = verdict.active
        outputs.append(
            FactChange(
                rule_id=rule.id,
                device_id=device_id,
                grid_cell=place[0],
                district=place[1],
                active=verdict.active,
                at=from_micros(verdict.since if verdict.active else max(verdict.changed_at, 0)),
                evidence=tuple(
                    Evidence(device_id=device_id, metric=metric, ts=from_micros(t), value=v)
                    for t, v in verdict.evidence[-2:]
                ),
            )
        )
    if not rule.raises_incident:
        return alarm, told_active
    tracked = alarm.tracked
    told: Told
    if verdict.active:
        severity = rule.severities[verdict.level]
        if tracked is None or tracked.state != _OPEN or tracked.quiet_since >= 0:
            evidence = _rows(device_id, metric, verdict.evidence)
            told = raise_alarm(
                policy,
                _subject(rule, device_id, place),
                alarm,
                at=verdict.since,
                severity=severity,
                evidence=evidence,
                rule_version=rule.version,
                detail=_detail(evidence),
            )
        else:
            rose = severity > Severity(tracked.severity)
            if not rose and not (policy.refresh and ts - tracked.updated_at >= policy.refresh):
                return alarm, told_active
            evidence = _rows(device_id, metric, verdict.evidence[-1:]) if rose else ((device_id, metric, ts, value),)
            told = hold_alarm(
                policy,
                _subject(rule, device_id, place),
                alarm,
                at=max(ts, tracked.updated_at),
                severity=severity,
                evidence=evidence,
                detail=_detail(evidence),
            )
    elif tracked is not None and tracked.state == _OPEN and tracked.quiet_since < 0:
        told = drop_alarm(
            policy, _subject(rule, device_id, place), alarm, at=verdict.changed_at, detail=f"{metric} = {value:g}"
        )
    else:
        return alarm, told_active
    outputs.extend(told[1])
    return told[0], told_active


def observe_status(rules: RuleSet, state: DeviceState | None, change: StatusChange) -> tuple[DeviceState, Outputs]:
    """A birth (online) or Last Will (offline) message.

    A retained status replayed by the broker is the device's current state, not news: it is applied only when this
    state knows nothing about the device's connection yet. A status for a device whose type is not yet known (no
    reading seen) is remembered but opens nothing: which silence rule applies depends on the type.
    """
    at = micros_of(change.ts, field="ts")
    if state is None:
        state = DeviceState(change.device_id)
    if change.retained and (state.heard >= 0 or state.will_at >= 0):
        return state, ()
    outputs: list[DeviceOutput] = []
    if state.catalogue_version != rules.version and state.device_type is not None:
        state = _realign(rules, state, state.device_type, outputs)
    profile = rules.profile(state.device_type)
    silence = profile.silence if profile is not None else None
    policy = rules.lifecycle
    place = (state.grid_cell, state.district)
    offline = state.offline
    heard = state.heard
    will_at = state.will_at
    if change.state is ConnectionState.OFFLINE:
        if at <= heard:  # the device spoke after this Will was written: it is stale
            return state, tuple(outputs)
        will_at = at
        tracked = offline.tracked
        if (
            silence is not None
            and silence.condition.last_will
            and silence.rule.raises_incident
            and silence.condition.last_will_grace == 0
            and (tracked is None or tracked.state != _OPEN)
        ):
            offline, told = raise_alarm(
                policy,
                _subject(silence.rule, state.device_id, place),
                offline,
                at=at,
                severity=silence.rule.severities[0],
                evidence=_last_reading_rows(state),
                rule_version=silence.rule.version,
                detail="Last Will: the broker lost the device's connection",
            )
            outputs.extend(told)
    else:
        will_at = -1
        heard = max(heard, at)
        tracked = offline.tracked
        if tracked is not None and tracked.state == _OPEN and silence is not None:
            offline, told = drop_alarm(
                policy, _subject(silence.rule, state.device_id, place), offline, at=max(at, tracked.opened_at),
                detail="birth message: the device is back",
            )  # fmt: skip
            outputs.extend(told)
    due = _earliest_due(policy, state.slots, offline)
    new_state = DeviceState(
        state.device_id, state.device_type, state.grid_cell, state.district, state.catalogue_version, state.latest,
        heard, will_at, state.pending, state.slots, offline, due,
    )  # fmt: skip
    return new_state, tuple(outputs)


def tick(rules: RuleSet, state: DeviceState, now: datetime) -> tuple[DeviceState, Outputs]:
    """Apply what time alone decides by ``now``: silence and unanswered Last Wills open the offline incident (at the
    deadline, not at ``now``), quiet flapping incidents clear, cleared incidents close.

    Live, ``now`` is the worker's clock; a backtest passes its replay time. Calling it more or less often changes
    when events are told, never what they say.
    """
    now_us = micros_of(now, field="now")
    outputs: list[DeviceOutput] = []
    if state.catalogue_version != rules.version and state.device_type is not None:
        state = _realign(rules, state, state.device_type, outputs)
    profile = rules.profile(state.device_type)
    if profile is None:
        return state, tuple(outputs)
    place = (state.grid_cell, state.district)
    slots, offline = state.slots, state.offline
    if state.due <= now_us:
        slots, offline = _settle(rules, profile, state.device_id, place, slots, offline, now_us, outputs)
    silence = profile.silence
    tracked = offline.tracked
    if silence is not None and silence.rule.raises_incident and (tracked is None or tracked.state != _OPEN):
        deadline, detail = _silence_deadline(profile, state)
        if deadline <= now_us:
            offline, told = raise_alarm(
                rules.lifecycle,
                _subject(silence.rule, state.device_id, place),
                offline,
                at=deadline,
                severity=silence.rule.severities[0],
                evidence=_last_reading_rows(state),
                rule_version=silence.rule.version,
                detail=detail,
            )
            outputs.extend(told)
    due = _earliest_due(rules.lifecycle, slots, offline)
    new_state = DeviceState(
        state.device_id, state.device_type, state.grid_cell, state.district, state.catalogue_version, state.latest,
        state.heard, state.will_at, state.pending, slots, offline, due,
    )  # fmt: skip
    return new_state, tuple(outputs)


def next_deadline(rules: RuleSet, state: DeviceState) -> datetime | None:
    """When :func:`tick` will next have something to do for this device (None: only a new message can change it)."""
    moment = state.due
    profile = rules.profile(state.device_type)
    if profile is not None and profile.silence is not None and profile.silence.rule.raises_incident:
        tracked = state.offline.tracked
        if tracked is None or tracked.state != _OPEN:
            moment = min(moment, _silence_deadline(profile, state)[0])
    return None if moment >= NEVER else from_micros(moment)


def acknowledge(
    rules: RuleSet, state: DeviceState, incident_id: str, *, by: str, at: datetime
) -> tuple[DeviceState, tuple[IncidentEvent, ...]]:
    """A person acknowledged one of this device's incidents (open or cleared). Unknown ids raise
    :class:`~rules.lifecycle.UnknownIncidentError` (the incident is closed, or belongs elsewhere)."""
    at_us = micros_of(at, field="at")
    place = (state.grid_cell, state.district)
    for index, slot in enumerate(state.slots):
        tracked = slot.alarm.tracked
        if tracked is not None and tracked.id == incident_id:
            subject = _subject_for(rules, tracked.rule_id, state.device_id, place)
            alarm, told = acknowledge_alarm(subject, slot.alarm, by=by, at=at_us)
            slots = (*state.slots[:index], slot._replace(alarm=alarm), *state.slots[index + 1 :])
            return _replace_alarms(state, slots, state.offline), told
    tracked = state.offline.tracked
    if tracked is not None and tracked.id == incident_id:
        subject = _subject_for(rules, tracked.rule_id, state.device_id, place)
        offline, told = acknowledge_alarm(subject, state.offline, by=by, at=at_us)
        return _replace_alarms(state, state.slots, offline), told
    raise UnknownIncidentError(f"device {state.device_id} holds no open or cleared incident {incident_id}")


# --- helpers of the functions above ------------------------------------------------------------------------------


def _subject(rule: Rule, device_id: str, place: tuple[str | None, str | None]) -> Subject:
    return Subject(
        rule_id=rule.id,
        kind=IncidentKind.DEVICE,
        title=f"{rule.title}: {device_id}",
        condition=rule.description,
        category_code=rule.category_code or "",
        source=device_id,
        grid_cell=place[0],
        district=place[1],
    )


def _subject_for(rules: RuleSet, rule_id: str, device_id: str, place: tuple[str | None, str | None]) -> Subject:
    """The subject of an incident whose rule may have left the catalogue since it opened."""
    rule = rules.rules.get(rule_id)
    if rule is not None:
        return _subject(rule, device_id, place)
    return Subject(
        rule_id=rule_id,
        kind=IncidentKind.DEVICE,
        title=f"{rule_id}: {device_id} (rule withdrawn)",
        condition="rule withdrawn from the catalogue",
        category_code="",
        source=device_id,
        grid_cell=place[0],
        district=place[1],
    )


def _rows(device_id: str, metric: str, samples: tuple[tuple[int, float], ...]) -> tuple[EvidenceRow, ...]:
    return tuple((device_id, metric, ts, value) for ts, value in samples)


def _detail(evidence: tuple[EvidenceRow, ...]) -> str:
    if not evidence:
        return ""
    _, metric, _, value = evidence[-1]
    return f"{metric} = {value:g}"


def _last_reading_rows(state: DeviceState) -> tuple[EvidenceRow, ...]:
    if not state.pending:
        return ()
    ts, metrics = state.pending[-1]
    return tuple((state.device_id, metric, ts, value) for metric, value in sorted(metrics.items()))


def _silence_deadline(profile: DeviceProfile, state: DeviceState) -> tuple[int, str]:
    silence = profile.silence
    assert silence is not None
    deadline, detail = NEVER, ""
    if state.heard >= 0:
        deadline = state.heard + silence.after
        detail = f"nothing heard since {from_micros(state.heard).isoformat()}"
    if silence.condition.last_will and state.will_at >= 0:
        will_deadline = state.will_at + silence.condition.last_will_grace
        if will_deadline < deadline:
            deadline = will_deadline
            detail = f"Last Will at {from_micros(state.will_at).isoformat()}, no reconnect"
    return deadline, detail


def _earliest_due(policy: LifecyclePolicy, slots: tuple[RuleSlot, ...], offline: Alarm) -> int:
    due = NEVER
    for alarm in (*(slot.alarm for slot in slots), offline):
        if alarm.tracked is not None:
            moment = due_at(policy, alarm)
            if moment is not None and moment < due:
                due = moment
    return due


def _settle(
    rules: RuleSet,
    profile: DeviceProfile,
    device_id: str,
    place: tuple[str | None, str | None],
    slots: tuple[RuleSlot, ...],
    offline: Alarm,
    now: int,
    outputs: list[DeviceOutput],
) -> tuple[tuple[RuleSlot, ...], Alarm]:
    policy = rules.lifecycle
    settled_slots = list(slots)
    for index, slot in enumerate(slots):
        moment = due_at(policy, slot.alarm) if slot.alarm.tracked is not None else None
        if moment is not None and moment <= now:
            subject = _subject_for(rules, slot.rule_id, device_id, place)
            alarm, told = settle_alarm(policy, subject, slot.alarm, now=now)
            outputs.extend(told)
            settled_slots[index] = slot._replace(alarm=alarm)
    moment = due_at(policy, offline) if offline.tracked is not None else None
    if moment is not None and moment <= now and profile.silence is not None:
        offline, told = settle_alarm(policy, _subject(profile.silence.rule, device_id, place), offline, now=now)
        outputs.extend(told)
    return tuple(settled_slots), offline


def _realign(rules: RuleSet, state: DeviceState, device_type: str | None, outputs: list[DeviceOutput]) -> DeviceState:
    """Fit the state to the catalogue (a new version, or the device's type changed). A rule kept at the same
    version keeps its state; a rule whose version changed starts afresh, and its incident is closed so that every
    incident belongs to exactly one rule version; a rule that no longer applies has its incident closed."""
    profile = rules.profile(device_type)
    place = (state.grid_cell, state.district)
    at = max(state.latest, state.heard, 0)
    old = {slot.rule_id: slot for slot in state.slots}
    slots: list[RuleSlot] = []
    for binding in profile.bindings if profile is not None else ():
        rule = binding.rule
        slot = old.pop(rule.id, None)
        if slot is not None and slot.rule_version == rule.version and slot.settled is not None:
            slots.append(slot)
            continue
        alarm = QUIET
        if slot is not None and slot.alarm.tracked is not None:
            subject = _subject_for(rules, rule.id, state.device_id, place)
            alarm, told = close_alarm(
                subject, slot.alarm, at=at, detail=f"rule {rule.id} is now version {rule.version}"
            )
            outputs.extend(told)
        if slot is not None and binding.states_fact:
            # The fact starts afresh too; composites must not keep counting the old version's verdict.
            outputs.append(_withdrawn_fact(rule.id, state, at))
        # A fresh detector: the checkpoint starts empty, and the pending readings are folded into its current state
        # (silently: the next reading judges), so that current stays fold(settled, pending).
        initial = binding.detector.initial()
        slots.append(RuleSlot(rule.id, rule.version, initial, _fold(binding, initial, state.pending), alarm))
    for slot in old.values():
        if slot.alarm.tracked is not None:
            subject = _subject_for(rules, slot.rule_id, state.device_id, place)
            _, told = close_alarm(subject, slot.alarm, at=at, detail=f"rule {slot.rule_id} no longer applies")
            outputs.extend(told)
        if slot.rule_id in rules.fact_rules:
            outputs.append(_withdrawn_fact(slot.rule_id, state, at))
    offline = state.offline
    tracked = offline.tracked
    silence = profile.silence if profile is not None else None
    if tracked is not None and (
        silence is None or silence.rule.id != tracked.rule_id or silence.rule.version != tracked.rule_version
    ):
        subject = _subject_for(rules, tracked.rule_id, state.device_id, place)
        offline, told = close_alarm(subject, offline, at=at, detail="the silence rule changed")
        outputs.extend(told)
    new_slots = tuple(slots)
    return DeviceState(
        state.device_id, device_type, state.grid_cell, state.district, rules.version, state.latest, state.heard,
        state.will_at, state.pending, new_slots, offline, _earliest_due(rules.lifecycle, new_slots, offline),
    )  # fmt: skip


def _fold(binding: Binding, settled: Any, pending: tuple[PendingReading, ...]) -> Any:
    """The detector state after the pending readings, from the checkpoint: what ``current`` always is."""
    detector = binding.detector
    metric = detector.metric
    current = settled
    for ts, metrics in pending:
        value = metrics.get(metric)
        if value is not None:
            current = detector.step(current, ts, value, metrics)
    return current


def _withdrawn_fact(rule_id: str, state: DeviceState, at: int) -> FactChange:
    return FactChange(
        rule_id=rule_id,
        device_id=state.device_id,
        grid_cell=state.grid_cell,
        district=state.district,
        active=False,
        at=from_micros(at),
    )


def _replace_alarms(state: DeviceState, slots: tuple[RuleSlot, ...], offline: Alarm) -> DeviceState:
    return DeviceState(
        state.device_id, state.device_type, state.grid_cell, state.district, state.catalogue_version, state.latest,
        state.heard, state.will_at, state.pending, slots, offline, state.due,
    )  # fmt: skip


# --- JSON --------------------------------------------------------------------------------------------------------


def state_to_json(state: DeviceState) -> dict[str, Any]:
    """The state as JSON-serialisable data for the changelog: dicts, tuples (the detector states, which any JSON
    encoder writes as arrays, without a slow conversion to lists here), strings, numbers, booleans and None.
    :func:`state_from_json` reads it back from its decoded JSON (arrays as lists).

    A slot's ``current`` is not written: it is always the checkpoint with the pending readings folded in, so the
    decoder recomputes it exactly, and the saved state is half the size."""
    return {
        "format": STATE_FORMAT,
        "device_id": state.device_id,
        "device_type": state.device_type,
        "grid_cell": state.grid_cell,
        "district": state.district,
        "catalogue_version": state.catalogue_version,
        "latest": state.latest,
        "heard": state.heard,
        "will_at": state.will_at,
        "pending": [(ts, metrics if type(metrics) is dict else dict(metrics)) for ts, metrics in state.pending],
        "slots": [(slot.rule_id, slot.rule_version, slot.settled, alarm_to_json(slot.alarm)) for slot in state.slots],
        "offline": alarm_to_json(state.offline),
    }


def state_from_json(rules: RuleSet, data: Mapping[str, Any]) -> DeviceState:
    """Rebuild a state saved by :func:`state_to_json`. Slots that no longer match the catalogue are kept only for
    their incidents; the next evaluate/tick realigns them (closing what must be closed)."""
    if data.get("format") != STATE_FORMAT:
        raise ValueError(f"device state format {data.get('format')!r} is not {STATE_FORMAT}")
    device_type = data.get("device_type")
    profile = rules.profile(device_type)
    bindings = {binding.rule.id: binding for binding in (profile.bindings if profile is not None else ())}
    version = int(data["catalogue_version"])
    pending = tuple((int(ts), {str(k): float(v) for k, v in metrics.items()}) for ts, metrics in data["pending"])
    slots: list[RuleSlot] = []
    aligned = version == rules.version
    for position, (rule_id, rule_version, settled, alarm) in enumerate(data["slots"]):
        binding = bindings.get(rule_id)
        if (
            binding is None
            or binding.rule.version != rule_version
            or profile is None
            or position >= len(profile.bindings)
            or profile.bindings[position] is not binding
        ):
            aligned = False
            slots.append(RuleSlot(str(rule_id), int(rule_version), None, None, alarm_from_json(alarm)))
            continue
        checkpoint = binding.detector.decode(settled)
        slots.append(
            RuleSlot(
                str(rule_id), int(rule_version), checkpoint, _fold(binding, checkpoint, pending), alarm_from_json(alarm)
            )
        )
    if profile is not None and len(slots) != len(profile.bindings):
        aligned = False
    offline = alarm_from_json(data["offline"])
    new_slots = tuple(slots)
    return DeviceState(
        str(data["device_id"]),
        device_type,
        data.get("grid_cell"),
        data.get("district"),
        version if aligned else 0,
        int(data["latest"]),
        int(data["heard"]),
        int(data["will_at"]),
        pending,
        new_slots,
        offline,
        _earliest_due(rules.lifecycle, new_slots, offline),
    )
