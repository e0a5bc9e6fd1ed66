"""Crews: where they are and what they hold (for dispatchers), and a crew's own tasks and position reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Header, Query, Request, Response

from api.auth import Caller, require
from api.context import api_context
from api.errors import ApiError
from api.idempotency import IDEMPOTENCY_HEADER, KEY_PATTERN, perform
from api.schemas import CrewList, CrewOut, PositionOut, PositionReportIn, PositionReportOut, TaskList, problem_responses
from api.views import position_out, work_order_out
from domain.access import Permission, Principal, Role
from domain.geo import Position
from domain.organization import CrewStatus
from store.api_queries import open_orders_by_crew
from store.crews import list_crews, record_crew_position
from store.work_orders import open_work_orders_of_crew

router = APIRouter(prefix="/crews", tags=["crews"])

CrewViewer = Annotated[Principal, Depends(require(Permission.VIEW_CREWS))]
CrewUser = Annotated[Principal, Depends(require(Permission.OWN_TASKS))]


def _crew_id(principal: Principal) -> str:
    if principal.role is not Role.CREW or principal.crew_id is None:
        raise ApiError(403, "not_a_crew", f"{principal.username} does not act for a crew")
    return principal.crew_id


@router.get(
    "",
    response_model=CrewList,
    responses=problem_responses(401, 403, 422),
    summary="Crews: status, position, the orders they hold",
)
def list_(
    request: Request,
    _: CrewViewer,
    department: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = None,
    status: CrewStatus | None = None,
) -> CrewList:
    with api_context(request).pool.connection() as conn:
        crews = list_crews(conn, department_code=department)
        held = open_orders_by_crew(conn)
    return CrewList(
        items=[
            CrewOut(
                id=record.crew.id,
                name=record.crew.name,
                department_code=record.crew.department_code,
                unit_code=record.unit_code,
                skills=sorted(record.crew.skills),
                status=record.crew.status,
                position=position_out(record.crew.position),
                position_at=record.crew.position_at,
                open_work_orders=held.get(record.crew.id, []),
            )
            for record in crews
            if status is None or record.crew.status is status
        ]
    )


@router.get(
    "/me/tasks",
    response_model=TaskList,
    responses=problem_responses(401, 403, 422),
    summary="A crew's own open work orders",
)
def my_tasks(request: Request, principal: CrewUser) -> TaskList:
    crew_id = _crew_id(principal)
    now = datetime.now(UTC)
    with api_context(request).pool.connection() as conn:
        orders = open_work_orders_of_crew(conn, crew_id)
    return TaskList(crew_id=crew_id, items=[work_order_out(order, now=now) for order in orders])


@router.post(
    "/me/position",
    response_model=PositionReportOut,
    responses=problem_responses(400, 401, 403, 422),
    summary="A crew reports where it is (history in crew_positions; the crew's position moves if it is newest)",
)
def report_position(
    request: Request,
    body: PositionReportIn,
    principal: CrewUser,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, pattern=KEY_PATTERN)] = None,
) -> Response:
    crew_id = _crew_id(principal)
    config = api_context(request).config
    now = datetime.now(UTC)
    at = body.at.astimezone(UTC) if body.at else now
    if at > now + config.max_clock_skew:
        raise ApiError(
            422,
            "time_in_future",
            f"at {at.isoformat()} is ahead of the platform's clock by more than "
            f"{int(config.max_clock_skew.total_seconds())} s",
        )
    position = Position(body.lon, body.lat)

    def change(conn: psycopg.Connection[Any]) -> tuple[int, bytes]:
        if body.work_order_id is not None:
            held = {order.id for order in open_work_orders_of_crew(conn, crew_id)}
            if body.work_order_id not in held:
                raise ApiError(
                    422, "not_your_work_order", f"work order {body.work_order_id} is not one crew {crew_id} holds"
                )
        moved = record_crew_position(conn, crew_id, at, position, body.work_order_id)
        out = PositionReportOut(crew_id=crew_id, at=at, position=PositionOut(lon=body.lon, lat=body.lat), moved=moved)
        return 200, out.model_dump_json().encode()

    return perform(
        request,
        Caller.of(principal),
        action="crew.position",
        target=crew_id,
        content=body.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        change=change,
    )
