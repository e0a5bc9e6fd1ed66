"""The work-order transitions table, walked completely: every (state, action) pair is either the row the table
says or a named error."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from domain.categories import Priority
from domain.geo import Position
from domain.work_orders import (
    TERMINAL_STATES,
    TRANSITIONS,
    Actor,
    ActorKind,
    ActorNotAllowedError,
    IllegalTransitionError,
    MissingCrewError,
    NotAssignedCrewError,
    WorkOrder,
    WorkOrderAction,
    WorkOrderState,
    allowed_actions,
    apply,
)

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SYSTEM = Actor(ActorKind.SYSTEM, "dispatch-agent")
DISPATCHER = Actor(ActorKind.DISPATCHER, "d.li")


def order_in(state: WorkOrderState, crew_id: str | None = "crew-1") -> WorkOrder:
    return WorkOrder(
        id="wo-1",
        incident_id="inc-1",
        category_code="drainage.waterlogging",
        department_code="water",
        unit_code="water.central",
        priority=Priority.P3,
        state=state,
        created_at=T0,
        updated_at=T0,
        crew_id=crew_id,
    )


def actor_for(kind: ActorKind) -> Actor:
    return {
        ActorKind.SYSTEM: SYSTEM,
        ActorKind.DISPATCHER: DISPATCHER,
        ActorKind.CREW: Actor(ActorKind.CREW, "crew-1"),
    }[kind]


ALL_PAIRS = list(itertools.product(WorkOrderState, WorkOrderAction))


@pytest.mark.parametrize(("state", "action"), ALL_PAIRS, ids=[f"{s}-{a}" for s, a in ALL_PAIRS])
def test_every_pair_follows_the_table(state: WorkOrderState, action: WorkOrderAction) -> None:
    transition = TRANSITIONS.get((state, action))
    order = order_in(state)
    new_crew = "crew-2"
    if transition is None:
        for kind in ActorKind:
            with pytest.raises(IllegalTransitionError) as raised:
                apply(order, action, actor=actor_for(kind), at=T0 + timedelta(minutes=1), crew_id=new_crew)
            assert raised.value.state is state
            assert raised.value.action is action
        return
    for kind in ActorKind:
        actor = actor_for(kind)
        if kind not in transition.actors:
            with pytest.raises(ActorNotAllowedError):
                apply(order, action, actor=actor, at=T0 + timedelta(minutes=1), crew_id=new_crew)
            continue
        new_order, event = apply(order, action, actor=actor, at=T0 + timedelta(minutes=1), note="n", crew_id=new_crew)
        assert new_order.state is transition.to
        assert event.from_state is state
        assert event.to_state is transition.to
        assert event.action is action
        assert event.actor == actor
        assert event.seq == order.version + 1 == new_order.version
        assert new_order.updated_at == event.at == T0 + timedelta(minutes=1)


def test_terminal_states_allow_nothing() -> None:
    for state in TERMINAL_STATES:
        assert allowed_actions(state) == frozenset()


def test_every_open_state_can_be_left_or_is_waiting_on_someone() -> None:
    """No dead ends: every non-terminal state has a move that leaves it."""
    for state in WorkOrderState:
        if state.is_terminal:
            continue
        leaving = [a for a in allowed_actions(state) if TRANSITIONS[(state, a)].to is not state]
        assert leaving, f"{state} has no way out"


def test_every_state_is_reachable_from_created() -> None:
    reached = {WorkOrderState.CREATED}
    frontier = [WorkOrderState.CREATED]
    while frontier:
        state = frontier.pop()
        for (source, _action), transition in TRANSITIONS.items():
            if source is state and transition.to not in reached:
                reached.add(transition.to)
                frontier.append(transition.to)
    assert reached == set(WorkOrderState)


def test_happy_path_to_closed_by_verification() -> None:
    crew = Actor(ActorKind.CREW, "crew-7")
    order = order_in(WorkOrderState.CREATED, crew_id=None)
    steps = [
        (WorkOrderAction.DISPATCH, SYSTEM, {"crew_id": "crew-7"}),
        (WorkOrderAction.ACCEPT, crew, {}),
        (WorkOrderAction.DEPART, crew, {"position": Position(24.94, 60.17)}),
        (WorkOrderAction.ARRIVE, crew, {"position": Position(24.95, 60.17)}),
        (WorkOrderAction.RESOLVE, crew, {"note": "pumped out, drain cleared"}),
        (WorkOrderAction.START_VERIFICATION, SYSTEM, {}),
        (WorkOrderAction.VERIFY, SYSTEM, {"note": "water level normal for 30 min"}),
    ]
    events = []
    for minute, (action, actor, extra) in enumerate(steps, start=1):
        order, event = apply(order, action, actor=actor, at=T0 + timedelta(minutes=minute), **extra)  # type: ignore[arg-type]
        events.append(event)
    assert order.state is WorkOrderState.CLOSED
    assert [e.seq for e in events] == list(range(1, 8))
    assert events[2].position == Position(24.94, 60.17)
    assert all(e.crew_id == "crew-7" for e in events)


def test_a_crew_cannot_act_on_another_crews_order() -> None:
    with pytest.raises(NotAssignedCrewError):
        apply(
            order_in(WorkOrderState.DISPATCHED, crew_id="crew-1"),
            WorkOrderAction.ACCEPT,
            actor=Actor(ActorKind.CREW, "crew-9"),
            at=T0,
        )


def test_a_crew_cannot_verify_its_own_work() -> None:
    with pytest.raises(ActorNotAllowedError):
        apply(order_in(WorkOrderState.VERIFYING), WorkOrderAction.VERIFY, actor=Actor(ActorKind.CREW, "crew-1"), at=T0)


def test_dispatch_needs_a_crew_and_reassign_needs_a_different_one() -> None:
    with pytest.raises(MissingCrewError):
        apply(order_in(WorkOrderState.CREATED, crew_id=None), WorkOrderAction.DISPATCH, actor=SYSTEM, at=T0)
    with pytest.raises(MissingCrewError):
        apply(order_in(WorkOrderState.EN_ROUTE), WorkOrderAction.REASSIGN, actor=DISPATCHER, at=T0, crew_id="crew-1")


def test_reject_frees_the_order_and_records_who_rejected() -> None:
    order, event = apply(
        order_in(WorkOrderState.DISPATCHED), WorkOrderAction.REJECT, actor=Actor(ActorKind.CREW, "crew-1"), at=T0
    )
    assert order.crew_id is None
    assert event.crew_id == "crew-1"


def test_escalation_raises_priority_and_keeps_the_state() -> None:
    order = order_in(WorkOrderState.EN_ROUTE)
    for expected in (Priority.P2, Priority.P1, Priority.P1):
        order, event = apply(order, WorkOrderAction.ESCALATE, actor=SYSTEM, at=T0)
        assert order.state is WorkOrderState.EN_ROUTE
        assert order.priority is expected is event.priority
    assert order.escalation_level == 3


def test_failed_verification_reopens_and_counts() -> None:
    order, _ = apply(order_in(WorkOrderState.VERIFYING), WorkOrderAction.FAIL_VERIFICATION, actor=SYSTEM, at=T0)
    assert order.state is WorkOrderState.REOPENED
    assert order.reopen_count == 1
    assert order.crew_id is None


def test_illegal_move_message_names_the_state_and_the_way_out() -> None:
    with pytest.raises(
        IllegalTransitionError, match=r"cannot resolve when created .*allowed from created: cancel, dispatch"
    ):
        apply(order_in(WorkOrderState.CREATED), WorkOrderAction.RESOLVE, actor=SYSTEM, at=T0)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        apply(order_in(WorkOrderState.CREATED), WorkOrderAction.NOTE, actor=SYSTEM, at=datetime(2026, 1, 1))  # noqa: DTZ001
