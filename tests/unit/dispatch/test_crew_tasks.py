"""What each crew hears for each transition the dispatcher and crews take, walked through the real table."""

from __future__ import annotations

import pytest

from domain.crew_messages import TaskStatus
from domain.crew_tasks import TaskDelivery, crew_task_topic, task_deliveries
from domain.work_orders import Actor, ActorKind, WorkOrder, WorkOrderAction, apply
from domain.work_orders import WorkOrderState as S
from tests.unit.dispatch.conftest import T0, order

A = WorkOrderAction
SYSTEM = Actor(ActorKind.SYSTEM, "dispatch-1")


def crew(crew_id: str) -> Actor:
    return Actor(ActorKind.CREW, crew_id)


def step(
    before: WorkOrder, action: WorkOrderAction, actor: Actor, crew_id: str | None = None
) -> tuple[WorkOrder, tuple[TaskDelivery, ...]]:
    after, _ = apply(before, action, actor=actor, at=T0, crew_id=crew_id)
    return after, task_deliveries(before, after)


ASSIGNED, UPDATED, WITHDRAWN = TaskStatus.ASSIGNED, TaskStatus.UPDATED, TaskStatus.WITHDRAWN


def test_the_whole_loop_as_the_crew_hears_it() -> None:
    current = order()
    heard = []
    for action, actor, crew_id in [
        (A.DISPATCH, SYSTEM, "c1"),
        (A.ESCALATE, SYSTEM, None),
        (A.ACCEPT, crew("c1"), None),
        (A.DEPART, crew("c1"), None),
        (A.ARRIVE, crew("c1"), None),
        (A.NOTE, crew("c1"), None),
        (A.RESOLVE, crew("c1"), None),
        (A.START_VERIFICATION, SYSTEM, None),
        (A.VERIFY, SYSTEM, None),
    ]:
        current, deliveries = step(current, action, actor, crew_id)
        heard.append((action, deliveries))
    assert [d for _, d in heard] == [
        (TaskDelivery("c1", ASSIGNED),),
        *[(TaskDelivery("c1", UPDATED),)] * 7,
        (TaskDelivery("c1", WITHDRAWN),),  # closed: off the list
    ]
    assert current.state is S.CLOSED


@pytest.mark.parametrize(
    ("state", "action", "actor", "new_crew", "expected"),
    [
        (S.DISPATCHED, A.REASSIGN, SYSTEM, "c2", [("c1", WITHDRAWN), ("c2", ASSIGNED)]),
        (S.ON_SITE, A.REASSIGN, SYSTEM, "c2", [("c1", WITHDRAWN), ("c2", ASSIGNED)]),
        (S.DISPATCHED, A.REJECT, crew("c1"), None, [("c1", WITHDRAWN)]),
        (S.ACCEPTED, A.REJECT, crew("c1"), None, [("c1", WITHDRAWN)]),
        (S.DISPATCHED, A.CANCEL, SYSTEM, None, [("c1", WITHDRAWN)]),
        (S.VERIFYING, A.FAIL_VERIFICATION, SYSTEM, None, [("c1", WITHDRAWN)]),
    ],
)
def test_a_crew_loses_an_order(
    state: S, action: WorkOrderAction, actor: Actor, new_crew: str | None, expected: list[tuple[str, TaskStatus]]
) -> None:
    _, deliveries = step(order(state, crew_id="c1"), action, actor, new_crew)
    assert deliveries == tuple(TaskDelivery(c, s) for c, s in expected)


@pytest.mark.parametrize("state", [S.CREATED, S.REJECTED, S.REOPENED])
def test_an_order_without_a_crew_is_told_to_nobody_until_dispatched(state: S) -> None:
    current = order(state)
    after, deliveries = step(current, A.ESCALATE, SYSTEM)
    assert deliveries == ()
    _, deliveries = step(after, A.DISPATCH, SYSTEM, "c3")
    assert deliveries == (TaskDelivery("c3", ASSIGNED),)
    if state is not S.REOPENED:
        assert step(current, A.CANCEL, SYSTEM)[1] == ()


def test_topics() -> None:
    assert crew_task_topic("water.kallio-1") == "crews/water.kallio-1/tasks"
