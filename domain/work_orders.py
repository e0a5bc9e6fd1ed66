"""Work orders (工单) and their lifecycle: one transitions table, one function that applies it.

A work order's state says where the work is. Things that happen to a work order without moving it along the
workflow -- an escalation, a note -- are actions that lead back to the same state, so the audit log records them
and the state keeps saying whether the crew is already on site.

States beyond the happy path, and why they are states:
* ``rejected``  -- the assigned crew declined; the order waits for another crew (dispatch is urgent).
* ``reopened``  -- verification by the city failed after a crew reported it resolved; waits for re-dispatch.
  Kept apart from ``created`` so evaluation can count reopen rates.
* ``cancelled`` -- withdrawn (the incident cleared before dispatch, or a dispatcher called it a false alarm).
``reassigned`` and ``escalated``, listed in the first plan as states, are *actions* here (``REASSIGN``,
``ESCALATE``): a reassigned order is simply ``dispatched`` to another crew, and an escalated order keeps its place
in the workflow with a raised priority.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.categories import Priority
from domain.geo import Position
from domain.time import require_utc


class WorkOrderState(StrEnum):
    CREATED = "created"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    EN_ROUTE = "en_route"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    VERIFYING = "verifying"
    CLOSED = "closed"
    REJECTED = "rejected"
    REOPENED = "reopened"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({WorkOrderState.CLOSED, WorkOrderState.CANCELLED})
# States in which the order waits for a crew to be chosen.
AWAITING_DISPATCH = frozenset({WorkOrderState.CREATED, WorkOrderState.REJECTED, WorkOrderState.REOPENED})
# States in which a crew holds the order.
WITH_CREW = frozenset(
    {WorkOrderState.DISPATCHED, WorkOrderState.ACCEPTED, WorkOrderState.EN_ROUTE, WorkOrderState.ON_SITE}
)


class WorkOrderAction(StrEnum):
    DISPATCH = "dispatch"  # assign a crew to an order that has none
    ACCEPT = "accept"
    REJECT = "reject"
    DEPART = "depart"  # crew is en route
    ARRIVE = "arrive"  # crew is on site
    RESOLVE = "resolve"  # crew reports the problem fixed
    START_VERIFICATION = "start_verification"
    VERIFY = "verify"  # the city (sensors) or a dispatcher confirms the fix
    FAIL_VERIFICATION = "fail_verification"
    REASSIGN = "reassign"  # move the order from its crew to another crew
    ESCALATE = "escalate"  # SLA breach or a dispatcher's call: priority up, supervisor notified
    CANCEL = "cancel"
    NOTE = "note"  # a note or position report that does not move the order


class ActorKind(StrEnum):
    SYSTEM = "system"  # the platform's own agents (dispatch, SLA timers, verification)
    DISPATCHER = "dispatcher"
    CREW = "crew"


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class Transition:
    to: WorkOrderState
    actors: frozenset[ActorKind]


S = WorkOrderState
A = WorkOrderAction
_SYS = ActorKind.SYSTEM
_DISP = ActorKind.DISPATCHER
_CREW = ActorKind.CREW


def _t(to: WorkOrderState, *actors: ActorKind) -> Transition:
    return Transition(to, frozenset(actors))


_OPEN_STATES = [state for state in WorkOrderState if not state.is_terminal]

# The one table. (state, action) -> next state and who may do it. Anything not listed is illegal.
TRANSITIONS: Mapping[tuple[WorkOrderState, WorkOrderAction], Transition] = {
    # a crew is chosen
    (S.CREATED, A.DISPATCH): _t(S.DISPATCHED, _SYS, _DISP),
    (S.REJECTED, A.DISPATCH): _t(S.DISPATCHED, _SYS, _DISP),
    (S.REOPENED, A.DISPATCH): _t(S.DISPATCHED, _SYS, _DISP),
    # the crew works the order
    (S.DISPATCHED, A.ACCEPT): _t(S.ACCEPTED, _CREW),
    (S.DISPATCHED, A.REJECT): _t(S.REJECTED, _CREW),
    (S.ACCEPTED, A.REJECT): _t(S.REJECTED, _CREW),
    (S.ACCEPTED, A.DEPART): _t(S.EN_ROUTE, _CREW),
    (S.ACCEPTED, A.ARRIVE): _t(S.ON_SITE, _CREW),  # the crew was already nearby
    (S.EN_ROUTE, A.ARRIVE): _t(S.ON_SITE, _CREW),
    (S.ON_SITE, A.RESOLVE): _t(S.RESOLVED, _CREW),
    # verification is independent of the crew that did the work
    (S.RESOLVED, A.START_VERIFICATION): _t(S.VERIFYING, _SYS, _DISP),
    (S.VERIFYING, A.VERIFY): _t(S.CLOSED, _SYS, _DISP),
    (S.VERIFYING, A.FAIL_VERIFICATION): _t(S.REOPENED, _SYS, _DISP),
    # a dispatcher or a timeout moves the order to another crew, keeping nothing of the old assignment
    **{(state, A.REASSIGN): _t(S.DISPATCHED, _SYS, _DISP) for state in WITH_CREW},
    # escalation and notes keep the order where it is
    **{(state, A.ESCALATE): _t(state, _SYS, _DISP) for state in _OPEN_STATES},
    **{(state, A.NOTE): _t(state, _SYS, _DISP, _CREW) for state in _OPEN_STATES},
    # withdrawal, before the crew has reported the work done
    **{
        (state, A.CANCEL): _t(S.CANCELLED, _SYS, _DISP)
        for state in _OPEN_STATES
        if state not in (S.RESOLVED, S.VERIFYING)
    },
}
del S, A


class WorkOrderError(ValueError):
    """Base of every refusal to change a work order."""


class IllegalTransitionError(WorkOrderError):
    """The action is not allowed from the order's current state."""

    def __init__(self, work_order_id: str, state: WorkOrderState, action: WorkOrderAction) -> None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is state)
        super().__init__(
            f"work order {work_order_id}: cannot {action.value} when {state.value}"
            f" (allowed from {state.value}: {', '.join(allowed) or 'nothing, it is final'})"
        )
        self.work_order_id = work_order_id
        self.state = state
        self.action = action


class ActorNotAllowedError(WorkOrderError):
    """The action is legal from this state, but not for this kind of actor (e.g. a crew verifying its own work)."""


class NotAssignedCrewError(WorkOrderError):
    """A crew acted on an order that is not (or no longer) assigned to it."""


class MissingCrewError(WorkOrderError):
    """Dispatch or reassignment without naming the crew, or reassignment to the same crew."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrder:
    """A case handed to a department's crew. Changes only through :func:`apply`."""

    id: str
    incident_id: str
    category_code: str
    department_code: str
    unit_code: str  # the department's responsible unit for the district, e.g. "water.kallio"
    priority: Priority
    state: WorkOrderState
    created_at: datetime
    updated_at: datetime
    position: Position | None = None
    grid_cell: str | None = None
    district: str | None = None
    crew_id: str | None = None
    version: int = 0  # number of events applied; the next event gets seq = version + 1
    escalation_level: int = 0
    reopen_count: int = 0
    title: str = ""
    ack_due_at: datetime | None = None
    arrive_due_at: datetime | None = None
    resolve_due_at: datetime | None = None
    verify_until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("created_at", "updated_at", "ack_due_at", "arrive_due_at", "resolve_due_at", "verify_until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_utc(value, field=name))


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderEvent:
    """One audited change: exactly one per applied action, in ``seq`` order per work order."""

    work_order_id: str
    seq: int
    action: WorkOrderAction
    from_state: WorkOrderState
    to_state: WorkOrderState
    actor: Actor
    at: datetime
    priority: Priority
    crew_id: str | None = None
    position: Position | None = None
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_utc(self.at, field="at"))


def allowed_actions(state: WorkOrderState) -> frozenset[WorkOrderAction]:
    return frozenset(action for (s, action) in TRANSITIONS if s is state)


def apply(
    order: WorkOrder,
    action: WorkOrderAction,
    *,
    actor: Actor,
    at: datetime,
    crew_id: str | None = None,
    position: Position | None = None,
    note: str = "",
) -> tuple[WorkOrder, WorkOrderEvent]:
    """Apply one action to a work order: the new order and the audit event, or a named error.

    ``crew_id`` names the crew for DISPATCH and REASSIGN and is ignored otherwise.
    """
    transition = TRANSITIONS.get((order.state, action))
    if transition is None:
        raise IllegalTransitionError(order.id, order.state, action)
    if actor.kind not in transition.actors:
        allowed = ", ".join(sorted(transition.actors))
        raise ActorNotAllowedError(f"work order {order.id}: a {actor.kind} may not {action.value} (only {allowed})")
    if actor.kind is ActorKind.CREW and actor.id != order.crew_id:
        raise NotAssignedCrewError(f"work order {order.id} is not assigned to crew {actor.id}")

    changes: dict[str, object] = {}
    if action in (WorkOrderAction.DISPATCH, WorkOrderAction.REASSIGN):
        if not crew_id:
            raise MissingCrewError(f"work order {order.id}: {action.value} needs the crew to assign")
        if action is WorkOrderAction.REASSIGN and crew_id == order.crew_id:
            raise MissingCrewError(f"work order {order.id}: reassignment must name a different crew than {crew_id}")
        changes["crew_id"] = crew_id
    elif action is WorkOrderAction.REJECT:
        changes["crew_id"] = None
    elif action is WorkOrderAction.ESCALATE:
        changes["priority"] = order.priority.raised()
        changes["escalation_level"] = order.escalation_level + 1
    elif action is WorkOrderAction.FAIL_VERIFICATION:
        changes["reopen_count"] = order.reopen_count + 1
        changes["crew_id"] = None

    moment = require_utc(at, field="at")
    new_order = dataclasses.replace(order, state=transition.to, updated_at=moment, version=order.version + 1, **changes)  # type: ignore[arg-type]
    event = WorkOrderEvent(
        work_order_id=order.id,
        seq=new_order.version,
        action=action,
        from_state=order.state,
        to_state=transition.to,
        actor=actor,
        at=moment,
        priority=new_order.priority,
        crew_id=new_order.crew_id if action is not WorkOrderAction.REJECT else order.crew_id,
        position=position,
        note=note,
    )
    return new_order, event
