"""The paths through the work-order transitions table that the dispatcher takes, with the actors it uses: each
must be legal end to end (the whole table is walked in tests/unit/test_work_orders.py)."""

from __future__ import annotations

import pytest

from domain.work_orders import Actor, ActorKind, WorkOrderAction, WorkOrderState, apply
from tests.unit.dispatch.conftest import T0, order

A = WorkOrderAction
S = WorkOrderState
SYSTEM = Actor(ActorKind.SYSTEM, "dispatch-1")
DISPATCHER = Actor(ActorKind.DISPATCHER, "d.li")
C1, C2 = Actor(ActorKind.CREW, "c1"), Actor(ActorKind.CREW, "c2")

Step = tuple[WorkOrderAction, Actor, str | None]
PATHS: dict[str, list[Step]] = {
    "closed by the sensors": [
        (A.DISPATCH, SYSTEM, "c1"),
        (A.ACCEPT, C1, None),
        (A.DEPART, C1, None),
        (A.ARRIVE, C1, None),
        (A.RESOLVE, C1, None),
        (A.START_VERIFICATION, SYSTEM, None),
        (A.VERIFY, SYSTEM, None),
    ],
    "verified by hand": [
        (A.DISPATCH, SYSTEM, "c1"),
        (A.ACCEPT, C1, None),
        (A.ARRIVE, C1, None),
        (A.RESOLVE, C1, None),
        (A.START_VERIFICATION, SYSTEM, None),
        (A.VERIFY, DISPATCHER, None),
    ],
    "reopened and re-dispatched": [
        (A.DISPATCH, SYSTEM, "c1"),
        (A.ACCEPT, C1, None),
        (A.ARRIVE, C1, None),
        (A.RESOLVE, C1, None),
        (A.START_VERIFICATION, SYSTEM, None),
        (A.NOTE, SYSTEM, None),
        (A.FAIL_VERIFICATION, SYSTEM, None),
        (A.DISPATCH, SYSTEM, "c2"),
        (A.ACCEPT, C2, None),
    ],
    "rejected, then another crew": [
        (A.DISPATCH, SYSTEM, "c1"),
        (A.REJECT, C1, None),
        (A.DISPATCH, SYSTEM, "c2"),
        (A.ACCEPT, C2, None),
    ],
    "not accepted in time": [
        (A.DISPATCH, SYSTEM, "c1"),
        (A.ESCALATE, SYSTEM, None),
        (A.REASSIGN, SYSTEM, "c2"),
        (A.ACCEPT, C2, None),
    ],
    "taken over by a parent": [(A.CANCEL, SYSTEM, None)],
    "cleared before a crew took it": [(A.DISPATCH, SYSTEM, "c1"), (A.REJECT, C1, None), (A.CANCEL, SYSTEM, None)],
}


@pytest.mark.parametrize("name", list(PATHS))
def test_the_dispatchers_paths_are_legal(name: str) -> None:
    current = order()
    for action, actor, crew_id in PATHS[name]:
        current, event = apply(current, action, actor=actor, at=T0, crew_id=crew_id)
        assert event.action is action
    assert current.version == len(PATHS[name])


def test_the_reopened_order_counts_its_reopening() -> None:
    current = order()
    for action, actor, crew_id in PATHS["reopened and re-dispatched"]:
        current, _ = apply(current, action, actor=actor, at=T0, crew_id=crew_id)
    assert current.reopen_count == 1
    assert current.crew_id == "c2"
    assert current.state is S.ACCEPTED
