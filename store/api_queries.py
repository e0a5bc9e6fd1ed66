"""Reads (and the Open311 report row) the HTTP API needs that the other store modules do not offer yet.

Each is a candidate to move next to its table's owner: the incident count beside ``store.incidents``'s list, the
work-order board and SLA breaches beside ``store.work_orders``, the evaluation beside a ``store.evaluation``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from domain.categories import Priority, Severity
from domain.geo import Position
from domain.sla import SlaStage, overdue_stages
from domain.work_orders import WorkOrder, WorkOrderState
from store.work_orders import WORK_ORDER_COLUMNS as _WORK_ORDER_COLUMNS
from store.work_orders import work_order_from_row as _order

# --- incidents ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentWorkOrder:
    order: WorkOrder
    role: Literal["origin", "attached"]  # made for this incident, or the incident was put under it later


def work_orders_of_incident(conn: psycopg.Connection[Any], incident_id: str) -> list[IncidentWorkOrder]:
    """The work order made for the incident, and any it was attached to later (dispatch merges children)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""
            SELECT {_WORK_ORDER_COLUMNS}, 'origin' AS role FROM work_orders WHERE incident_id = %(id)s
            UNION ALL
            SELECT {_WORK_ORDER_COLUMNS}, 'attached' AS role FROM work_orders
            WHERE id IN (SELECT work_order_id FROM work_order_incidents WHERE incident_id = %(id)s)
              AND incident_id <> %(id)s
            """,  # noqa: S608 -- fixed column lists
            {"id": incident_id},
        ).fetchall()
    return [IncidentWorkOrder(_order(row), row["role"]) for row in rows]


# --- work orders --------------------------------------------------------------------------------------------------


def _stage_states() -> Mapping[SlaStage, list[str]]:
    """For each SLA stage, the states in which an order still owes it, asked of domain.sla (the one definition of
    "done"), so the overdue filter below cannot drift from :func:`domain.sla.overdue_stages`."""
    past = datetime(2000, 1, 1, tzinfo=UTC)
    owing: dict[SlaStage, list[str]] = {stage: [] for stage in SlaStage}
    for state in WorkOrderState:
        probe = WorkOrder(
            id="probe",
            incident_id="probe",
            category_code="probe.probe",
            department_code="probe",
            unit_code="probe",
            priority=Priority.P4,
            state=state,
            created_at=past,
            updated_at=past,
            ack_due_at=past,
            arrive_due_at=past,
            resolve_due_at=past,
        )
        for stage, _ in overdue_stages(probe, past + timedelta(seconds=1)):
            owing[stage].append(state.value)
    return owing


OWING = _stage_states()
_DUE_COLUMN = {SlaStage.ACKNOWLEDGE: "ack_due_at", SlaStage.ARRIVE: "arrive_due_at", SlaStage.RESOLVE: "resolve_due_at"}
# The due time of the next stage the order owes (stages come in order: acknowledge, arrive, resolve).
_NEXT_DUE = (
    "CASE "
    + " ".join(f"WHEN state = ANY(%(owing_{stage.value})s) THEN {_DUE_COLUMN[stage]}" for stage in SlaStage)
    + " END"
)
_OVERDUE = (
    "("
    + " OR ".join(f"(state = ANY(%(owing_{stage.value})s) AND {_DUE_COLUMN[stage]} < %(now)s)" for stage in SlaStage)
    + ")"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderFilter:
    states: Sequence[WorkOrderState] = ()
    department_code: str | None = None
    district_code: str | None = None
    crew_id: str | None = None
    priorities: Sequence[Priority] = ()
    overdue_at: datetime | None = None  # only orders with a stage past due at this time
    limit: int = 100
    offset: int = 0


def list_work_orders(conn: psycopg.Connection[Any], where: WorkOrderFilter) -> tuple[list[WorkOrder], int]:
    """Orders by priority (P1 first), then the due time of the next stage they owe; and the total count."""
    clauses: list[str] = []
    params: dict[str, Any] = {f"owing_{stage.value}": states for stage, states in OWING.items()}
    params |= {"limit": where.limit, "offset": where.offset}
    if where.states:
        clauses.append("state = ANY(%(states)s)")
        params["states"] = [state.value for state in where.states]
    if where.department_code:
        clauses.append("department_code = %(department)s")
        params["department"] = where.department_code
    if where.district_code:
        clauses.append("district_code = %(district)s")
        params["district"] = where.district_code
    if where.crew_id:
        clauses.append("crew_id = %(crew)s")
        params["crew"] = where.crew_id
    if where.priorities:
        clauses.append("priority = ANY(%(priorities)s)")
        params["priorities"] = [priority.value for priority in where.priorities]
    if where.overdue_at is not None:
        clauses.append(_OVERDUE)
        params["now"] = where.overdue_at
    condition = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_WORK_ORDER_COLUMNS} FROM work_orders{condition}"  # noqa: S608 -- fixed clauses
            f" ORDER BY priority, {_NEXT_DUE} NULLS LAST, created_at, id LIMIT %(limit)s OFFSET %(offset)s",
            params,
        ).fetchall()
        total = cur.execute(f"SELECT count(*) AS n FROM work_orders{condition}", params).fetchone()  # noqa: S608
    return [_order(row) for row in rows], int(total["n"]) if total else 0


@dataclass(frozen=True, slots=True)
class SlaBreach:
    stage: SlaStage
    due_at: datetime
    detected_at: datetime


def sla_breaches(conn: psycopg.Connection[Any], work_order_id: str) -> list[SlaBreach]:
    rows = conn.execute(
        "SELECT stage, due_at, detected_at FROM sla_breaches WHERE work_order_id = %s ORDER BY detected_at, stage",
        (work_order_id,),
    ).fetchall()
    return [SlaBreach(SlaStage(r[0]), r[1], r[2]) for r in rows]


def crew_ever_held(conn: psycopg.Connection[Any], work_order_id: str, crew_id: str) -> bool:
    """Whether the audit log ever gave this order to this crew (so the crew knows it exists)."""
    row = conn.execute(
        "SELECT 1 FROM work_order_events WHERE work_order_id = %s AND crew_id = %s LIMIT 1", (work_order_id, crew_id)
    ).fetchone()
    return row is not None


def crew_exists(conn: psycopg.Connection[Any], crew_id: str) -> bool:
    return conn.execute("SELECT 1 FROM crews WHERE id = %s", (crew_id,)).fetchone() is not None


def open_orders_by_crew(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """The ids of the orders each crew holds now (dispatched to it, accepted, en route, on site)."""
    rows = conn.execute(
        "SELECT crew_id, id FROM work_orders WHERE crew_id IS NOT NULL AND state = ANY(%s) ORDER BY created_at, id",
        (["dispatched", "accepted", "en_route", "on_site"],),
    ).fetchall()
    held: dict[str, list[str]] = {}
    for crew_id, order_id in rows:
        held.setdefault(str(crew_id), []).append(str(order_id))
    return held


# --- evaluation ---------------------------------------------------------------------------------------------------

EvaluationGrouping = Literal["department", "district"]


@dataclass(frozen=True, slots=True)
class StageFigures:
    judged: int  # orders whose stage is done, or past due without being done (cancelled orders are not judged)
    on_time: int
    completed: int  # orders that reached the stage
    mean_s: float | None  # from registration (order created) to the stage, over orders that reached it
    p90_s: float | None


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    key: str | None
    name: str | None
    cases: int
    closed: int
    cancelled: int
    resolved: int  # reported resolved at least once
    reopened: int  # of those, reopened by a failed verification
    stages: Mapping[SlaStage, StageFigures] = field(default_factory=dict)


_STAGE_ACTION = {SlaStage.ACKNOWLEDGE: "accept", SlaStage.ARRIVE: "arrive", SlaStage.RESOLVE: "resolve"}


def evaluate_departments(
    conn: psycopg.Connection[Any], *, since: datetime, until: datetime, now: datetime, by: EvaluationGrouping
) -> list[EvaluationRow]:
    """Cases registered in [since, until) grouped by department or district: closure, on-time rate per SLA stage
    (the first accept / arrive / resolve against the order's due time), mean and p90 times, reopen rate."""
    stage_sql = []
    for stage in SlaStage:
        done, due = f"{stage.value}_at", _DUE_COLUMN[stage]
        stage_sql.append(
            f"""
            count(*) FILTER (WHERE {due} IS NOT NULL AND ({done} IS NOT NULL
                             OR ({due} < %(now)s AND state <> 'cancelled'))) AS {stage.value}_judged,
            count(*) FILTER (WHERE {done} IS NOT NULL AND {due} IS NOT NULL AND {done} <= {due})
                AS {stage.value}_on_time,
            count({done}) AS {stage.value}_completed,
            avg(extract(epoch FROM {done} - created_at))::float8 AS {stage.value}_mean,
            (percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM {done} - created_at)))::float8
                AS {stage.value}_p90"""
        )
    firsts = ",\n".join(
        f"(SELECT min(e.at) FROM work_order_events e WHERE e.work_order_id = w.id AND e.action = '{action}')"  # noqa: S608
        f" AS {stage.value}_at"
        for stage, action in _STAGE_ACTION.items()
    )
    key_column, names = ("department_code", "departments") if by == "department" else ("district_code", "districts")
    query = f"""
        WITH orders AS (
            SELECT w.id, w.{key_column} AS key, w.state, w.created_at, w.reopen_count,
                   w.ack_due_at, w.arrive_due_at, w.resolve_due_at,
                   {firsts}
            FROM work_orders w
            WHERE w.created_at >= %(since)s AND w.created_at < %(until)s
        )
        SELECT o.key, n.name, count(*) AS cases,
               count(*) FILTER (WHERE o.state = 'closed') AS closed,
               count(*) FILTER (WHERE o.state = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE o.resolve_at IS NOT NULL) AS resolved,
               count(*) FILTER (WHERE o.resolve_at IS NOT NULL AND o.reopen_count > 0) AS reopened,
               {",".join(stage_sql)}
        FROM orders o LEFT JOIN {names} n ON n.code = o.key
        GROUP BY o.key, n.name ORDER BY o.key NULLS LAST
    """  # noqa: S608 -- column and table names are fixed above, values are parameters
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, {"since": since, "until": until, "now": now}).fetchall()
    return [
        EvaluationRow(
            key=row["key"],
            name=row["name"],
            cases=row["cases"],
            closed=row["closed"],
            cancelled=row["cancelled"],
            resolved=row["resolved"],
            reopened=row["reopened"],
            stages={
                stage: StageFigures(
                    judged=row[f"{stage.value}_judged"],
                    on_time=row[f"{stage.value}_on_time"],
                    completed=row[f"{stage.value}_completed"],
                    mean_s=row[f"{stage.value}_mean"],
                    p90_s=row[f"{stage.value}_p90"],
                )
                for stage in SlaStage
            },
        )
        for row in rows
    ]


# --- Open311 ------------------------------------------------------------------------------------------------------


def locate_grid_cell(conn: psycopg.Connection[Any], position: Position) -> tuple[str, str | None] | None:
    """The unit-grid cell (and its district) containing the position, or None outside the city's grid."""
    row = conn.execute(
        """
        SELECT code, district_code FROM grid_cells
        WHERE ST_Contains(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) ORDER BY code LIMIT 1
        """,
        (position.lon, position.lat),
    ).fetchone()
    return (str(row[0]), row[1]) if row else None


@dataclass(frozen=True, slots=True, kw_only=True)
class CitizenReport:
    """What a citizen told beyond the incident (contact details stay in this table only)."""

    incident_id: str
    api_client: str
    service_code: str
    requested_at: datetime
    description: str = ""
    address_string: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    device_id: str | None = None
    account_id: str | None = None
    media_url: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def record_citizen_report(conn: psycopg.Connection[Any], report: CitizenReport) -> None:
    conn.execute(
        """
        INSERT INTO open311_requests (incident_id, api_client, service_code, description, address_string, email,
                                      first_name, last_name, phone, device_id, account_id, media_url, attributes,
                                      requested_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            report.incident_id,
            report.api_client,
            report.service_code,
            report.description,
            report.address_string,
            report.email,
            report.first_name,
            report.last_name,
            report.phone,
            report.device_id,
            report.account_id,
            report.media_url,
            json.dumps(dict(report.attributes)),
            report.requested_at,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRequestRow:
    """One incident as Open311 shows it: the incident, the work order that answers it (its own, or the one it was
    attached to), and what the citizen wrote, if a citizen reported it."""

    incident_id: str
    category_code: str
    incident_state: str
    title: str
    condition: str
    opened_at: datetime
    updated_at: datetime
    position: Position | None
    grid_cell: str | None
    district: str | None
    district_name: str | None
    severity: Severity
    work_order_state: WorkOrderState | None
    work_order_department: str | None
    work_order_priority: Priority | None
    work_order_updated_at: datetime | None
    resolve_due_at: datetime | None
    description: str | None
    address_string: str | None
    media_url: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRequestQuery:
    service_codes: Sequence[str]  # the public services; never empty
    request_ids: Sequence[str] = ()  # when given, every other filter but service_codes is ignored
    since: datetime | None = None
    until: datetime | None = None
    closed: bool | None = None  # None: both
    closed_work_order_states: Sequence[str] = ("closed", "cancelled")
    limit: int = 1000


_SERVICE_REQUESTS = """
SELECT i.id, i.category_code, i.state, i.title, i.condition, i.opened_at, i.updated_at,
       ST_X(i.position) AS lon, ST_Y(i.position) AS lat, i.grid_cell_code, i.district_code, d.name AS district_name,
       i.severity, w.state AS wo_state, w.department_code AS wo_department, w.priority AS wo_priority,
       w.updated_at AS wo_updated_at, w.resolve_due_at, r.description, r.address_string, r.media_url
FROM incidents i
LEFT JOIN LATERAL (
    SELECT * FROM (
        SELECT 0 AS rank, o.* FROM work_orders o WHERE o.incident_id = i.id
        UNION ALL
        SELECT 1 AS rank, o.* FROM work_order_incidents wi JOIN work_orders o ON o.id = wi.work_order_id
        WHERE wi.incident_id = i.id
    ) candidates ORDER BY rank, created_at DESC LIMIT 1
) w ON true
LEFT JOIN open311_requests r ON r.incident_id = i.id
LEFT JOIN districts d ON d.code = i.district_code
"""


def list_service_requests(conn: psycopg.Connection[Any], query: ServiceRequestQuery) -> list[ServiceRequestRow]:
    """Newest first, at most ``query.limit``."""
    clauses: list[sql.Composable] = [sql.SQL("i.category_code = ANY(%(codes)s)")]
    params: dict[str, Any] = {
        "codes": list(query.service_codes),
        "limit": query.limit,
        "closed_states": list(query.closed_work_order_states),
    }
    if query.request_ids:
        clauses.append(sql.SQL("i.id = ANY(%(ids)s)"))
        params["ids"] = list(query.request_ids)
    else:
        if query.since is not None:
            clauses.append(sql.SQL("i.opened_at >= %(since)s"))
            params["since"] = query.since
        if query.until is not None:
            clauses.append(sql.SQL("i.opened_at <= %(until)s"))
            params["until"] = query.until
        if query.closed is not None:
            # api/open311.py's request_status: closed when its work order is final, or (no order) the incident is
            closed = sql.SQL(
                "(COALESCE(w.state = ANY(%(closed_states)s), false) OR (w.state IS NULL AND i.state = 'closed'))"
            )
            clauses.append(closed if query.closed else sql.SQL("NOT ") + closed)
    statement = (
        sql.SQL(_SERVICE_REQUESTS)
        + sql.SQL(" WHERE ")
        + sql.SQL(" AND ").join(clauses)
        + sql.SQL(" ORDER BY i.opened_at DESC, i.id LIMIT %(limit)s")
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(statement, params).fetchall()
    return [
        ServiceRequestRow(
            incident_id=row["id"],
            category_code=row["category_code"],
            incident_state=row["state"],
            title=row["title"],
            condition=row["condition"],
            opened_at=row["opened_at"],
            updated_at=row["updated_at"],
            position=Position(row["lon"], row["lat"]) if row["lon"] is not None else None,
            grid_cell=row["grid_cell_code"],
            district=row["district_code"],
            district_name=row["district_name"],
            severity=Severity(row["severity"]),
            work_order_state=WorkOrderState(row["wo_state"]) if row["wo_state"] else None,
            work_order_department=row["wo_department"],
            work_order_priority=Priority(row["wo_priority"]) if row["wo_priority"] else None,
            work_order_updated_at=row["wo_updated_at"],
            resolve_due_at=row["resolve_due_at"],
            description=row["description"],
            address_string=row["address_string"],
            media_url=row["media_url"],
        )
        for row in rows
    ]
