"""The dispatch policy: what to do with an incident after one of its events. Pure: no I/O, no clock.

One flood, not forty work orders. Incidents that end up under a parent (a composite such as a flood, or a
correlation group, docs/RULES.md "Composites and correlation") must not each get a work order:

* **Hold.** A device incident that correlation or a composite could still adopt -- it has a grid cell, it is not
  critical, and its category family is not one that never waits (gas, fire) -- is held for ``hold_s`` before
  its work order is created. Incidents opened together in one place (the gauges of one flooded street) are put
  under a parent within that window, and the parent's one order answers for all of them.
* **Merge.** An incident that has a parent gets no work order of its own: it is attached to its parent's order
  (and a hold on it is dropped).
* **Take over.** A parent adopting a child whose order no crew holds yet (created, rejected, reopened) takes it
  over: the child's order is cancelled with a note naming the parent, and the child is attached to the parent's
  order. A child whose order a crew already holds keeps it (the crew is on its way) and is attached as well.
* **Release.** A hold ends at its deadline, or at once when the incident becomes critical.
* **Cancel.** An incident that clears before a crew was given its order cancels the order when its category says
  so (``SlaPolicy.cancels_when_cleared``); held, it simply never gets one.
* **Recur.** An incident that reopens after its order was closed (verified fixed) or cancelled gets a new order:
  the problem came back, and a crew must go again.
* **Escalate.** Severity rising to a level whose priority is more urgent than the order's raises the order's
  priority (ESCALATE, one step per action, until it matches).

Composite, correlation and reported incidents are never held: they are the parents, or a person asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from domain.categories import Priority, Severity
from domain.incident_events import IncidentEventType, IncidentKind
from domain.incidents import Incident, IncidentState
from domain.sla import SlaPolicy
from domain.work_orders import AWAITING_DISPATCH, WorkOrder


class Decision(StrEnum):
    """What the dispatcher did about an incident (the ``dispatch_decisions.decision`` column)."""

    CREATED = "created"  # a work order was created (and dispatched if a crew could go)
    HELD = "held"  # held back for correlation; no order yet
    RELEASED = "released"  # the hold ended: the order is created now
    MERGED = "merged"  # it has a parent: no order of its own, attached to the parent's
    ATTACHED = "attached"  # it has a parent and keeps the order a crew already holds; attached to the parent's too
    TAKEN_OVER = "taken_over"  # its order (no crew yet) was cancelled in favour of its parent's
    ESCALATED = "escalated"  # severity rose: the order's priority was raised
    CANCELLED = "cancelled"  # cleared before dispatch: its order cancelled, or none created
    NO_ACTION = "no_action"
    UNROUTABLE = "unroutable"  # no department unit answers for its place
    ERROR = "error"  # the dispatcher failed on this event (recorded, supervisors notified)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldPolicy:
    hold_s: float = 90.0
    exempt_families: frozenset[str] = field(default_factory=lambda: frozenset({"gas", "fire"}))

    @property
    def hold(self) -> timedelta:
        return timedelta(seconds=self.hold_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentSituation:
    """What the dispatcher knows of one incident once its event is projected."""

    incident: Incident
    kind: IncidentKind
    parent_id: str | None  # from the projection or the correlation links (device events never carry it)
    order: WorkOrder | None  # the incident's own work order
    held_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    decision: Decision
    detail: str
    hold_until: datetime | None = None
    target_priority: Priority | None = None  # ESCALATED: the priority the order must reach


def more_urgent(a: Priority, b: Priority) -> bool:
    """True when ``a`` is more urgent than ``b`` (P1 is the most urgent)."""
    order = list(Priority)
    return order.index(a) < order.index(b)


def holdable(situation: IncidentSituation, policy: HoldPolicy) -> bool:
    """Could a parent still adopt this incident soon enough to be worth waiting for?"""
    incident = situation.incident
    family = incident.category_code.split(".", 1)[0]
    return (
        policy.hold_s > 0
        and situation.kind is IncidentKind.DEVICE
        and incident.grid_cell is not None
        and incident.severity < Severity.CRITICAL
        and family not in policy.exempt_families
    )


def _needs_order(incident: Incident, sla: SlaPolicy) -> bool:
    """An incident first seen cleared still needs a look unless its category is cancelled when it clears."""
    if incident.state is IncidentState.OPEN:
        return True
    return incident.state is IncidentState.CLEARED and not sla.cancels_when_cleared(incident.category_code)


def _under_parent(situation: IncidentSituation) -> Outcome:
    order, parent = situation.order, situation.parent_id
    if order is None:
        held = " (its hold is dropped)" if situation.held_until is not None else ""
        return Outcome(decision=Decision.MERGED, detail=f"under parent {parent}: answered by its work order{held}")
    if order.state in AWAITING_DISPATCH:
        return Outcome(
            decision=Decision.TAKEN_OVER,
            detail=f"under parent {parent}: work order {order.id} ({order.state.value}, no crew) is taken over",
        )
    if order.state.is_terminal:
        return Outcome(decision=Decision.MERGED, detail=f"under parent {parent}; its work order {order.id} is final")
    return Outcome(
        decision=Decision.ATTACHED,
        detail=f"under parent {parent}: crew {order.crew_id} keeps work order {order.id} ({order.state.value})",
    )


def decide(
    event_type: IncidentEventType,
    situation: IncidentSituation,
    *,
    policy: HoldPolicy,
    sla: SlaPolicy,
    now: datetime,
) -> Outcome:
    """The decision for one incident after one of its events (the module docstring has the rules)."""
    incident, order = situation.incident, situation.order
    if situation.parent_id is not None:
        return _under_parent(situation)

    if event_type in (IncidentEventType.CLEARED, IncidentEventType.CLOSED):
        cancels = sla.cancels_when_cleared(incident.category_code)
        if situation.held_until is not None:
            if cancels:
                return Outcome(decision=Decision.CANCELLED, detail=f"{event_type.value} while held: no work order")
            return Outcome(
                decision=Decision.NO_ACTION,
                detail=f"{event_type.value} while held; {incident.category_code} is dispatched when the hold ends",
            )
        if order is not None and order.state in AWAITING_DISPATCH and cancels:
            return Outcome(
                decision=Decision.CANCELLED,
                detail=f"{event_type.value} before a crew took it: {incident.category_code} is cancelled when cleared",
            )
        return Outcome(decision=Decision.NO_ACTION, detail=f"{event_type.value}; the work order goes on")

    if order is not None:
        target = Priority.for_severity(incident.severity)
        if not order.state.is_terminal and more_urgent(target, order.priority):
            return Outcome(
                decision=Decision.ESCALATED,
                detail=f"severity {incident.severity.value}: priority {order.priority.value} -> {target.value}",
                target_priority=target,
            )
        if event_type is IncidentEventType.REOPENED and order.state.is_terminal:
            return Outcome(
                decision=Decision.CREATED,
                detail=f"reopened after work order {order.id} was {order.state.value}: the problem recurred",
            )
        return Outcome(decision=Decision.NO_ACTION, detail=f"work order {order.id} already answers for it")

    if situation.held_until is not None:
        if incident.severity >= Severity.CRITICAL:
            return Outcome(decision=Decision.RELEASED, detail="became critical while held: dispatched at once")
        return Outcome(decision=Decision.NO_ACTION, detail=f"held until {situation.held_until.isoformat()}")

    if not _needs_order(incident, sla):
        return Outcome(decision=Decision.NO_ACTION, detail=f"first seen {incident.state.value}: nothing to dispatch")
    if holdable(situation, policy):
        until = now + policy.hold
        return Outcome(
            decision=Decision.HELD,
            detail=f"held {policy.hold_s:g} s for correlation in grid cell {incident.grid_cell}",
            hold_until=until,
        )
    return Outcome(decision=Decision.CREATED, detail=f"{situation.kind.value} incident: dispatched at once")


def decide_release(situation: IncidentSituation, *, sla: SlaPolicy) -> Outcome:
    """A hold reached its deadline: merge into a parent that appeared, drop it if nothing needs doing, or create."""
    incident = situation.incident
    if situation.parent_id is not None:
        return _under_parent(situation)
    if situation.order is not None:
        return Outcome(decision=Decision.NO_ACTION, detail=f"work order {situation.order.id} already exists")
    if incident.state is IncidentState.CLOSED:
        return Outcome(decision=Decision.NO_ACTION, detail="closed while held: nothing to dispatch")
    if incident.state is IncidentState.CLEARED and sla.cancels_when_cleared(incident.category_code):
        return Outcome(decision=Decision.CANCELLED, detail="cleared while held: no work order")
    return Outcome(decision=Decision.RELEASED, detail="hold ended with no parent: work order created")
