"""Which crews hear about a work-order change, and as what (``assigned``, ``updated``, ``withdrawn``). Pure.

Every transition of a work order is one ``workorders`` event; the crews concerned get a :class:`CrewTask` on
``crews/{crew_id}/tasks`` telling their app what to do with it:

* the order moved to a new crew (dispatch, reassignment, re-dispatch after a failed verification):
  ``assigned`` to the new crew;
* the order left a crew (reassigned away, rejected by it, verification failed and it was taken back):
  ``withdrawn`` to that crew;
* the order stayed with its crew: ``withdrawn`` when it became final (cancelled, closed), ``updated`` otherwise
  (accepted, en route, a new priority, a note, verification started ...).

The old and the new order are both needed: the transition event names only the crew the order has *after* it.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.crew_messages import TaskStatus
from domain.work_orders import WorkOrder


@dataclass(frozen=True, slots=True)
class TaskDelivery:
    crew_id: str
    status: TaskStatus


def task_deliveries(before: WorkOrder, after: WorkOrder) -> tuple[TaskDelivery, ...]:
    """The tasks one transition sends, old crew first (so an app that is both sees withdrawn, then assigned)."""
    if before.crew_id == after.crew_id:
        if after.crew_id is None:
            return ()
        status = TaskStatus.WITHDRAWN if after.state.is_terminal else TaskStatus.UPDATED
        return (TaskDelivery(after.crew_id, status),)
    deliveries = []
    if before.crew_id is not None:
        deliveries.append(TaskDelivery(before.crew_id, TaskStatus.WITHDRAWN))
    if after.crew_id is not None:
        deliveries.append(TaskDelivery(after.crew_id, TaskStatus.ASSIGNED))
    return tuple(deliveries)


def crew_task_topic(crew_id: str) -> str:
    """The MQTT topic a crew's app subscribes to (the broker's ACL lets only that crew read it)."""
    return f"crews/{crew_id}/tasks"


def crew_update_topic(crew_id: str) -> str:
    """The MQTT topic a crew's app publishes its actions and position to (only that crew may write it)."""
    return f"crews/{crew_id}/updates"
