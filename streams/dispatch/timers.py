"""The dispatcher's timed rules: SLA due times, breaches, and a crew's window to accept. Pure: no I/O, no clock.

* **Due times** are counted from registration (the work order's creation) with the limits of its category and
  priority (``domain.sla``). A re-dispatch after a failed verification starts a new round: due times are counted
  again from the re-dispatch. A priority raised by a *rising severity* tightens the due times (never loosens them);
  a priority raised by an SLA breach does not move them (the breach is already recorded).
* **Breaches** (``domain.sla.overdue_stages``) are recorded once per (order, stage, due time); each one escalates
  the order (priority one step up) and notifies the department's supervisors.
* **Acceptance window.** A crew given an order has the acknowledge limit of its category and priority, counted
  from when it was given the order, to accept it; after that the order is reassigned to another crew (never one
  that rejected it or let its window pass). This is the acknowledge stage's "reassign" -- arrive and resolve
  breaches do not reassign: the crew has accepted and is on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.categories import Priority
from domain.sla import SlaPolicy, SlaStage
from domain.work_orders import WorkOrder, WorkOrderState


@dataclass(frozen=True, slots=True)
class DueTimes:
    ack_due_at: datetime
    arrive_due_at: datetime
    resolve_due_at: datetime

    def fields(self) -> dict[str, Any]:
        """As ``WorkOrder`` fields (for ``apply_action(changes=...)``)."""
        return {
            "ack_due_at": self.ack_due_at,
            "arrive_due_at": self.arrive_due_at,
            "resolve_due_at": self.resolve_due_at,
        }


def due_times(sla: SlaPolicy, category_code: str, priority: Priority, registered_at: datetime) -> DueTimes:
    """The due times of an order of ``category_code`` and ``priority`` registered at ``registered_at``."""
    due = sla.limits(category_code, priority).due(registered_at)
    return DueTimes(due[SlaStage.ACKNOWLEDGE], due[SlaStage.ARRIVE], due[SlaStage.RESOLVE])


def tightened_due_times(sla: SlaPolicy, order: WorkOrder, priority: Priority) -> dict[str, Any]:
    """Due times for ``order`` at the more urgent ``priority``: each the earlier of its current and the new one."""
    new = due_times(sla, order.category_code, priority, order.created_at).fields()
    current = order.ack_due_at, order.arrive_due_at, order.resolve_due_at
    return {
        name: new[name] if value is None else min(new[name], value) for name, value in zip(new, current, strict=True)
    }


def acceptance_expired(sla: SlaPolicy, order: WorkOrder, *, assigned_at: datetime, now: datetime) -> bool:
    """The crew given ``order`` at ``assigned_at`` has not accepted within the acknowledge limit."""
    if order.state is not WorkOrderState.DISPATCHED:
        return False
    return now >= assigned_at + sla.limits(order.category_code, order.priority).acknowledge
