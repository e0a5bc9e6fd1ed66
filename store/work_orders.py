"""Work orders in PostgreSQL: the one place their state changes.

Every change goes through :func:`apply_action` inside the caller's transaction: the row is locked, the domain's
transitions table decides (``domain.work_orders.apply``), the order row is updated, one audit row is appended to
``work_order_events``, and the event is written to the outbox, from which the dispatcher publishes it to Kafka
``workorders``, and one outbox row per crew concerned (``assigned`` / ``updated`` / ``withdrawn``, see
``domain.crew_tasks``) that the relay publishes to ``crews/{crew_id}/tasks``. Change, audit, event and tasks
commit together or not at all.

Public functions (the HTTP API and the dispatcher call these; keep them stable):

* :func:`create_work_order`, :func:`get_work_order`, :func:`work_order_for_incident`, :func:`history`;
* :func:`apply_action` -- every transition, by any actor;
* :func:`assign_crew` -- dispatch or reassign to a named crew, checking the crew can take it;
* :func:`enqueue`, :func:`unpublished`, :func:`claim_unpublished`, :func:`mark_published` -- the outbox.
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
from domain.crew_messages import CrewTask, encode_crew_task
from domain.crew_tasks import crew_task_topic, task_deliveries
from domain.geo import Position
from domain.organization import Crew
from domain.wire import WorkOrderMessage, encode_work_order_message
from domain.work_orders import (
    AWAITING_DISPATCH,
    WITH_CREW,
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
KAFKA_CHANNEL = "kafka"  # outbox rows for a Kafka topic
MQTT_CHANNEL = "mqtt"  # outbox rows for an MQTT topic (crews' tasks)

WORK_ORDER_COLUMNS = """
    id, incident_id, title, source, category_code, department_code, unit_code, priority, state, crew_id,
    ST_X(position) AS lon, ST_Y(position) AS lat, grid_cell_code, district_code, version, escalation_level,
    reopen_count, created_at, updated_at, ack_due_at, arrive_due_at, resolve_due_at, verify_until
"""


class WorkOrderNotFoundError(WorkOrderError):
    pass


def work_order_from_row(row: dict[str, Any]) -> WorkOrder:
    """A ``work_orders`` row selected with :data:`WORK_ORDER_COLUMNS` (as a dict) as a :class:`WorkOrder`."""
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
    """Insert a new order; False (and nothing written) if its incident already has an open one (or the id exists)."""
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
        ON CONFLICT DO NOTHING
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


def get_work_order(
    conn: psycopg.Connection[Any], work_order_id: str, *, for_update: bool = False, skip_locked: bool = False
) -> WorkOrder | None:
    """The order; ``for_update`` locks it for the transaction, ``skip_locked`` returns None instead of waiting
    when another transaction holds it (timers shared by several dispatchers)."""
    lock = (" FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE") if for_update else ""
    with conn.cursor(row_factory=dict_row) as cur:
        query = f"SELECT {WORK_ORDER_COLUMNS} FROM work_orders WHERE id = %s{lock}"  # noqa: S608 - fixed clauses
        row = cur.execute(query, (work_order_id,)).fetchone()
    return work_order_from_row(row) if row else None


def work_order_for_incident(conn: psycopg.Connection[Any], incident_id: str) -> WorkOrder | None:
    """The incident's open work order, else its latest one (an incident that recurred has had several)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"""
            SELECT {WORK_ORDER_COLUMNS} FROM work_orders WHERE incident_id = %s
            ORDER BY state IN ('closed', 'cancelled'), created_at DESC LIMIT 1
            """,  # noqa: S608
            (incident_id,),
        ).fetchone()
    return work_order_from_row(row) if row else None


def count_work_orders_for_incident(conn: psycopg.Connection[Any], incident_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM work_orders WHERE incident_id = %s", (incident_id,)).fetchone()
    return int(row[0]) if row else 0


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
    for delivery in task_deliveries(order, new_order):
        task = CrewTask.of(new_order, delivery.status, sent_at=event.at, note=event.note)
        enqueue(conn, crew_task_topic(delivery.crew_id), new_order.id, encode_crew_task(task), channel=MQTT_CHANNEL)
    return new_order, event


class CrewNotAssignableError(WorkOrderError):
    """The named crew does not exist, or cannot take this order (another department, lacks the skill, off duty)."""


def assign_crew(
    conn: psycopg.Connection[Any],
    work_order_id: str,
    crew_id: str,
    *,
    actor: Actor,
    at: datetime,
    note: str = "",
    changes: dict[str, Any] | None = None,
) -> tuple[WorkOrder, WorkOrderEvent]:
    """Give the order to ``crew_id``: DISPATCH when it waits for a crew, REASSIGN when another crew holds it.

    For a dispatcher choosing a crew by hand (the HTTP API) and for the dispatcher service. Raises
    :class:`CrewNotAssignableError` for a crew that cannot take the order, and the domain's named errors for an
    order in a state where no crew can be given (resolved, verifying, final).
    """
    order = get_work_order(conn, work_order_id, for_update=True)
    if order is None:
        raise WorkOrderNotFoundError(f"work order {work_order_id} does not exist")
    row = conn.execute("SELECT department_code, status, skills FROM crews WHERE id = %s", (crew_id,)).fetchone()
    if row is None:
        raise CrewNotAssignableError(f"crew {crew_id} does not exist")
    department, status, skills = row
    if department != order.department_code:
        raise CrewNotAssignableError(
            f"crew {crew_id} belongs to {department}; work order {work_order_id} is for {order.department_code}"
        )
    crew = Crew(id=crew_id, department_code=department, name=crew_id, skills=frozenset(skills))
    if not crew.can_handle(order.category_code):
        raise CrewNotAssignableError(f"crew {crew_id} has no skill for {order.category_code} (skills: {skills})")
    if status == "off_duty":
        raise CrewNotAssignableError(f"crew {crew_id} is off duty")
    action = WorkOrderAction.DISPATCH if order.state in AWAITING_DISPATCH else WorkOrderAction.REASSIGN
    return apply_action(conn, work_order_id, action, actor=actor, at=at, crew_id=crew_id, note=note, changes=changes)


def open_work_orders_of_crew(conn: psycopg.Connection[Any], crew_id: str) -> list[WorkOrder]:
    """The orders a crew holds now (dispatched to it, accepted, en route, on site), oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {WORK_ORDER_COLUMNS} FROM work_orders WHERE crew_id = %s AND state = ANY(%s) ORDER BY created_at",  # noqa: S608
            (crew_id, [s.value for s in WITH_CREW]),
        ).fetchall()
    return [work_order_from_row(row) for row in rows]


def enqueue(
    conn: psycopg.Connection[Any], topic: str, key: str, payload: bytes, *, channel: str = KAFKA_CHANNEL
) -> None:
    """Write one record to the outbox in the caller's transaction: a Kafka topic, or (``channel="mqtt"``) an
    MQTT topic such as ``crews/{crew_id}/tasks``. The dispatcher's relay publishes it after the commit."""
    conn.execute(
        "INSERT INTO outbox (topic, key, payload, channel) VALUES (%s, %s, %s, %s)", (topic, key, payload, channel)
    )


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    topic: str
    key: str
    payload: bytes
    channel: str = KAFKA_CHANNEL


def unpublished(conn: psycopg.Connection[Any], limit: int = 500) -> list[OutboxRecord]:
    """Unpublished rows in id order, without locking them (for inspection; the relay uses claim_unpublished)."""
    rows = conn.execute(
        "SELECT id, topic, key, payload, channel FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT %s",
        (limit,),
    ).fetchall()
    return [OutboxRecord(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]), str(r[4])) for r in rows]


# Any constant shared by every relay: the transaction-scoped advisory lock that lets one relay publish at a time.
_RELAY_LOCK = 0x0C17_0B0C


def claim_unpublished(conn: psycopg.Connection[Any], limit: int = 500) -> list[OutboxRecord] | None:
    """For the relay, inside its own transaction: the oldest unpublished rows, locked until it commits.

    None when another relay holds the publishing turn. One relay at a time keeps rows published in id order (and
    so each work order's events in seq order); the row locks (``FOR UPDATE SKIP LOCKED``) keep a relay whose
    turn was lost (its session died) from publishing a row another one has claimed.
    """
    turn = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_RELAY_LOCK,)).fetchone()
    if turn is None or not turn[0]:
        return None
    rows = conn.execute(
        """
        SELECT id, topic, key, payload, channel FROM outbox WHERE published_at IS NULL
        ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
        """,
        (limit,),
    ).fetchall()
    return [OutboxRecord(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]), str(r[4])) for r in rows]


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
