"""The dispatcher's own records in PostgreSQL: holds, decisions, the incidents each order covers, crew-update
receipts, SLA breaches, supervisors' notifications, and the queries its timers run.

Work-order state itself changes only in ``store.work_orders``; everything here is written in the caller's
transaction next to those changes, so a decision and what it did commit together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from domain.incident_events import format_time
from domain.incidents import IncidentState
from domain.sla import SlaStage
from domain.work_orders import AWAITING_DISPATCH, WorkOrder, WorkOrderState
from store.work_orders import enqueue, get_work_order

NOTIFICATIONS_TOPIC = "notifications"


# --- serialising decisions about one area -------------------------------------------------------------------------


def lock_area(conn: psycopg.Connection[Any], area_key: str) -> None:
    """Serialise decisions about incidents of one area (a parent and its children share it) until commit.

    Events of a parent and of its children travel on different partitions and may be handled by different
    dispatchers at once; taken before projecting, this lock makes each see the other's outcome.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("dispatch:" + area_key,))


def first_sight(conn: psycopg.Connection[Any], incident_id: str, seq: int) -> bool:
    """Mark an incident event as seen by the dispatcher; True the first time. A replay or a redelivery is False.

    Kept apart from the projection (``incident_events``): the detection worker projects the same events, and
    which of the two gets there first must not decide whether the dispatcher decides.
    """
    row = conn.execute(
        "INSERT INTO dispatch_seen_events (incident_id, seq) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING seq",
        (incident_id, seq),
    ).fetchone()
    return row is not None


# --- holds ------------------------------------------------------------------------------------------------------


def hold_incident(
    conn: psycopg.Connection[Any], incident_id: str, *, held_at: datetime, until: datetime, area_key: str
) -> bool:
    row = conn.execute(
        """
        INSERT INTO dispatch_holds (incident_id, held_at, hold_until, area_key) VALUES (%s, %s, %s, %s)
        ON CONFLICT (incident_id) DO NOTHING RETURNING incident_id
        """,
        (incident_id, held_at, until, area_key),
    ).fetchone()
    return row is not None


def held_until(conn: psycopg.Connection[Any], incident_id: str) -> datetime | None:
    row = conn.execute("SELECT hold_until FROM dispatch_holds WHERE incident_id = %s", (incident_id,)).fetchone()
    return row[0] if row else None


def drop_hold(conn: psycopg.Connection[Any], incident_id: str) -> bool:
    row = conn.execute(
        "DELETE FROM dispatch_holds WHERE incident_id = %s RETURNING incident_id", (incident_id,)
    ).fetchone()
    return row is not None


def due_holds(conn: psycopg.Connection[Any], now: datetime, limit: int = 100) -> list[tuple[str, str]]:
    """(incident id, area key) of holds that have ended, oldest first."""
    rows = conn.execute(
        "SELECT incident_id, area_key FROM dispatch_holds WHERE hold_until <= %s ORDER BY hold_until LIMIT %s",
        (now, limit),
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


# --- decisions and the incidents an order covers ----------------------------------------------------------------


def record_decision(
    conn: psycopg.Connection[Any],
    incident_id: str,
    decision: str,
    *,
    at: datetime,
    event_seq: int | None = None,
    work_order_id: str | None = None,
    detail: str = "",
) -> None:
    conn.execute(
        """
        INSERT INTO dispatch_decisions (incident_id, event_seq, decided_at, decision, work_order_id, detail)
        VALUES (%s, %s, %s, %s, %s, %s)
        """,
        (incident_id, event_seq, at, decision, work_order_id, detail),
    )


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    incident_id: str
    event_seq: int | None
    decided_at: datetime
    decision: str
    work_order_id: str | None
    detail: str


def decisions_for(conn: psycopg.Connection[Any], incident_id: str) -> list[DecisionRecord]:
    """Why an incident has (or has no) work order: every decision about it, oldest first."""
    rows = conn.execute(
        """
        SELECT incident_id, event_seq, decided_at, decision, work_order_id, detail FROM dispatch_decisions
        WHERE incident_id = %s ORDER BY id
        """,
        (incident_id,),
    ).fetchall()
    return [DecisionRecord(*row) for row in rows]


def attach_incident(
    conn: psycopg.Connection[Any], work_order_id: str, incident_id: str, *, role: str, at: datetime
) -> bool:
    row = conn.execute(
        """
        INSERT INTO work_order_incidents (work_order_id, incident_id, role, attached_at) VALUES (%s, %s, %s, %s)
        ON CONFLICT (work_order_id, incident_id) DO NOTHING RETURNING incident_id
        """,
        (work_order_id, incident_id, role, at),
    ).fetchone()
    return row is not None


def covered_incident_ids(conn: psycopg.Connection[Any], work_order_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT incident_id FROM work_order_incidents WHERE work_order_id = %s ORDER BY role DESC, incident_id",
        (work_order_id,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def parent_of(conn: psycopg.Connection[Any], incident_id: str) -> str | None:
    """The incident's parent, from the projection or from a correlation link not yet applied to it."""
    row = conn.execute(
        """
        SELECT COALESCE(
            (SELECT parent_id FROM incidents WHERE id = %(id)s),
            (SELECT parent_id FROM incident_correlations WHERE child_id = %(id)s))
        """,
        {"id": incident_id},
    ).fetchone()
    return row[0] if row else None


def children_of(conn: psycopg.Connection[Any], incident_id: str) -> list[str]:
    """Incidents put under ``incident_id`` that the projection holds (links to children not yet seen are left)."""
    rows = conn.execute(
        """
        SELECT id FROM incidents WHERE parent_id = %(id)s
        UNION SELECT c.child_id FROM incident_correlations c JOIN incidents i ON i.id = c.child_id
              WHERE c.parent_id = %(id)s
        ORDER BY 1
        """,
        {"id": incident_id},
    ).fetchall()
    return [str(r[0]) for r in rows]


def orders_covering(conn: psycopg.Connection[Any], incident_id: str, *, states: Sequence[WorkOrderState]) -> list[str]:
    rows = conn.execute(
        """
        SELECT w.id FROM work_order_incidents l JOIN work_orders w ON w.id = l.work_order_id
        WHERE l.incident_id = %s AND w.state = ANY(%s) ORDER BY w.id
        """,
        (incident_id, [s.value for s in states]),
    ).fetchall()
    return [str(r[0]) for r in rows]


@dataclass(frozen=True, slots=True)
class CoveredIncidentRow:
    id: str
    state: IncidentState
    cleared_at: datetime | None
    came_back: bool


def covered_incidents(
    conn: psycopg.Connection[Any], work_order_id: str, origin_incident_id: str, *, since: datetime
) -> list[CoveredIncidentRow]:
    """The incidents a verifying order answers for -- attached ones and every incident under its own -- with
    whether each came back (reopened, or opened under it) after ``since``, in the incidents' event time: an
    incident that opened before the crew's report but reached the projection after it did not come back."""
    rows = conn.execute(
        """
        WITH covered AS (
            SELECT incident_id AS id FROM work_order_incidents WHERE work_order_id = %(order)s
            UNION SELECT %(origin)s
            UNION SELECT id FROM incidents WHERE parent_id = %(origin)s
            UNION SELECT child_id FROM incident_correlations WHERE parent_id = %(origin)s
        )
        SELECT i.id, i.state, i.cleared_at,
               EXISTS (SELECT 1 FROM incident_events e WHERE e.incident_id = i.id AND e.at > %(since)s
                       AND (e.type = 'reopened' OR (e.type = 'opened' AND i.id <> %(origin)s)))
        FROM covered JOIN incidents i ON i.id = covered.id
        ORDER BY i.id
        """,
        {"order": work_order_id, "origin": origin_incident_id, "since": since},
    ).fetchall()
    return [CoveredIncidentRow(str(r[0]), IncidentState(r[1]), r[2], bool(r[3])) for r in rows]


# --- crews that must not be chosen again for an order -----------------------------------------------------------


def crews_that_passed(conn: psycopg.Connection[Any], work_order_id: str) -> set[str]:
    """Crews that rejected the order, or had it taken away by reassignment (their window to accept passed)."""
    rows = conn.execute(
        """
        SELECT actor_id FROM work_order_events WHERE work_order_id = %(id)s AND action = 'reject'
        UNION
        SELECT previous FROM (
            SELECT action, lag(crew_id) OVER (ORDER BY seq) AS previous
            FROM work_order_events WHERE work_order_id = %(id)s) e
        WHERE action = 'reassign' AND previous IS NOT NULL
        """,
        {"id": work_order_id},
    ).fetchall()
    return {str(r[0]) for r in rows}


def last_event_at(conn: psycopg.Connection[Any], work_order_id: str, actions: Sequence[str]) -> datetime | None:
    row = conn.execute(
        "SELECT max(at) FROM work_order_events WHERE work_order_id = %s AND action = ANY(%s)",
        (work_order_id, list(actions)),
    ).fetchone()
    return row[0] if row else None


# --- the timers' queries ----------------------------------------------------------------------------------------


def lock_order(conn: psycopg.Connection[Any], work_order_id: str) -> WorkOrder | None:
    """The order, locked for this transaction; None when another dispatcher holds it (it is on it) or it is gone."""
    return get_work_order(conn, work_order_id, for_update=True, skip_locked=True)


def orders_awaiting_dispatch(conn: psycopg.Connection[Any], limit: int = 100) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM work_orders WHERE state = ANY(%s) ORDER BY priority, created_at LIMIT %s",
        ([s.value for s in AWAITING_DISPATCH], limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


def dispatched_orders(conn: psycopg.Connection[Any], limit: int = 500) -> list[tuple[str, datetime]]:
    """Orders given to a crew that has not accepted yet, with when it was given them."""
    rows = conn.execute(
        """
        SELECT w.id, (SELECT max(e.at) FROM work_order_events e
                      WHERE e.work_order_id = w.id AND e.action IN ('dispatch', 'reassign'))
        FROM work_orders w WHERE w.state = 'dispatched' ORDER BY w.updated_at LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [(str(r[0]), r[1]) for r in rows if r[1] is not None]


def orders_past_due(conn: psycopg.Connection[Any], now: datetime, limit: int = 500) -> list[str]:
    """Open orders with a due time passed (``domain.sla.overdue_stages`` decides which stages are breached)."""
    rows = conn.execute(
        """
        SELECT id FROM work_orders
        WHERE state NOT IN ('closed', 'cancelled')
          AND (ack_due_at < %(now)s OR arrive_due_at < %(now)s OR resolve_due_at < %(now)s)
          AND NOT EXISTS (SELECT 1 FROM sla_breaches b WHERE b.work_order_id = work_orders.id
                          AND b.stage = 'resolve' AND b.due_at = work_orders.resolve_due_at)
        ORDER BY created_at LIMIT %(limit)s
        """,
        {"now": now, "limit": limit},
    ).fetchall()
    return [str(r[0]) for r in rows]


def orders_verifying(conn: psycopg.Connection[Any], *, due_by: datetime | None = None) -> list[str]:
    """Orders the sensors verify (``verify_until`` set), all of them or those whose period ended by ``due_by``."""
    if due_by is None:
        rows = conn.execute("SELECT id FROM work_orders WHERE state = 'verifying' AND verify_until IS NOT NULL")
    else:
        rows = conn.execute(
            "SELECT id FROM work_orders WHERE state = 'verifying' AND verify_until <= %s ORDER BY verify_until",
            (due_by,),
        )
    return [str(r[0]) for r in rows.fetchall()]


# --- SLA breaches -----------------------------------------------------------------------------------------------


def record_breach(
    conn: psycopg.Connection[Any], order: WorkOrder, stage: SlaStage, due_at: datetime, *, detected_at: datetime
) -> bool:
    """Record a breach once; True if it is new (a second timer firing, or another dispatcher, finds it there)."""
    row = conn.execute(
        """
        INSERT INTO sla_breaches (work_order_id, stage, due_at, detected_at, priority, department_code)
        VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING stage
        """,
        (order.id, stage.value, due_at, detected_at, order.priority.value, order.department_code),
    ).fetchone()
    return row is not None


@dataclass(frozen=True, slots=True)
class Breach:
    work_order_id: str
    stage: SlaStage
    due_at: datetime
    detected_at: datetime
    priority: str
    department_code: str


def breaches_of(conn: psycopg.Connection[Any], work_order_id: str) -> list[Breach]:
    rows = conn.execute(
        """
        SELECT work_order_id, stage, due_at, detected_at, priority, department_code FROM sla_breaches
        WHERE work_order_id = %s ORDER BY detected_at, stage
        """,
        (work_order_id,),
    ).fetchall()
    return [Breach(r[0], SlaStage(r[1]), r[2], r[3], r[4], r[5]) for r in rows]


# --- crew-update receipts ---------------------------------------------------------------------------------------


def record_receipt(
    conn: psycopg.Connection[Any],
    *,
    crew_id: str,
    message_id: str,
    received_at: datetime,
    reported_at: datetime,
    action: str,
    work_order_id: str | None,
) -> bool:
    """Claim (crew, message id) for this transaction; False if the update was applied before (a redelivery)."""
    row = conn.execute(
        """
        INSERT INTO crew_update_receipts (crew_id, message_id, received_at, reported_at, action, work_order_id, outcome)
        VALUES (%s, %s, %s, %s, %s, %s, 'applied') ON CONFLICT DO NOTHING RETURNING message_id
        """,
        (crew_id, message_id, received_at, reported_at, action, work_order_id),
    ).fetchone()
    return row is not None


def set_receipt_outcome(
    conn: psycopg.Connection[Any], crew_id: str, message_id: str, outcome: str, reason: str = ""
) -> None:
    conn.execute(
        "UPDATE crew_update_receipts SET outcome = %s, reason = %s WHERE crew_id = %s AND message_id = %s",
        (outcome, reason, crew_id, message_id),
    )


@dataclass(frozen=True, slots=True)
class Receipt:
    crew_id: str
    message_id: str
    received_at: datetime
    action: str
    work_order_id: str | None
    outcome: str
    reason: str


def receipts_of(conn: psycopg.Connection[Any], crew_id: str) -> list[Receipt]:
    rows = conn.execute(
        """
        SELECT crew_id, message_id, received_at, action, work_order_id, outcome, reason FROM crew_update_receipts
        WHERE crew_id = %s ORDER BY received_at, message_id
        """,
        (crew_id,),
    ).fetchall()
    return [Receipt(*row) for row in rows]


# --- notifications to supervisors -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    kind: str  # sla_breach, escalated, no_crew, verify_by_hand, verification_failed, unroutable, dispatch_error
    message: str
    dedupe_key: str  # one notification per key, however often a timer fires
    created_at: datetime
    department_code: str | None = None
    unit_code: str | None = None
    work_order_id: str | None = None
    incident_id: str | None = None


def notify(conn: psycopg.Connection[Any], notification: Notification) -> bool:
    """Store a notification for the department's supervisors (the dashboard's list) and publish it to Kafka
    ``notifications`` through the outbox. False (and nothing written) if its dedupe key was notified before."""
    n = notification
    row = conn.execute(
        """
        INSERT INTO notifications (created_at, department_code, unit_code, work_order_id, incident_id, kind, message,
                                   dedupe_key)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id
        """,
        (n.created_at, n.department_code, n.unit_code, n.work_order_id, n.incident_id, n.kind, n.message, n.dedupe_key),
    ).fetchone()
    if row is None:
        return False
    payload = {
        "id": row[0],
        "kind": n.kind,
        "department_code": n.department_code,
        "unit_code": n.unit_code,
        "work_order_id": n.work_order_id,
        "incident_id": n.incident_id,
        "message": n.message,
        "created_at": format_time(n.created_at),
    }
    enqueue(conn, NOTIFICATIONS_TOPIC, n.department_code or "platform", json.dumps(payload).encode())
    return True


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    id: int
    created_at: datetime
    department_code: str | None
    unit_code: str | None
    work_order_id: str | None
    incident_id: str | None
    kind: str
    message: str
    read_at: datetime | None


def list_notifications(
    conn: psycopg.Connection[Any],
    *,
    department_code: str | None = None,
    work_order_id: str | None = None,
    unread_only: bool = False,
    limit: int = 100,
) -> list[NotificationRecord]:
    """Newest first."""
    clauses, params = [], []
    if department_code is not None:
        clauses.append("department_code = %s")
        params.append(department_code)
    if work_order_id is not None:
        clauses.append("work_order_id = %s")
        params.append(work_order_id)
    if unread_only:
        clauses.append("read_at IS NULL")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = conn.execute(
        "SELECT id, created_at, department_code, unit_code, work_order_id, incident_id, kind, message, read_at "  # noqa: S608
        f"FROM notifications{where} ORDER BY created_at DESC, id DESC LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [NotificationRecord(*row) for row in rows]


def mark_notification_read(conn: psycopg.Connection[Any], notification_id: int, *, by: str, at: datetime) -> bool:
    row = conn.execute(
        "UPDATE notifications SET read_at = %s, read_by = %s WHERE id = %s AND read_at IS NULL RETURNING id",
        (at, by, notification_id),
    ).fetchone()
    return row is not None
