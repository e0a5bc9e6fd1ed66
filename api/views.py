"""Domain values as the API's response bodies (pure conversions, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from api.schemas import (
    ActorOut,
    EvidenceOut,
    HistoryEntryOut,
    IncidentOut,
    PositionOut,
    TimelineEntryOut,
    WorkOrderOut,
)
from domain.access import Permission, Principal, Role
from domain.geo import Position
from domain.sla import SlaStage, overdue_stages
from domain.work_orders import TRANSITIONS, ActorKind, WorkOrder, WorkOrderAction
from store.api_queries import OWING
from store.incidents import IncidentRecord, IncidentTimelineEntry
from store.work_orders import AuditEntry


def incident_href(incident_id: str) -> str:
    return f"/incidents/{quote(incident_id, safe='')}"


def work_order_href(work_order_id: str) -> str:
    return f"/work-orders/{quote(work_order_id, safe='')}"


def position_out(position: Position | None) -> PositionOut | None:
    return None if position is None else PositionOut(lon=position.lon, lat=position.lat)


def incident_out(record: IncidentRecord) -> IncidentOut:
    incident = record.incident
    return IncidentOut(
        id=incident.id,
        href=incident_href(incident.id),
        rule_id=incident.rule_id,
        rule_version=incident.rule_version,
        kind=record.kind,
        source=incident.source,
        category_code=incident.category_code,
        severity=incident.severity,
        state=incident.state,
        title=incident.title,
        condition=incident.condition,
        position=position_out(incident.position),
        grid_cell=incident.grid_cell,
        district=incident.district,
        parent_id=incident.parent_id,
        opened_at=incident.opened_at,
        updated_at=incident.updated_at,
        cleared_at=incident.cleared_at,
        closed_at=incident.closed_at,
        acknowledged_at=incident.acknowledged_at,
        acknowledged_by=incident.acknowledged_by,
        flapping=record.flapping,
        seq=record.seq,
        detail=record.detail,
    )


def evidence_out(record: IncidentRecord) -> list[EvidenceOut]:
    return [
        EvidenceOut(device_id=e.device_id, metric=e.metric, ts=e.ts, value=e.value) for e in record.incident.evidence
    ]


def timeline_out(entries: Sequence[IncidentTimelineEntry]) -> list[TimelineEntryOut]:
    return [
        TimelineEntryOut(seq=e.seq, type=e.type, at=e.at, severity=e.severity, state=e.state, detail=e.detail)
        for e in entries
    ]


_DUE = {
    SlaStage.ACKNOWLEDGE: lambda order: order.ack_due_at,
    SlaStage.ARRIVE: lambda order: order.arrive_due_at,
    SlaStage.RESOLVE: lambda order: order.resolve_due_at,
}


def next_stage(order: WorkOrder) -> tuple[SlaStage | None, datetime | None]:
    """The SLA stage the order owes next and its due time (none once resolved or final)."""
    for stage in SlaStage:
        if order.state.value in OWING[stage]:
            return stage, _DUE[stage](order)
    return None, None


def work_order_out(order: WorkOrder, *, now: datetime) -> WorkOrderOut:
    stage, due = next_stage(order)
    return WorkOrderOut(
        id=order.id,
        href=work_order_href(order.id),
        incident_id=order.incident_id,
        incident_href=incident_href(order.incident_id),
        title=order.title,
        category_code=order.category_code,
        department_code=order.department_code,
        unit_code=order.unit_code,
        priority=order.priority,
        state=order.state,
        crew_id=order.crew_id,
        position=position_out(order.position),
        grid_cell=order.grid_cell,
        district=order.district,
        version=order.version,
        escalation_level=order.escalation_level,
        reopen_count=order.reopen_count,
        created_at=order.created_at,
        updated_at=order.updated_at,
        ack_due_at=order.ack_due_at,
        arrive_due_at=order.arrive_due_at,
        resolve_due_at=order.resolve_due_at,
        verify_until=order.verify_until,
        next_stage=stage,
        next_due_at=due,
        overdue=bool(overdue_stages(order, now)),
    )


def history_out(entry: AuditEntry) -> HistoryEntryOut:
    return HistoryEntryOut(
        seq=entry.seq,
        action=entry.action,
        from_state=entry.from_state,
        to_state=entry.to_state,
        actor=ActorOut(kind=entry.actor.kind, id=entry.actor.id),
        at=entry.at,
        priority=entry.priority,
        crew_id=entry.crew_id,
        position=position_out(entry.position),
        note=entry.note,
    )


def actor_kind_for(principal: Principal) -> ActorKind | None:
    """How a person acts on work orders: as a dispatcher (commanders too), as its crew, or not at all."""
    if principal.may(Permission.MANAGE_WORK_ORDERS):
        return ActorKind.DISPATCHER
    if principal.role is Role.CREW and principal.may(Permission.OWN_TASKS):
        return ActorKind.CREW
    return None


def your_actions(principal: Principal, order: WorkOrder) -> list[WorkOrderAction]:
    """The actions the transitions table lets this person take on the order now."""
    kind = actor_kind_for(principal)
    if kind is None:
        return []
    if kind is ActorKind.CREW and order.crew_id != principal.crew_id:
        return []
    if kind is ActorKind.DISPATCHER and principal.department_code not in (None, order.department_code):
        return []
    return sorted(
        (action for (state, action), step in TRANSITIONS.items() if state is order.state and kind in step.actors),
        key=lambda action: action.value,
    )
