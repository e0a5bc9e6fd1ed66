"""The dispatcher's decisions, applied to the database: one transaction per incident event, crew update or timed
rule, in which the projection, the decision, every work-order transition (``store.work_orders.apply_action``),
the decision log and the outbox rows commit together.

The rules themselves are pure and live beside this module: ``policy`` (hold, merge, take over, cancel,
escalate), ``routing`` (category → department → the district's unit), ``timers`` (due times, breaches, the
window to accept), ``verification`` (the city's verdict), and ``gis.choose_crew`` (which crew). This module reads
what they need, calls them, and writes what they decided. It is synchronous (psycopg); the service runs it in
worker threads, one connection per call, and never holds a lock across two calls.

Connections must be in autocommit mode (the service's pool opens them so): every unit of work is an explicit
``conn.transaction()``, so a timer's items commit one by one instead of piling up in one implicit transaction.

Lock order, to stay free of deadlocks: an area's advisory lock (``store.dispatch.lock_area``) before any work
order row; crew updates and timers lock only work-order rows, one order per transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg

from domain.catalogue import Catalogue
from domain.categories import Priority
from domain.crew_messages import CrewTask, CrewUpdate, TaskStatus, encode_crew_task
from domain.crew_tasks import crew_task_topic
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind, area_key
from domain.organization import CrewStatus
from domain.sla import SlaPolicy, overdue_stages
from domain.work_orders import (
    AWAITING_DISPATCH,
    Actor,
    ActorKind,
    WorkOrder,
    WorkOrderAction,
    WorkOrderError,
    WorkOrderState,
)
from gis import CityPack, CrewCandidate, CrewChoice, CrewChoicePolicy, choose_crew
from gis.crew_choice import DEFAULT_POLICY
from store import dispatch as records
from store.crews import CrewRecord, list_crews, record_crew_position
from store.devices import device_department as owning_department
from store.incidents import IncidentRecord, apply_incident_event, get_incident
from store.work_orders import (
    MQTT_CHANNEL,
    WorkOrderNotFoundError,
    apply_action,
    assign_crew,
    count_work_orders_for_incident,
    create_work_order,
    enqueue,
    get_work_order,
    work_order_for_incident,
)
from streams.dispatch.policy import (
    Decision,
    HoldPolicy,
    IncidentSituation,
    Outcome,
    decide,
    decide_release,
    more_urgent,
)
from streams.dispatch.routing import RoutingError, route_incident
from streams.dispatch.timers import acceptance_expired, due_times, tightened_due_times
from streams.dispatch.verification import CoveredIncident, Verdict, judge

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

_WORK_ORDER_NAMESPACE = uuid.UUID("6f1c7f0e-3b1a-5d2e-9a8c-2c1d0f0b7e41")
_REPORT_SOURCES = frozenset({"citizen", "patrol", "dispatcher"})
_FUTURE_SKEW = timedelta(seconds=60)  # a crew app's clock may run this far ahead before its time is not believed


def work_order_id_for(incident_id: str, occurrence: int = 0) -> str:
    """An incident's work order has an id derived from it, so a replay can only ever name the same order. An
    incident that recurs after its order was closed or cancelled gets its next order: occurrence 1, 2, ..."""
    name = incident_id if occurrence == 0 else f"{incident_id}#{occurrence}"
    return "wo-" + str(uuid.uuid5(_WORK_ORDER_NAMESPACE, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    hold: HoldPolicy = field(default_factory=HoldPolicy)
    choice: CrewChoicePolicy = DEFAULT_POLICY
    reassign_unacknowledged: bool = True  # a crew that does not accept within the acknowledge limit loses the order
    actor_id: str = "dispatch"  # the system actor's id in the audit log


class CrewUpdateOutcome(StrEnum):
    APPLIED = "applied"
    REFUSED = "refused"
    POSITION = "position"
    DUPLICATE = "duplicate"


@dataclass(slots=True)
class TickReport:
    """What one pass of the timed rules did (for metrics and logs)."""

    released: int = 0
    dispatched: int = 0
    breaches: int = 0
    reassigned: int = 0
    verified: int = 0
    failed_verification: int = 0

    def total(self) -> int:
        return (
            self.released + self.dispatched + self.breaches + self.reassigned + self.verified + self.failed_verification
        )


class DispatchEngine:
    def __init__(
        self,
        *,
        pack: CityPack,
        catalogue: Catalogue,
        sla: SlaPolicy,
        config: EngineConfig,
        clock: Clock,
    ) -> None:
        self.pack = pack
        self.catalogue = catalogue
        self.sla = sla
        self.config = config
        self.clock = clock
        self.actor = Actor(ActorKind.SYSTEM, config.actor_id)

    # --- incidents ----------------------------------------------------------------------------------------------

    def handle_incident_event(self, conn: psycopg.Connection[Any], event: IncidentEvent) -> list[Outcome]:
        """Project one event of the ``incidents`` topic and decide, in one transaction. An event the dispatcher has
        seen before (a replay, a redelivery) decides nothing again, whether or not the worker projected it first."""
        incident = event.incident
        key = area_key(incident.grid_cell, incident.district) or f"incident:{incident.id}"
        outcomes: list[Outcome] = []
        with conn.transaction():
            records.lock_area(conn, key)
            apply_incident_event(conn, event)
            if not records.first_sight(conn, incident.id, event.seq):
                return outcomes
            now = self.clock()
            own = self._decide(conn, incident.id, event.type, now, area=key, seq=event.seq)
            if own is not None:
                outcomes.append(own)
            if event.type is IncidentEventType.CORRELATED:
                for child in event.children:
                    adopted = self._decide(conn, child, IncidentEventType.CORRELATED, now, area=key)
                    if adopted is not None:
                        outcomes.append(adopted)
            self._verify_orders_covering(conn, incident.id, now)
        return outcomes

    def _situation(self, conn: psycopg.Connection[Any], record: IncidentRecord) -> IncidentSituation:
        incident = record.incident
        return IncidentSituation(
            incident=incident,
            kind=record.kind,
            parent_id=incident.parent_id or records.parent_of(conn, incident.id),
            order=work_order_for_incident(conn, incident.id),
            held_until=records.held_until(conn, incident.id),
        )

    def _decide(
        self,
        conn: psycopg.Connection[Any],
        incident_id: str,
        event_type: IncidentEventType,
        now: datetime,
        *,
        area: str,
        seq: int | None = None,
    ) -> Outcome | None:
        record = get_incident(conn, incident_id)
        if record is None:  # a child named by a correlation before its own events arrived: decided when they do
            return None
        situation = self._situation(conn, record)
        outcome = decide(event_type, situation, policy=self.config.hold, sla=self.sla, now=now)
        return self._carry_out(conn, record, situation, outcome, now, area=area, seq=seq)

    def _carry_out(
        self,
        conn: psycopg.Connection[Any],
        record: IncidentRecord,
        situation: IncidentSituation,
        outcome: Outcome,
        now: datetime,
        *,
        area: str,
        seq: int | None,
    ) -> Outcome:
        incident = record.incident
        order = situation.order
        decision = outcome.decision
        work_order_id = order.id if order else None
        if decision in (Decision.CREATED, Decision.RELEASED):
            records.drop_hold(conn, incident.id)
            return self._register(conn, record, outcome, now, seq=seq)
        if decision is Decision.HELD:
            assert outcome.hold_until is not None
            records.hold_incident(conn, incident.id, held_at=now, until=outcome.hold_until, area_key=area)
        elif decision in (Decision.MERGED, Decision.ATTACHED, Decision.TAKEN_OVER):
            records.drop_hold(conn, incident.id)
            assert situation.parent_id is not None
            parent_order = work_order_for_incident(conn, situation.parent_id)
            if decision is Decision.TAKEN_OVER and order is not None:
                note = f"taken over by the work order of parent incident {situation.parent_id}"
                if parent_order is not None:
                    note += f" ({parent_order.id})"
                apply_action(conn, order.id, WorkOrderAction.CANCEL, actor=self.actor, at=now, note=note)
            if parent_order is not None:
                records.attach_incident(conn, parent_order.id, incident.id, role="attached", at=now)
                work_order_id = parent_order.id
        elif decision is Decision.ESCALATED:
            assert order is not None
            self._raise_priority(conn, order, outcome, now)
        elif decision is Decision.CANCELLED:
            records.drop_hold(conn, incident.id)
            if order is not None and order.state in AWAITING_DISPATCH:
                apply_action(conn, order.id, WorkOrderAction.CANCEL, actor=self.actor, at=now, note=outcome.detail)
        records.record_decision(
            conn, incident.id, decision.value, at=now, event_seq=seq, work_order_id=work_order_id, detail=outcome.detail
        )
        return outcome

    def _raise_priority(self, conn: psycopg.Connection[Any], order: WorkOrder, outcome: Outcome, now: datetime) -> None:
        target = outcome.target_priority
        assert target is not None
        current = order
        while more_urgent(target, current.priority):
            tightened = tightened_due_times(self.sla, current, current.priority.raised())
            current, _ = apply_action(
                conn,
                current.id,
                WorkOrderAction.ESCALATE,
                actor=self.actor,
                at=now,
                note=outcome.detail,
                changes=tightened,
            )
        records.notify(
            conn,
            records.Notification(
                kind="escalated",
                message=f"work order {order.id} ({order.title}): {outcome.detail}",
                dedupe_key=f"escalated:{order.id}:{current.priority.value}",
                created_at=now,
                department_code=order.department_code,
                unit_code=order.unit_code,
                work_order_id=order.id,
                incident_id=order.incident_id,
            ),
        )

    def _register(
        self, conn: psycopg.Connection[Any], record: IncidentRecord, outcome: Outcome, now: datetime, *, seq: int | None
    ) -> Outcome:
        """Register the case (立案): route it, create its work order, adopt its children, dispatch a crew."""
        incident = record.incident
        device_department = None
        if incident.category_code.startswith("device.") and record.kind is IncidentKind.DEVICE:
            device_department = owning_department(conn, incident.source)
        try:
            routing = route_incident(
                self.pack,
                self.catalogue,
                category_code=incident.category_code,
                position=incident.position,
                district_code=incident.district,
                grid_cell_code=incident.grid_cell,
                device_department=device_department,
            )
        except RoutingError as error:
            detail = f"cannot route {incident.category_code}: {error}"
            records.record_decision(conn, incident.id, Decision.UNROUTABLE.value, at=now, event_seq=seq, detail=detail)
            records.notify(
                conn,
                records.Notification(
                    kind="unroutable",
                    message=f"incident {incident.id} ({incident.title}) has no responsible unit: {error}",
                    dedupe_key=f"unroutable:{incident.id}",
                    created_at=now,
                    incident_id=incident.id,
                ),
            )
            return Outcome(decision=Decision.UNROUTABLE, detail=detail)
        priority = Priority.for_severity(incident.severity)
        if record.kind is IncidentKind.REPORT:
            source = incident.source if incident.source in _REPORT_SOURCES else "citizen"
        else:
            source = "sensor"
        order = WorkOrder(
            id=work_order_id_for(incident.id, count_work_orders_for_incident(conn, incident.id)),
            incident_id=incident.id,
            title=incident.title,
            category_code=incident.category_code,
            department_code=routing.department_code,
            unit_code=routing.unit_code,
            priority=priority,
            state=WorkOrderState.CREATED,
            created_at=now,
            updated_at=now,
            position=incident.position,
            grid_cell=routing.grid_cell_code or incident.grid_cell,
            district=routing.district_code,
            **due_times(self.sla, incident.category_code, priority, now).fields(),
        )
        if not create_work_order(conn, order, source=source):
            records.record_decision(
                conn, incident.id, Decision.NO_ACTION.value, at=now, event_seq=seq, detail="work order exists already"
            )
            return Outcome(decision=Decision.NO_ACTION, detail="work order exists already")
        records.attach_incident(conn, order.id, incident.id, role="origin", at=now)
        detail = (
            f"{outcome.detail}; routed {incident.category_code} -> {routing.department_code} -> {routing.unit_code}"
            f" (district {routing.district_code}, by {routing.located_by}), priority {priority.value}"
        )
        records.record_decision(
            conn, incident.id, outcome.decision.value, at=now, event_seq=seq, work_order_id=order.id, detail=detail
        )
        for child in records.children_of(conn, incident.id):
            child_record = get_incident(conn, child)
            if child_record is None:
                continue
            situation = self._situation(conn, child_record)
            adopted = decide(IncidentEventType.CORRELATED, situation, policy=self.config.hold, sla=self.sla, now=now)
            self._carry_out(conn, child_record, situation, adopted, now, area="", seq=None)
        self._dispatch(conn, order.id, now)
        return Outcome(decision=outcome.decision, detail=detail)

    # --- crews ----------------------------------------------------------------------------------------------------

    def _choose(
        self, conn: psycopg.Connection[Any], order: WorkOrder, exclude: set[str]
    ) -> tuple[CrewChoice, str] | None:
        """The crew for ``order``: among its unit's crews first; the department's when the unit has none free."""
        crews = [r for r in list_crews(conn, department_code=order.department_code) if r.crew.id not in exclude]
        destination = order.position
        if destination is None:
            try:
                destination = self.pack.unit(order.unit_code).depot
            except KeyError:
                return None

        def run(candidates: Sequence[CrewRecord]) -> CrewChoice:
            return choose_crew(
                category_code=order.category_code,
                destination=destination,
                candidates=[CrewCandidate(crew=r.crew, open_work_orders=r.open_work_orders) for r in candidates],
                travel=self.pack.travel,
                department_code=order.department_code,
                policy=self.config.choice,
            )

        choice = run([r for r in crews if r.unit_code == order.unit_code])
        scope = f"unit {order.unit_code}"
        if choice.crew is None or choice.crew.status is not CrewStatus.AVAILABLE:
            wider = run(crews)
            if wider.crew is not None and (choice.crew is None or wider.crew.status is CrewStatus.AVAILABLE):
                choice, scope = wider, f"department {order.department_code} (no free crew in unit {order.unit_code})"
        if choice.crew is None:
            return None
        return choice, scope

    def _dispatch(
        self, conn: psycopg.Connection[Any], work_order_id: str, now: datetime, *, reason: str = ""
    ) -> WorkOrder | None:
        """Give the order to the best crew (DISPATCH, or REASSIGN when a crew holds it); None if no crew can go."""
        order = get_work_order(conn, work_order_id, for_update=True)
        if order is None or not (order.state in AWAITING_DISPATCH or order.state is WorkOrderState.DISPATCHED):
            return None
        exclude = records.crews_that_passed(conn, order.id)
        if order.crew_id is not None:
            exclude.add(order.crew_id)
        chosen = self._choose(conn, order, exclude)
        if chosen is None:
            records.notify(
                conn,
                records.Notification(
                    kind="no_crew",
                    message=f"work order {order.id} ({order.title}): no crew of {order.department_code} can take it"
                    + (f" ({reason})" if reason else ""),
                    dedupe_key=f"no_crew:{order.id}:{order.version}",
                    created_at=now,
                    department_code=order.department_code,
                    unit_code=order.unit_code,
                    work_order_id=order.id,
                    incident_id=order.incident_id,
                ),
            )
            return None
        choice, scope = chosen
        assert choice.crew is not None
        ranking = "; ".join(line.explanation for line in choice.ranking[:3])
        note = (f"{reason}; " if reason else "") + f"crew choice among {scope}: {ranking}"
        changes = None
        if order.state is WorkOrderState.REOPENED:  # a new round of work: its due times count from now
            changes = due_times(self.sla, order.category_code, order.priority, now).fields()
        new_order, _ = assign_crew(
            conn, order.id, choice.crew.id, actor=self.actor, at=now, note=note[:2000], changes=changes
        )
        return new_order

    def apply_crew_update(
        self, conn: psycopg.Connection[Any], update: CrewUpdate, *, received_at: datetime
    ) -> CrewUpdateOutcome:
        """Apply one crew update once (per crew and message id), in one transaction.

        The time of record is when the platform received it (``received_at``), never later than now; the crew
        app's own time is kept in the receipt. A refused action is recorded with its reason and the crew is told.
        """
        now = self.clock()
        at = min(received_at, now)
        action = update.action.work_order_action
        with conn.transaction():
            claimed = records.record_receipt(
                conn,
                crew_id=update.crew_id,
                message_id=update.message_id,
                received_at=at,
                reported_at=update.at,
                action=update.action.value,
                work_order_id=update.work_order_id,
            )
            if not claimed:
                return CrewUpdateOutcome.DUPLICATE
            if update.position is not None:
                reported = update.at if update.at <= now + _FUTURE_SKEW else at
                record_crew_position(conn, update.crew_id, reported, update.position, update.work_order_id)
            if action is None:
                records.set_receipt_outcome(conn, update.crew_id, update.message_id, CrewUpdateOutcome.POSITION.value)
                return CrewUpdateOutcome.POSITION
            assert update.work_order_id is not None
            order = get_work_order(conn, update.work_order_id, for_update=True)
            try:
                if order is None:
                    raise WorkOrderNotFoundError(f"work order {update.work_order_id} does not exist")
                new_order, _ = apply_action(
                    conn,
                    order.id,
                    action,
                    actor=Actor(ActorKind.CREW, update.crew_id),
                    at=max(at, order.updated_at),
                    position=update.position,
                    note=update.note,
                )
            except WorkOrderError as error:
                reason = str(error)
                records.set_receipt_outcome(
                    conn, update.crew_id, update.message_id, CrewUpdateOutcome.REFUSED.value, reason
                )
                self._tell_refusal(conn, update, order, reason, now)
                return CrewUpdateOutcome.REFUSED
            moment = max(at, order.updated_at)
            if action is WorkOrderAction.REJECT:
                self._dispatch(conn, new_order.id, moment, reason=f"rejected by {update.crew_id}")
            elif action is WorkOrderAction.RESOLVE:
                self._start_verification(conn, new_order, moment)
        return CrewUpdateOutcome.APPLIED

    def _tell_refusal(
        self, conn: psycopg.Connection[Any], update: CrewUpdate, order: WorkOrder | None, reason: str, now: datetime
    ) -> None:
        if order is None:  # nothing to show the crew: the id names no order (the receipt keeps the reason)
            return
        note = f"refused {update.action.value} ({update.message_id}): {reason}"[:2000]
        if order.crew_id == update.crew_id:
            task = CrewTask.of(order, TaskStatus.UPDATED, sent_at=now, note=note)
        else:
            # Not this crew's order: tell it to drop the order, showing nothing of another crew's task.
            task = CrewTask(
                work_order_id=order.id,
                seq=order.version,
                status=TaskStatus.WITHDRAWN,
                state=order.state,
                incident_id="",
                title="",
                category_code=order.category_code,
                priority=order.priority,
                sent_at=now,
                note=note,
            )
        enqueue(conn, crew_task_topic(update.crew_id), order.id, encode_crew_task(task), channel=MQTT_CHANNEL)

    # --- verification -----------------------------------------------------------------------------------------------

    def _start_verification(self, conn: psycopg.Connection[Any], order: WorkOrder, at: datetime) -> None:
        if self.sla.verified_by_hand(order.category_code):
            apply_action(
                conn,
                order.id,
                WorkOrderAction.START_VERIFICATION,
                actor=self.actor,
                at=at,
                note=f"{order.category_code} is verified by hand: waiting for a dispatcher",
            )
            records.notify(
                conn,
                records.Notification(
                    kind="verify_by_hand",
                    message=f"work order {order.id} ({order.title}) is reported resolved: verify it on site",
                    dedupe_key=f"verify_by_hand:{order.id}:{order.version}",
                    created_at=at,
                    department_code=order.department_code,
                    unit_code=order.unit_code,
                    work_order_id=order.id,
                    incident_id=order.incident_id,
                ),
            )
            return
        period = self.sla.verification_period(order.category_code)
        apply_action(
            conn,
            order.id,
            WorkOrderAction.START_VERIFICATION,
            actor=self.actor,
            at=at,
            note=f"verification by the sensors: the incident must clear and stay normal for "
            f"{period.total_seconds() / 60:g} min",
            changes={"verify_until": at + period},
        )

    def _verify_orders_covering(self, conn: psycopg.Connection[Any], incident_id: str, now: datetime) -> None:
        """A covered incident changed: judge the verifying orders that answer for it now, not at their deadline."""
        ids = set(records.orders_covering(conn, incident_id, states=[WorkOrderState.VERIFYING]))
        parent = records.parent_of(conn, incident_id)
        if parent is not None:
            parent_order = work_order_for_incident(conn, parent)
            if parent_order is not None and parent_order.state is WorkOrderState.VERIFYING:
                ids.add(parent_order.id)
        for work_order_id in sorted(ids):
            self._judge(conn, work_order_id, now)

    def _judge(self, conn: psycopg.Connection[Any], work_order_id: str, now: datetime) -> Verdict | None:
        with conn.transaction():
            order = records.lock_order(conn, work_order_id)
            if order is None or order.state is not WorkOrderState.VERIFYING or order.verify_until is None:
                return None
            started = records.last_event_at(conn, order.id, [WorkOrderAction.START_VERIFICATION.value]) or now
            covered = [
                CoveredIncident(id=row.id, state=row.state, cleared_at=row.cleared_at, came_back=row.came_back)
                for row in records.covered_incidents(conn, order.id, order.incident_id, since=started)
            ]
            judgement = judge(
                started_at=started,
                period=self.sla.verification_period(order.category_code),
                covered=covered,
                now=now,
                by_hand=self.sla.verified_by_hand(order.category_code),
            )
            if judgement.verdict is Verdict.PASSED:
                apply_action(conn, order.id, WorkOrderAction.VERIFY, actor=self.actor, at=now, note=judgement.reason)
            elif judgement.verdict is Verdict.FAILED:
                apply_action(
                    conn, order.id, WorkOrderAction.FAIL_VERIFICATION, actor=self.actor, at=now, note=judgement.reason
                )
                records.notify(
                    conn,
                    records.Notification(
                        kind="verification_failed",
                        message=f"work order {order.id} ({order.title}) reopened: {judgement.reason}",
                        dedupe_key=f"verification_failed:{order.id}:{order.version}",
                        created_at=now,
                        department_code=order.department_code,
                        unit_code=order.unit_code,
                        work_order_id=order.id,
                        incident_id=order.incident_id,
                    ),
                )
                self._dispatch(conn, order.id, now, reason="re-dispatched after failed verification")
            elif judgement.normal_until is not None and judgement.normal_until > order.verify_until:
                apply_action(
                    conn,
                    order.id,
                    WorkOrderAction.NOTE,
                    actor=self.actor,
                    at=now,
                    note=f"verification extended: {judgement.reason}",
                    changes={"verify_until": judgement.normal_until},
                )
            return judgement.verdict

    # --- the timed rules ------------------------------------------------------------------------------------------

    def tick(self, conn: psycopg.Connection[Any]) -> TickReport:
        """One pass of every timed rule, each item in a transaction of its own (shared safely by dispatchers)."""
        now = self.clock()
        report = TickReport()
        report.released = self._release_holds(conn, now)
        report.breaches = self._record_breaches(conn, now)
        if self.config.reassign_unacknowledged:
            report.reassigned = self._reassign_unaccepted(conn, now)
        report.dispatched = self._retry_waiting(conn, now)
        for work_order_id in records.orders_verifying(conn, due_by=now):
            verdict = self._judge(conn, work_order_id, now)
            if verdict is Verdict.PASSED:
                report.verified += 1
            elif verdict is Verdict.FAILED:
                report.failed_verification += 1
        return report

    def _release_holds(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        released = 0
        for incident_id, key in records.due_holds(conn, now):
            with conn.transaction():
                records.lock_area(conn, key)
                until = records.held_until(conn, incident_id)
                if until is None or until > now:  # another dispatcher released it meanwhile
                    continue
                record = get_incident(conn, incident_id)
                if record is None:
                    records.drop_hold(conn, incident_id)
                    continue
                situation = self._situation(conn, record)
                outcome = decide_release(situation, sla=self.sla)
                records.drop_hold(conn, incident_id)
                self._carry_out(conn, record, situation, outcome, now, area=key, seq=None)
                released += 1
        return released

    def _record_breaches(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        recorded = 0
        for work_order_id in records.orders_past_due(conn, now):
            with conn.transaction():
                order = records.lock_order(conn, work_order_id)
                if order is None:
                    continue
                for stage, due_at in overdue_stages(order, now):
                    if not records.record_breach(conn, order, stage, due_at, detected_at=now):
                        continue
                    recorded += 1
                    note = f"SLA breach: {stage.value} was due {due_at.isoformat(timespec='seconds')}"
                    order, _ = apply_action(
                        conn, order.id, WorkOrderAction.ESCALATE, actor=self.actor, at=now, note=note
                    )
                    records.notify(
                        conn,
                        records.Notification(
                            kind="sla_breach",
                            message=f"work order {order.id} ({order.title}): {note}; now {order.priority.value}",
                            dedupe_key=f"sla_breach:{order.id}:{stage.value}:{due_at.isoformat()}",
                            created_at=now,
                            department_code=order.department_code,
                            unit_code=order.unit_code,
                            work_order_id=order.id,
                            incident_id=order.incident_id,
                        ),
                    )
        return recorded

    def _reassign_unaccepted(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        reassigned = 0
        for work_order_id, assigned_at in records.dispatched_orders(conn):
            order = get_work_order(conn, work_order_id)
            if order is None or not acceptance_expired(self.sla, order, assigned_at=assigned_at, now=now):
                continue
            with conn.transaction():
                locked = records.lock_order(conn, work_order_id)
                if locked is None or locked.version != order.version:
                    continue
                limit = self.sla.limits(order.category_code, order.priority).acknowledge
                reason = f"{order.crew_id} did not accept within {limit.total_seconds() / 60:g} min"
                if self._dispatch(conn, order.id, now, reason=reason) is not None:
                    reassigned += 1
        return reassigned

    def _retry_waiting(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        dispatched = 0
        for work_order_id in records.orders_awaiting_dispatch(conn):
            with conn.transaction():
                order = records.lock_order(conn, work_order_id)
                if order is None or order.state not in AWAITING_DISPATCH:
                    continue
                if self._dispatch(conn, order.id, now) is not None:
                    dispatched += 1
        return dispatched
