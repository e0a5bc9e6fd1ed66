"""Work orders in PostgreSQL: the one place their state changes.

Every change goes through :func:`apply_action` inside the caller's transaction: the row is locked, the domain's
transitions table decides (``domain.work_orders.apply``), the order row is updated, one audit row is appended to
``work_order_events``, and the event is written to the outbox, from which the dispatcher publishes it to Kafka
``workorders`` (and the crew's MQTT topic). Change, audit and event commit together or not at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from domain.categories import Priority
from domain.geo import Position
from domain.wire import WorkOrderMessage, encode_work_order_message
from domain.work_orders import (
    Actor,
    ActorKind,
    WorkOrder,
    WorkOrderAction,
    WorkOrderError,
    WorkOrderEvent,
    WorkOrderState,
    apply,
)

WORKORDERS_TOPIC = "workorders"

_COLUMNS = """
    id, incident_id, title, source, category_code, department_code, unit_code, priority, state, crew_id,
    ST_X(position) AS lon, ST_Y(position) AS lat, grid_cell_code, district_code, version, escalation_level,
    reopen_count, created_at, updated_at, ack_due_at, arrive_due_at, resolve_due_at, verify_until
"""


class WorkOrderNotFoundError(WorkOrderError):
    pass


def _order(row: dict[str, Any]) -> WorkOrder:
    position = Position(row["lon"], row["lat"]) if row["lon"] is not None else None
    return WorkOrder(
        id=row["id"],
        incident_id=row["incident_id"],
        title=row["title"],
        category_code=row["category_code"],
        department_code=row["department_code"],
        unit_code=row["unit_code"],
        priority=Priority(row["priority"]),
        state=WorkOrderState(row["state"]),
        crew_id=row["crew_id"],
        position=position,
        grid_cell=row["grid_cell_code"],
        district=row["district_code"],
        version=row["version"],
        escalation_level=row["escalation_level"],
        reopen_count=row["reopen_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ack_due_at=row["ack_due_at"],
        arrive_due_at=row["arrive_due_at"],
        resolve_due_at=row["resolve_due_at"],
        verify_until=row["verify_until"],
    )


def create_work_order(conn: psycopg.Connection[Any], order: WorkOrder, *, source: str) -> bool:
    """Insert a new order; False (and nothing written) if its incident already has one."""
    row = conn.execute(
        """
        INSERT INTO work_orders (id, incident_id, title, source, category_code, department_code, unit_code,
                                 priority, state, crew_id, position, grid_cell_code, district_code, version,
                                 created_at, updated_at, ack_due_at, arrive_due_at, resolve_due_at)
        VALUES (%(id)s, %(incident_id)s, %(title)s, %(source)s, %(category)s, %(department)s, %(unit)s,
                %(priority)s, %(state)s, NULL,
                CASE WHEN %(lon)s::float8 IS NULL THEN NULL
                     ELSE ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) END,
                %(grid_cell)s, %(district)s, 0, %(created)s, %(created)s, %(ack)s, %(arrive)s, %(resolve)s)
        ON CONFLICT (incident_id) DO NOTHING
        RETURNING id
        """,
        {
            "id": order.id,
            "incident_id": order.incident_id,
            "title": order.title,
            "source": source,
            "category": order.category_code,
            "department": order.department_code,
            "unit": order.unit_code,
            "priority": order.priority.value,
            "state": order.state.value,
            "lon": order.position.lon if order.position else None,
            "lat": order.position.lat if order.position else None,
            "grid_cell": order.grid_cell,
            "district": order.district,
            "created": order.created_at,
            "ack": order.ack_due_at,
            "arrive": order.arrive_due_at,
            "resolve": order.resolve_due_at,
        },
    ).fetchone()
    return row is not None


def get_work_order(conn: psycopg.Connection[Any], work_order_id: str, *, for_update: bool = False) -> WorkOrder | None:
    lock = " FOR UPDATE" if for_update else ""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_COLUMNS} FROM work_orders WHERE id = %s{lock}", (work_order_id,)).fetchone()  # noqa: S608
    return _order(row) if row else None


def work_order_for_incident(conn: psycopg.Connection[Any], incident_id: str) -> WorkOrder | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_COLUMNS} FROM work_orders WHERE incident_id = %s", (incident_id,)).fetchone()  # noqa: S608
    return _order(row) if row else None


def apply_action(
    conn: psycopg.Connection[Any],
    work_order_id: str,
    action: WorkOrderAction,
    *,
    actor: Actor,
    at: datetime,
    crew_id: str | None = None,
    position: Position | None = None,
    note: str = "",
    changes: dict[str, Any] | None = None,
) -> tuple[WorkOrder, WorkOrderEvent]:
    """Apply one action under a row lock; raises the domain's named errors for illegal moves.

    ``changes`` sets other fields in the same step (e.g. new SLA due times on re-dispatch, ``verify_until``).
    """
    order = get_work_order(conn, work_order_id, for_update=True)
    if order is None:
        raise WorkOrderNotFoundError(f"work order {work_order_id} does not exist")
    new_order, event = apply(order, action, actor=actor, at=at, crew_id=crew_id, position=position, note=note)
    if changes:
        new_order = dataclasses.replace(new_order, **changes)
    conn.execute(
        """
        UPDATE work_orders SET state = %(state)s, crew_id = %(crew)s, priority = %(priority)s, version = %(version)s,
            escalation_level = %(escalation)s, reopen_count = %(reopens)s, updated_at = %(updated)s,
            ack_due_at = %(ack)s, arrive_due_at = %(arrive)s, resolve_due_at = %(resolve)s,
            verify_until = %(verify)s
        WHERE id = %(id)s
        """,
        {
            "id": new_order.id,
            "state": new_order.state.value,
            "crew": new_order.crew_id,
            "priority": new_order.priority.value,
            "version": new_order.version,
            "escalation": new_order.escalation_level,
            "reopens": new_order.reopen_count,
            "updated": new_order.updated_at,
            "ack": new_order.ack_due_at,
            "arrive": new_order.arrive_due_at,
            "resolve": new_order.resolve_due_at,
            "verify": new_order.verify_until,
        },
    )
    conn.execute(
        """
        INSERT INTO work_order_events (work_order_id, seq, action, from_state, to_state, actor_kind, actor_id, at,
                                       priority, crew_id, position, note)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                CASE WHEN %s::float8 IS NULL THEN NULL ELSE ST_SetSRID(ST_MakePoint(%s, %s), 4326) END, %s)
        """,
        (
            event.work_order_id,
            event.seq,
            event.action.value,
            event.from_state.value,
            event.to_state.value,
            event.actor.kind.value,
            event.actor.id,
            event.at,
            event.priority.value,
            event.crew_id,
            event.position.lon if event.position else None,
            event.position.lon if event.position else None,
            event.position.lat if event.position else None,
            event.note,
        ),
    )
    enqueue(conn, WORKORDERS_TOPIC, new_order.id, encode_work_order_message(WorkOrderMessage(event, new_order)))
    return new_order, event


def enqueue(conn: psycopg.Connection[Any], topic: str, key: str, payload: bytes) -> None:
    conn.execute("INSERT INTO outbox (topic, key, payload) VALUES (%s, %s, %s)", (topic, key, payload))


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    topic: str
    key: str
    payload: bytes


def unpublished(conn: psycopg.Connection[Any], limit: int = 500) -> list[OutboxRecord]:
    rows = conn.execute(
        "SELECT id, topic, key, payload FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT %s", (limit,)
    ).fetchall()
    return [OutboxRecord(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]


def mark_published(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    conn.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY(%s)", (list(ids),))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    action: str
    from_state: str
    to_state: str
    actor: Actor
    at: datetime
    priority: str
    crew_id: str | None
    position: Position | None
    note: str


def history(conn: psycopg.Connection[Any], work_order_id: str) -> list[AuditEntry]:
    rows = conn.execute(
        """
        SELECT seq, action, from_state, to_state, actor_kind, actor_id, at, priority, crew_id,
               ST_X(position), ST_Y(position), note
        FROM work_order_events WHERE work_order_id = %s ORDER BY seq
        """,
        (work_order_id,),
    ).fetchall()
    return [
        AuditEntry(
            seq=r[0],
            action=r[1],
            from_state=r[2],
            to_state=r[3],
            actor=Actor(ActorKind(r[4]), r[5]),
            at=r[6],
            priority=r[7],
            crew_id=r[8],
            position=Position(r[9], r[10]) if r[9] is not None else None,
            note=r[11],
        )
        for r in rows
    ]
