"""Each refusal of the work-order domain becomes its precise HTTP status and body."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.errors import ApiError, field_problems, work_order_refusal
from domain.categories import Priority
from domain.work_orders import (
    Actor,
    ActorKind,
    WorkOrder,
    WorkOrderAction,
    WorkOrderError,
    WorkOrderState,
    allowed_actions,
    apply,
)
from store.work_orders import CrewNotAssignableError, WorkOrderNotFoundError

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
A = WorkOrderAction


def _order(state: WorkOrderState, crew: str | None = None) -> WorkOrder:
    return WorkOrder(
        id="wo-1",
        incident_id="inc-1",
        category_code="drainage.waterlogging",
        department_code="water",
        unit_code="water.kallio",
        priority=Priority.P2,
        state=state,
        created_at=T0,
        updated_at=T0,
        crew_id=crew,
    )


def _refusal(order: WorkOrder, action: WorkOrderAction, actor: Actor, crew_id: str | None = None) -> WorkOrderError:
    with pytest.raises(WorkOrderError) as caught:
        apply(order, action, actor=actor, at=T0, crew_id=crew_id)
    return caught.value


DISPATCHER = Actor(ActorKind.DISPATCHER, "li.na")
CREW_A = Actor(ActorKind.CREW, "crew-a")


@pytest.mark.parametrize(
    ("order", "action", "actor", "crew_id", "status", "code"),
    [
        (_order(WorkOrderState.CREATED), A.VERIFY, DISPATCHER, None, 409, "illegal_transition"),
        (_order(WorkOrderState.CLOSED), A.NOTE, DISPATCHER, None, 409, "illegal_transition"),
        (_order(WorkOrderState.VERIFYING, "crew-a"), A.VERIFY, CREW_A, None, 403, "actor_not_allowed"),
        (_order(WorkOrderState.DISPATCHED, "crew-a"), A.ACCEPT, DISPATCHER, None, 403, "actor_not_allowed"),
        (_order(WorkOrderState.DISPATCHED, "crew-b"), A.ACCEPT, CREW_A, None, 403, "not_assigned_crew"),
        (_order(WorkOrderState.CREATED), A.DISPATCH, DISPATCHER, None, 422, "missing_crew"),
        (_order(WorkOrderState.DISPATCHED, "crew-a"), A.REASSIGN, DISPATCHER, "crew-a", 422, "missing_crew"),
    ],
)
def test_domain_refusals_map_to_statuses(
    order: WorkOrder, action: WorkOrderAction, actor: Actor, crew_id: str | None, status: int, code: str
) -> None:
    refusal = work_order_refusal(_refusal(order, action, actor, crew_id), state=order.state)
    assert (refusal.status, refusal.code) == (status, code)
    body = refusal.body()
    assert body["status"] == status
    assert "wo-1" in body["detail"]


def test_an_illegal_move_lists_what_is_allowed_from_the_state_and_for_the_caller() -> None:
    error = _refusal(_order(WorkOrderState.ACCEPTED, "crew-a"), A.RESOLVE, CREW_A)
    refusal = work_order_refusal(error, your_actions=[A.REJECT, A.DEPART, A.ARRIVE, A.NOTE])
    body = refusal.body()
    assert body["state"] == "accepted"
    assert body["allowed_actions"] == sorted(a.value for a in allowed_actions(WorkOrderState.ACCEPTED))
    assert body["your_actions"] == ["arrive", "depart", "note", "reject"]
    assert "cannot resolve when accepted" in body["detail"]


def test_store_refusals_map_too() -> None:
    assert work_order_refusal(WorkOrderNotFoundError("work order x does not exist")).status == 404
    crew = work_order_refusal(CrewNotAssignableError("crew c is off duty"))
    assert (crew.status, crew.code, crew.detail) == (422, "crew_not_assignable", "crew c is off duty")


def test_api_errors_carry_their_extra_fields_and_headers() -> None:
    error = ApiError(401, "unauthorized", "no token", headers={"WWW-Authenticate": "Bearer"}, hint="sign in")
    assert error.body() == {"status": 401, "code": "unauthorized", "detail": "no token", "hint": "sign in"}
    assert error.headers == {"WWW-Authenticate": "Bearer"}


def test_validation_errors_name_where_and_what() -> None:
    problems = field_problems(
        [
            {"loc": ("body", "action"), "msg": "Input should be 'accept' or 'reject'", "ctx": {"expected": "x"}},
            {"loc": ("query", "limit"), "msg": "Input should be less than or equal to 500"},
        ]
    )
    assert problems == [
        {"location": "body.action", "message": "Input should be 'accept' or 'reject' (expected x)"},
        {"location": "query.limit", "message": "Input should be less than or equal to 500"},
    ]
