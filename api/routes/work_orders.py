"""Work orders: the board with filters, one order with its history and SLA, and acting on it.

Every action goes through ``store.work_orders.apply_action`` (or ``assign_crew`` for a dispatcher naming a crew,
which checks that the crew can take the order first), inside :func:`api.idempotency.perform`. Who acts:

* a role with MANAGE_WORK_ORDERS acts as ``Actor(dispatcher, username)``; a dispatcher scoped to a department
  acts only on that department's orders;
* a crew user (OWN_TASKS) acts as ``Actor(crew, crew_id)`` on its own orders. An order the crew never held does
  not exist for it (404); one it held once but no longer does is refused with 403.

The transitions table (``domain.work_orders.TRANSITIONS``) decides which step each kind of actor may take.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from api.auth import Caller, require
from api.context import api_context
from api.errors import ApiError, not_found, work_order_refusal
from api.idempotency import IDEMPOTENCY_HEADER, KEY_PATTERN, perform
from api.schemas import (
    ID_PATTERN,
    ActionIn,
    ActionOut,
    BreachOut,
    IncidentLink,
    OverdueOut,
    SlaOut,
    WorkOrderDetail,
    WorkOrderPage,
    problem_responses,
)
from api.views import actor_kind_for, history_out, incident_href, next_stage, work_order_out, your_actions
from domain.access import Permission, Principal, Role
from domain.categories import Priority
from domain.geo import Position
from domain.sla import overdue_stages
from domain.work_orders import TRANSITIONS, Actor, ActorKind, WorkOrder, WorkOrderAction, WorkOrderError, WorkOrderState
from store.api_queries import WorkOrderFilter, crew_ever_held, list_work_orders, sla_breaches
from store.crews import record_crew_position
from store.incidents import get_incident
from store.work_orders import apply_action, assign_crew, get_work_order, history

router = APIRouter(prefix="/work-orders", tags=["work orders"])

WorkOrderId = Annotated[str, Path(pattern=ID_PATTERN, max_length=128, description="the work order id")]
Code = Annotated[str, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Reader = Annotated[Principal, Depends(require(Permission.VIEW_WORK_ORDERS, Permission.OWN_TASKS))]
Actor_ = Annotated[Principal, Depends(require(Permission.MANAGE_WORK_ORDERS, Permission.OWN_TASKS))]


def _is_crew(principal: Principal) -> bool:
    return principal.role is Role.CREW and not principal.may(Permission.VIEW_WORK_ORDERS)


@router.get(
    "",
    response_model=WorkOrderPage,
    responses=problem_responses(401, 403, 422),
    summary="Work orders by priority, then the due time of the stage they owe next (crews: their own only)",
)
def list_(
    request: Request,
    principal: Reader,
    state: Annotated[list[WorkOrderState] | None, Query(description="repeatable")] = None,
    department: Code | None = None,
    district: Code | None = None,
    crew: Code | None = None,
    priority: Annotated[list[Priority] | None, Query(description="repeatable: P1..P4")] = None,
    overdue: Annotated[bool, Query(description="only orders with an SLA stage past due now")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> WorkOrderPage:
    now = datetime.now(UTC)
    if _is_crew(principal):
        if crew not in (None, principal.crew_id):
            raise ApiError(403, "forbidden", f"crew {principal.crew_id} sees only its own work orders")
        crew = principal.crew_id
    where = WorkOrderFilter(
        states=tuple(state or ()),
        department_code=department,
        district_code=district,
        crew_id=crew,
        priorities=tuple(priority or ()),
        overdue_at=now if overdue else None,
        limit=limit,
        offset=offset,
    )
    with api_context(request).pool.connection() as conn:
        orders, total = list_work_orders(conn, where)
    return WorkOrderPage(
        total=total, limit=limit, offset=offset, items=[work_order_out(order, now=now) for order in orders]
    )


def _visible(principal: Principal, order: WorkOrder | None, work_order_id: str) -> WorkOrder:
    """The order, if this person may see it; a crew sees only the orders it holds now."""
    if order is None or (_is_crew(principal) and order.crew_id != principal.crew_id):
        raise not_found("work order", work_order_id)
    return order


@router.get(
    "/{work_order_id}",
    response_model=WorkOrderDetail,
    responses=problem_responses(401, 403, 404, 422),
    summary="One work order: its incident (follow it to the readings), full history, SLA due times and breaches",
)
def get(request: Request, work_order_id: WorkOrderId, principal: Reader) -> WorkOrderDetail:
    now = datetime.now(UTC)
    with api_context(request).pool.connection() as conn:
        order = _visible(principal, get_work_order(conn, work_order_id), work_order_id)
        steps = history(conn, work_order_id)
        breaches = sla_breaches(conn, work_order_id)
        incident = get_incident(conn, order.incident_id)
    stage, due = next_stage(order)
    return WorkOrderDetail(
        work_order=work_order_out(order, now=now),
        incident=IncidentLink(
            id=incident.incident.id,
            href=incident_href(incident.incident.id),
            rule_id=incident.incident.rule_id,
            rule_version=incident.incident.rule_version,
            title=incident.incident.title,
            condition=incident.incident.condition,
        )
        if incident
        else None,
        history=[history_out(step) for step in steps],
        sla=SlaOut(
            ack_due_at=order.ack_due_at,
            arrive_due_at=order.arrive_due_at,
            resolve_due_at=order.resolve_due_at,
            verify_until=order.verify_until,
            next_stage=stage,
            next_due_at=due,
            overdue=[OverdueOut(stage=s, due_at=at) for s, at in overdue_stages(order, now)],
            breaches=[BreachOut(stage=b.stage, due_at=b.due_at, detected_at=b.detected_at) for b in breaches],
        ),
        your_actions=your_actions(principal, order),
    )


@router.post(
    "/{work_order_id}/actions",
    response_model=ActionOut,
    responses=problem_responses(400, 401, 403, 404, 409, 422),
    summary="Act on a work order: dispatchers dispatch/reassign/escalate/verify/cancel, crews accept/depart/...",
)
def act(
    request: Request,
    work_order_id: WorkOrderId,
    body: ActionIn,
    principal: Actor_,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, pattern=KEY_PATTERN)] = None,
) -> Response:
    kind = actor_kind_for(principal)
    assert kind is not None  # the permission check admits only dispatching roles and crews
    actor = Actor(kind, principal.crew_id if kind is ActorKind.CREW and principal.crew_id else principal.username)
    position = Position(body.position.lon, body.position.lat) if body.position else None

    def change(conn: psycopg.Connection[Any]) -> tuple[int, bytes]:
        order = get_work_order(conn, work_order_id, for_update=True)
        if order is None:
            raise not_found("work order", work_order_id)
        if kind is ActorKind.CREW:
            assert principal.crew_id is not None
            if order.crew_id != principal.crew_id and not crew_ever_held(conn, work_order_id, principal.crew_id):
                raise not_found("work order", work_order_id)
        elif principal.department_code not in (None, order.department_code):
            raise ApiError(
                403,
                "outside_department",
                f"work order {work_order_id} is for {order.department_code}; "
                f"{principal.username} dispatches for {principal.department_code}",
            )
        now = datetime.now(UTC)
        try:
            if (
                body.action in (WorkOrderAction.DISPATCH, WorkOrderAction.REASSIGN)
                and body.crew_id
                and kind is ActorKind.DISPATCHER
                and (order.state, body.action) in TRANSITIONS
            ):
                new_order, event = assign_crew(conn, work_order_id, body.crew_id, actor=actor, at=now, note=body.note)
            else:
                new_order, event = apply_action(
                    conn,
                    work_order_id,
                    body.action,
                    actor=actor,
                    at=now,
                    crew_id=body.crew_id,
                    position=position,
                    note=body.note,
                )
        except WorkOrderError as error:
            raise work_order_refusal(error, state=order.state, your_actions=your_actions(principal, order)) from error
        if kind is ActorKind.CREW and position is not None:
            record_crew_position(conn, actor.id, now, position, work_order_id)
        steps = history(conn, work_order_id)
        out = ActionOut(work_order=work_order_out(new_order, now=now), event=history_out(steps[-1]))
        assert steps[-1].seq == event.seq
        return 200, out.model_dump_json().encode()

    return perform(
        request,
        Caller.of(principal),
        action=f"work_order.{body.action.value}",
        target=work_order_id,
        content=body.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        change=change,
    )
