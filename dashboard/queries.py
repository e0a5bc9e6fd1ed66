"""Every read the dashboard makes, in one place: SQL over the pool, answers as DataFrames or domain records.

Rules the queries keep so that no callback is slower than its refresh interval at city scale (10,000+ devices,
30 days of readings):

* time series read the rollups (``readings_1m`` up to 12 hours, ``readings_1h`` beyond), never raw ``readings``,
  except the case page, which reads the few raw readings around an incident's evidence by primary key;
* the wall's counters read small indexed sets: devices by status, one minute of ``readings_1m``, open incidents
  (partial index on top-level open incidents), open work orders (by state), work orders created since a cut-off
  (0018's index), incident events of the last hour (by time);
* a district's series walks its devices and each device's rollup by primary key (a lateral join), not the whole
  rollup table.

Writes never happen here: actions go through the HTTP API (dashboard/api_client.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from domain.categories import Priority
from domain.evaluation import EvaluationRow, EvaluationScope
from domain.geo import Position
from domain.sla import SlaStage, overdue_stages
from domain.work_orders import TERMINAL_STATES, WITH_CREW, WorkOrder, WorkOrderState
from store.crews import CrewRecord, list_crews
from store.evaluation import evaluate
from store.incidents import IncidentFilter, IncidentRecord, IncidentTimelineEntry, get_incident, incident_timeline
from store.incidents import list_incidents as store_list_incidents
from store.work_orders import AuditEntry, get_work_order, history, work_order_for_incident

OPEN_WORK_ORDER_STATES = [s.value for s in WorkOrderState if not s.is_terminal]
FINAL_WORK_ORDER_STATES = [s.value for s in TERMINAL_STATES]
CREW_HOLDS = [s.value for s in WITH_CREW]
MINUTE_ROLLUP_MAX_SPAN = timedelta(hours=12)

_SEVERITY_RANK_SQL = "array_position(ARRAY['critical','high','medium','low']::text[], i.severity)"
_INCIDENT_COLUMNS = """
    i.id, i.title, i.severity, i.state, i.category_code, i.kind, ST_X(i.position) AS lon, ST_Y(i.position) AS lat,
    i.district_code, i.grid_cell_code, i.source, i.opened_at, i.updated_at,
    i.acknowledged_at IS NOT NULL AS acknowledged,
    i.flapping, i.parent_id,
    (SELECT count(*) FROM incidents c WHERE c.parent_id = i.id) AS children,
    w.id AS work_order_id, w.state AS work_order_state
"""


def _frame(conn: psycopg.Connection[Any], query: str | sql.Composed, params: Any = None) -> pd.DataFrame:
    cursor = conn.execute(query, params)
    columns = [column.name for column in cursor.description or ()]
    return pd.DataFrame(cursor.fetchall(), columns=columns)


@dataclass(frozen=True, slots=True)
class VitalSigns:
    """The city's vital signs (城市生命体征) at one moment."""

    devices_by_status: dict[str, int]
    readings_per_s: float
    incidents: pd.DataFrame  # severity, family, n (open, top level)
    work_orders: pd.DataFrame  # state, n (open, and final ones changed today)
    deadlines_due: int
    deadlines_met: int
    mean_dispatch_s: float | None
    mean_arrive_s: float | None
    mean_resolve_s: float | None
    alarms_last_hour: int
    operators: int

    @property
    def devices_total(self) -> int:
        return sum(n for status, n in self.devices_by_status.items() if status != "decommissioned")

    @property
    def devices_online_share(self) -> float | None:
        total = self.devices_total
        return self.devices_by_status.get("online", 0) / total if total else None

    @property
    def on_time_share(self) -> float | None:
        return self.deadlines_met / self.deadlines_due if self.deadlines_due else None

    @property
    def alarms_per_operator_hour(self) -> float:
        return self.alarms_last_hour / max(1, self.operators)


@dataclass(frozen=True, slots=True)
class CaseFile:
    """Everything behind one incident, for the case page."""

    record: IncidentRecord
    timeline: list[IncidentTimelineEntry]
    work_order: WorkOrder | None
    audit: list[AuditEntry]
    breaches: pd.DataFrame  # stage, due_at, detected_at
    decisions: pd.DataFrame  # decided_at, decision, work_order_id, detail (the dispatcher's reasons)
    device: dict[str, Any] | None
    series: dict[tuple[str, str], pd.DataFrame]  # (device, metric) -> ts, value around the evidence
    children: pd.DataFrame  # id, title, severity, state
    crew_names: dict[str, str] = field(default_factory=dict)


class CityQueries:
    """The dashboard's reads. One instance per process, over the process's pool."""

    def __init__(self, pool: ConnectionPool[Any], *, sla_lookback: timedelta = timedelta(days=4)) -> None:
        self.pool = pool
        # Deadlines that fall due today belong to orders created at most this long ago (the longest SLA limit).
        self.sla_lookback = sla_lookback

    # --- the wall ----------------------------------------------------------------------------------------------
    def vital_signs(self, *, now: datetime, day_start: datetime) -> VitalSigns:
        # The last five complete minutes: devices report every few minutes, so one minute alone would flicker.
        last = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
        with self.pool.connection() as conn:
            statuses = {str(s): int(n) for s, n in conn.execute("SELECT status, count(*) FROM devices GROUP BY status")}
            row = conn.execute(
                "SELECT coalesce(sum(n), 0) FROM readings_1m WHERE bucket >= %s AND bucket <= %s",
                (last - timedelta(minutes=4), last),
            ).fetchone()
            readings = float(row[0]) / 300.0 if row else 0.0
            incidents = _frame(
                conn,
                """
                SELECT severity, split_part(category_code, '.', 1) AS family, count(*) AS n FROM incidents
                WHERE parent_id IS NULL AND state = 'open' GROUP BY 1, 2
                """,
            )
            work_orders = _frame(
                conn,
                """
                SELECT state, count(*) AS n FROM work_orders WHERE state = ANY(%(open)s) GROUP BY state
                UNION ALL
                SELECT state, count(*) FROM work_orders WHERE state = ANY(%(final)s) AND updated_at >= %(day)s
                GROUP BY state
                """,
                {"open": OPEN_WORK_ORDER_STATES, "final": FINAL_WORK_ORDER_STATES, "day": day_start},
            )
            service = self._service(conn, now=now, day_start=day_start)
            alarms = conn.execute(
                """
                SELECT (SELECT count(*) FROM incident_events WHERE type IN ('opened', 'reopened')
                        AND at > %(hour)s AND at <= %(now)s),
                       (SELECT count(DISTINCT s.username) FROM sign_ins s JOIN users u USING (username)
                        WHERE s.success AND s.channel = 'dashboard' AND s.at > %(shift)s
                        AND u.role IN ('commander', 'dispatcher'))
                """,
                {"hour": now - timedelta(hours=1), "now": now, "shift": now - timedelta(hours=12)},
            ).fetchone()
        assert alarms is not None
        due = int(service["due"].sum()) if len(service) else 0
        met = int(service["met"].sum()) if len(service) else 0

        def weighted(column: str) -> float | None:
            counted = service[service[column].notna()] if len(service) else service
            n = counted[f"{column}_n"].sum() if len(counted) else 0
            return float((counted[column] * counted[f"{column}_n"]).sum() / n) if n else None

        return VitalSigns(
            devices_by_status=statuses,
            readings_per_s=readings,
            incidents=incidents,
            work_orders=work_orders,
            deadlines_due=due,
            deadlines_met=met,
            mean_dispatch_s=weighted("dispatch_s"),
            mean_arrive_s=weighted("arrive_s"),
            mean_resolve_s=weighted("resolve_s"),
            alarms_last_hour=int(alarms[0]),
            operators=int(alarms[1]),
        )

    def department_service(self, *, now: datetime, day_start: datetime) -> pd.DataFrame:
        """Per department: deadlines due/met today, open orders overdue by stage, mean times (last 24 h), reopens."""
        with self.pool.connection() as conn:
            service = self._service(conn, now=now, day_start=day_start)
            names = _frame(conn, "SELECT code AS department_code, name FROM departments")
            overdue = self._overdue(conn, now)
        frame = names.merge(service, on="department_code", how="left")
        for stage in SlaStage:
            counts = (
                overdue[overdue["stage"] == stage.value].groupby("department_code").size()
                if len(overdue)
                else pd.Series(dtype=int)
            )
            frame[f"overdue_{stage.value}"] = frame["department_code"].map(counts).fillna(0).astype(int)
        for column in ("due", "met", "orders", "reopened", "open"):
            frame[column] = frame[column].fillna(0).astype(int)
        return frame.sort_values("name").reset_index(drop=True)

    def _service(self, conn: psycopg.Connection[Any], *, now: datetime, day_start: datetime) -> pd.DataFrame:
        # A deadline counts today if it fell due today (so far), or was met today ahead of time.
        return _frame(
            conn,
            """
            WITH o AS (
                SELECT w.id, w.department_code, w.state, w.created_at, w.reopen_count,
                       w.ack_due_at, w.arrive_due_at, w.resolve_due_at, e.dispatched_at, e.accepted_at, e.arrived_at,
                       e.resolved_at
                FROM work_orders w
                CROSS JOIN LATERAL (
                    SELECT min(at) FILTER (WHERE action = 'dispatch') AS dispatched_at,
                           min(at) FILTER (WHERE action = 'accept') AS accepted_at,
                           min(at) FILTER (WHERE action = 'arrive') AS arrived_at,
                           min(at) FILTER (WHERE action = 'resolve') AS resolved_at
                    FROM work_order_events ev WHERE ev.work_order_id = w.id
                ) e
                WHERE w.created_at >= %(lookback)s AND w.state <> 'cancelled'
            ), stages AS (
                SELECT department_code, ack_due_at AS due_at, accepted_at AS done_at FROM o
                UNION ALL SELECT department_code, arrive_due_at, arrived_at FROM o
                UNION ALL SELECT department_code, resolve_due_at, resolved_at FROM o
            ), deadlines AS (
                SELECT department_code, count(*) AS due, count(*) FILTER (WHERE done_at <= due_at) AS met
                FROM stages
                WHERE due_at IS NOT NULL AND ((due_at >= %(day)s AND due_at <= %(now)s)
                   OR (done_at >= %(day)s AND done_at <= due_at AND done_at <= %(now)s))
                GROUP BY department_code
            ), times AS (
                SELECT department_code, count(*) AS orders,
                       count(*) FILTER (WHERE reopen_count > 0) AS reopened,
                       count(*) FILTER (WHERE state <> ALL(%(final)s)) AS open,
                       avg(extract(epoch FROM dispatched_at - created_at)) AS dispatch_s,
                       count(dispatched_at) AS dispatch_s_n,
                       avg(extract(epoch FROM arrived_at - created_at)) AS arrive_s,
                       count(arrived_at) AS arrive_s_n,
                       avg(extract(epoch FROM resolved_at - created_at)) AS resolve_s,
                       count(resolved_at) AS resolve_s_n
                FROM o WHERE created_at >= %(day_ago)s GROUP BY department_code
            )
            SELECT coalesce(d.department_code, t.department_code) AS department_code,
                   coalesce(d.due, 0) AS due, coalesce(d.met, 0) AS met,
                   coalesce(t.orders, 0) AS orders, coalesce(t.reopened, 0) AS reopened, coalesce(t.open, 0) AS open,
                   t.dispatch_s::float8 AS dispatch_s, coalesce(t.dispatch_s_n, 0) AS dispatch_s_n,
                   t.arrive_s::float8 AS arrive_s, coalesce(t.arrive_s_n, 0) AS arrive_s_n,
                   t.resolve_s::float8 AS resolve_s, coalesce(t.resolve_s_n, 0) AS resolve_s_n
            FROM deadlines d FULL JOIN times t ON t.department_code = d.department_code
            """,
            {
                "lookback": min(day_start, now - timedelta(days=1)) - self.sla_lookback,
                "day": day_start,
                "now": now,
                "day_ago": now - timedelta(days=1),
                "final": FINAL_WORK_ORDER_STATES,
            },
        )

    def open_incidents(self, *, limit: int = 500) -> pd.DataFrame:
        """Open top-level incidents (a correlated parent once; its children on demand), most severe, then newest."""
        with self.pool.connection() as conn:
            return _frame(
                conn,
                f"""
                SELECT {_INCIDENT_COLUMNS} FROM incidents i LEFT JOIN work_orders w ON w.incident_id = i.id
                WHERE i.parent_id IS NULL AND i.state = 'open'
                ORDER BY {_SEVERITY_RANK_SQL}, i.opened_at DESC, i.id LIMIT %s
                """,  # noqa: S608 - fixed column lists
                (limit,),
            )

    def incident_children(self, parent_ids: Sequence[str]) -> pd.DataFrame:
        with self.pool.connection() as conn:
            return _frame(
                conn,
                f"""
                SELECT {_INCIDENT_COLUMNS} FROM incidents i LEFT JOIN work_orders w ON w.incident_id = i.id
                WHERE i.parent_id = ANY(%s) ORDER BY i.opened_at DESC
                """,  # noqa: S608 - fixed column lists
                (list(parent_ids),),
            )

    def device_count(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM devices WHERE status <> 'decommissioned'").fetchone()
        return int(row[0]) if row else 0

    def devices_for_map(self) -> pd.DataFrame:
        with self.pool.connection() as conn:
            return _frame(
                conn,
                """
                SELECT id, type_code, status, ST_X(position) AS lon, ST_Y(position) AS lat, district_code,
                       grid_cell_code, battery_pct FROM devices WHERE status <> 'decommissioned'
                """,
            )

    def cell_health(self) -> pd.DataFrame:
        """Per grid cell: devices, devices not online, open incidents (the map at city scale)."""
        with self.pool.connection() as conn:
            return _frame(
                conn,
                """
                SELECT d.grid_cell_code, d.devices, d.not_online, coalesce(i.open_incidents, 0) AS open_incidents
                FROM (SELECT grid_cell_code, count(*) AS devices,
                             count(*) FILTER (WHERE status <> 'online') AS not_online
                      FROM devices WHERE status <> 'decommissioned' AND grid_cell_code IS NOT NULL
                      GROUP BY grid_cell_code) d
                LEFT JOIN (SELECT grid_cell_code, count(*) AS open_incidents FROM incidents
                           WHERE state = 'open' AND grid_cell_code IS NOT NULL GROUP BY grid_cell_code) i
                       ON i.grid_cell_code = d.grid_cell_code
                """,
            )

    def crews_on_duty(self) -> pd.DataFrame:
        """Crews on duty with their position and the most urgent order they hold (and where it is)."""
        with self.pool.connection() as conn:
            return _frame(
                conn,
                """
                SELECT c.id AS crew_id, c.name, c.department_code,
                       CASE WHEN t.id IS NOT NULL AND t.state <> 'dispatched' THEN 'busy' ELSE c.status END AS status,
                       ST_X(c.position) AS lon, ST_Y(c.position) AS lat, c.position_at,
                       t.id AS work_order_id, t.title AS task_title, t.state AS task_state, t.priority,
                       ST_X(t.position) AS task_lon, ST_Y(t.position) AS task_lat
                FROM crews c
                LEFT JOIN LATERAL (
                    SELECT id, title, state, priority, position FROM work_orders w
                    WHERE w.crew_id = c.id AND w.state = ANY(%s) ORDER BY w.priority, w.created_at LIMIT 1
                ) t ON true
                WHERE c.status <> 'off_duty'
                ORDER BY c.id
                """,
                (CREW_HOLDS,),
            )

    def hot_district(self) -> str | None:
        """The district with the heaviest open incidents (critical 8, high 4, medium 2, low 1), if any."""
        with self.pool.connection() as conn:
            row = conn.execute(
                """
                SELECT district_code FROM incidents
                WHERE parent_id IS NULL AND state = 'open' AND district_code IS NOT NULL
                GROUP BY district_code
                ORDER BY sum(CASE severity WHEN 'critical' THEN 8 WHEN 'high' THEN 4 WHEN 'medium' THEN 2 ELSE 1 END)
                         DESC, district_code
                LIMIT 1
                """
            ).fetchone()
        return str(row[0]) if row else None

    def overdue_work_orders(self, *, now: datetime, limit: int = 50) -> pd.DataFrame:
        """Open orders past a deadline of a stage they have not done, most overdue first."""
        with self.pool.connection() as conn:
            frame = self._overdue(conn, now)
        if not len(frame):
            return frame
        first = frame.sort_values("due_at").groupby("id", sort=False).head(1)
        stages = frame.groupby("id")["stage"].agg(lambda s: ", ".join(s))
        first = first.assign(stages=first["id"].map(stages))
        return first.sort_values("due_at").head(limit).reset_index(drop=True)

    def _overdue(self, conn: psycopg.Connection[Any], now: datetime) -> pd.DataFrame:
        orders = self._work_orders(
            conn,
            "w.state = ANY(%(open)s) AND LEAST(w.ack_due_at, w.arrive_due_at, w.resolve_due_at) < %(now)s",
            {"open": OPEN_WORK_ORDER_STATES, "now": now},
        )
        rows = []
        for order, crew_name in orders:
            for stage, due in overdue_stages(order, now):
                rows.append(
                    {
                        "id": order.id,
                        "incident_id": order.incident_id,
                        "title": order.title,
                        "state": order.state.value,
                        "priority": order.priority.value,
                        "department_code": order.department_code,
                        "crew_id": order.crew_id,
                        "crew_name": crew_name,
                        "district_code": order.district,
                        "stage": stage.value,
                        "due_at": due,
                        "overdue_s": (now - due).total_seconds(),
                        "escalation_level": order.escalation_level,
                    }
                )
        columns = ["id", "incident_id", "title", "state", "priority", "department_code", "crew_id", "crew_name"]
        columns += ["district_code", "stage", "due_at", "overdue_s", "escalation_level"]
        return pd.DataFrame(rows, columns=columns)

    def _work_orders(
        self, conn: psycopg.Connection[Any], where: str, params: dict[str, Any], *, limit: int = 2000
    ) -> list[tuple[WorkOrder, str | None]]:
        rows = conn.execute(
            f"""
            SELECT w.id, w.incident_id, w.title, w.category_code, w.department_code, w.unit_code, w.priority, w.state,
                   w.crew_id, ST_X(w.position), ST_Y(w.position), w.grid_cell_code, w.district_code, w.version,
                   w.escalation_level, w.reopen_count, w.created_at, w.updated_at, w.ack_due_at, w.arrive_due_at,
                   w.resolve_due_at, w.verify_until, c.name
            FROM work_orders w LEFT JOIN crews c ON c.id = w.crew_id
            WHERE {where}
            ORDER BY w.priority, w.created_at LIMIT {int(limit)}
            """,  # noqa: S608 - where is one of this module's fixed clauses; values are parameters
            params,
        ).fetchall()
        return [
            (
                WorkOrder(
                    id=r[0],
                    incident_id=r[1],
                    title=r[2],
                    category_code=r[3],
                    department_code=r[4],
                    unit_code=r[5],
                    priority=Priority(r[6]),
                    state=WorkOrderState(r[7]),
                    crew_id=r[8],
                    position=Position(r[9], r[10]) if r[9] is not None else None,
                    grid_cell=r[11],
                    district=r[12],
                    version=r[13],
                    escalation_level=r[14],
                    reopen_count=r[15],
                    created_at=r[16],
                    updated_at=r[17],
                    ack_due_at=r[18],
                    arrive_due_at=r[19],
                    resolve_due_at=r[20],
                    verify_until=r[21],
                ),
                r[22],
            )
            for r in rows
        ]

    # --- dispatchers -------------------------------------------------------------------------------------------
    def incidents(self, where: IncidentFilter) -> pd.DataFrame:
        """Incidents for the dispatcher's list (store.incidents.list_incidents), with their work order's state."""
        with self.pool.connection() as conn:
            records = store_list_incidents(conn, where)
            orders = _frame(
                conn,
                "SELECT incident_id AS id, id AS work_order_id, state AS work_order_state FROM work_orders"
                " WHERE incident_id = ANY(%s)",
                ([r.incident.id for r in records],),
            )
        frame = pd.DataFrame(
            [
                {
                    "id": r.incident.id,
                    "title": r.incident.title,
                    "severity": r.incident.severity.value,
                    "state": r.incident.state.value,
                    "category_code": r.incident.category_code,
                    "district_code": r.incident.district,
                    "grid_cell_code": r.incident.grid_cell,
                    "source": r.incident.source,
                    "opened_at": r.incident.opened_at,
                    "acknowledged_by": r.incident.acknowledged_by,
                    "parent_id": r.incident.parent_id,
                    "kind": r.kind.value,
                    "flapping": r.flapping,
                }
                for r in records
            ],
            columns=[
                "id", "title", "severity", "state", "category_code", "district_code", "grid_cell_code", "source",
                "opened_at", "acknowledged_by", "parent_id", "kind", "flapping",
            ],
        )  # fmt: skip
        return frame.merge(orders, on="id", how="left")

    def work_order_board(self, *, department: str | None, since: datetime) -> pd.DataFrame:
        """Open orders, and those closed or cancelled since ``since``, of one department or all."""
        clause = "(w.state = ANY(%(open)s) OR w.updated_at >= %(since)s)"
        params: dict[str, Any] = {"open": OPEN_WORK_ORDER_STATES, "since": since}
        if department:
            clause += " AND w.department_code = %(department)s"
            params["department"] = department
        with self.pool.connection() as conn:
            orders = self._work_orders(conn, clause, params, limit=600)
        return pd.DataFrame(
            [
                {
                    "id": o.id,
                    "incident_id": o.incident_id,
                    "title": o.title,
                    "state": o.state.value,
                    "priority": o.priority.value,
                    "department_code": o.department_code,
                    "category_code": o.category_code,
                    "crew_id": o.crew_id,
                    "crew_name": name,
                    "district_code": o.district,
                    "created_at": o.created_at,
                    "updated_at": o.updated_at,
                    "ack_due_at": o.ack_due_at,
                    "arrive_due_at": o.arrive_due_at,
                    "resolve_due_at": o.resolve_due_at,
                    "escalation_level": o.escalation_level,
                    "reopen_count": o.reopen_count,
                }
                for o, name in orders
            ],
            columns=[
                "id", "incident_id", "title", "state", "priority", "department_code", "category_code", "crew_id",
                "crew_name", "district_code", "created_at", "updated_at", "ack_due_at", "arrive_due_at",
                "resolve_due_at", "escalation_level", "reopen_count",
            ],
        )  # fmt: skip

    def evaluation(self, scope: EvaluationScope, *, since: datetime, until: datetime) -> list[EvaluationRow]:
        """Department (or district) evaluation over cases registered in the period: ``store.evaluation``'s."""
        with self.pool.connection() as conn:
            return evaluate(conn, scope, since=since, until=until)

    def crews(self, *, department: str | None = None) -> list[CrewRecord]:
        with self.pool.connection() as conn:
            return list_crews(conn, department_code=department)

    def departments(self) -> pd.DataFrame:
        with self.pool.connection() as conn:
            return _frame(conn, "SELECT code, name, name_zh FROM departments ORDER BY name")

    def device_registry(
        self,
        *,
        district: str | None = None,
        status: str | None = None,
        type_code: str | None = None,
        search: str = "",
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[pd.DataFrame, int]:
        clauses = ["true"]
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if district:
            clauses.append("district_code = %(district)s")
            params["district"] = district
        if status:
            clauses.append("status = %(status)s")
            params["status"] = status
        if type_code:
            clauses.append("type_code = %(type)s")
            params["type"] = type_code
        if search:
            clauses.append("id ILIKE %(search)s")
            params["search"] = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = " AND ".join(clauses)
        with self.pool.connection() as conn:
            total_row = conn.execute(f"SELECT count(*) FROM devices WHERE {where}", params).fetchone()  # noqa: S608
            frame = _frame(
                conn,
                f"""
                SELECT id, type_code, category_code, department_code, district_code, grid_cell_code, status,
                       status_at, last_seen_at, battery_pct, expected_interval_s
                FROM devices WHERE {where}
                ORDER BY (status = 'online'), battery_pct NULLS LAST, id
                LIMIT %(limit)s OFFSET %(offset)s
                """,  # noqa: S608 - where is built from fixed clauses; values are parameters
                params,
            )
        return frame, int(total_row[0]) if total_row else 0

    def device_types(self) -> pd.DataFrame:
        """code, name, metrics (list of metric names with units)."""
        with self.pool.connection() as conn:
            return _frame(
                conn,
                """
                SELECT code, name, ARRAY(SELECT m->>'name' FROM jsonb_array_elements(metrics) m) AS metrics,
                       ARRAY(SELECT m->>'unit' FROM jsonb_array_elements(metrics) m) AS units
                FROM device_types ORDER BY code
                """,
            )

    def device(self, device_id: str) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            frame = _frame(
                conn,
                """
                SELECT d.id, d.type_code, t.name AS type_name, d.category_code, d.department_code, d.district_code,
                       d.grid_cell_code, d.status, d.last_seen_at, d.battery_pct, ST_X(d.position) AS lon,
                       ST_Y(d.position) AS lat,
                       ARRAY(SELECT m->>'name' FROM jsonb_array_elements(t.metrics) m) AS metrics,
                       ARRAY(SELECT m->>'unit' FROM jsonb_array_elements(t.metrics) m) AS units
                FROM devices d JOIN device_types t ON t.code = d.type_code WHERE d.id = %s
                """,
                (device_id,),
            )
        return None if frame.empty else dict(frame.iloc[0])

    def device_series(self, device_id: str, metric: str, *, start: datetime, end: datetime) -> pd.DataFrame:
        """bucket, mean, min, max, n from the minute rollup (spans up to 12 h) or the hourly one."""
        table = "readings_1m" if end - start <= MINUTE_ROLLUP_MAX_SPAN else "readings_1h"
        query = sql.SQL(
            """
            SELECT bucket, sum / n AS mean, min, max, n FROM {table}
            WHERE device_id = %s AND metric = %s AND bucket >= %s AND bucket < %s ORDER BY bucket
            """
        ).format(table=sql.Identifier(table))
        with self.pool.connection() as conn:
            return _frame(conn, query, (device_id, metric, start, end))

    def district_series(self, district: str, metric: str, *, start: datetime, end: datetime) -> pd.DataFrame:
        """The district's devices that report ``metric``, rolled up together: bucket, mean, min, max, n, devices."""
        table = "readings_1m" if end - start <= MINUTE_ROLLUP_MAX_SPAN else "readings_1h"
        query = sql.SQL(
            """
            SELECT r.bucket, sum(r.sum) / sum(r.n) AS mean, min(r.min) AS min, max(r.max) AS max, sum(r.n) AS n,
                   count(*) AS devices
            FROM devices d
            CROSS JOIN LATERAL (
                SELECT bucket, n, sum, min, max FROM {table} x
                WHERE x.device_id = d.id AND x.metric = %(metric)s AND x.bucket >= %(start)s AND x.bucket < %(end)s
            ) r
            WHERE d.district_code = %(district)s
              AND d.type_code IN (SELECT code FROM device_types
                                  WHERE metrics @> jsonb_build_array(jsonb_build_object('name', %(metric)s::text)))
            GROUP BY r.bucket ORDER BY r.bucket
            """
        ).format(table=sql.Identifier(table))
        with self.pool.connection() as conn:
            return _frame(conn, query, {"district": district, "metric": metric, "start": start, "end": end})

    # --- the case page -----------------------------------------------------------------------------------------
    def case(self, incident_id: str, *, around: timedelta = timedelta(hours=2)) -> CaseFile | None:
        with self.pool.connection() as conn:
            record = get_incident(conn, incident_id)
            if record is None:
                return None
            timeline = incident_timeline(conn, incident_id)
            order = work_order_for_incident(conn, incident_id)
            if order is None:  # an incident attached to another's order (docs/DISPATCH.md) is answered by that order
                linked = conn.execute(
                    "SELECT work_order_id FROM work_order_incidents WHERE incident_id = %s"
                    " ORDER BY attached_at LIMIT 1",
                    (incident_id,),
                ).fetchone()
                order = get_work_order(conn, str(linked[0])) if linked else None
            decisions = _frame(
                conn,
                "SELECT decided_at, decision, work_order_id, detail FROM dispatch_decisions WHERE incident_id = %s"
                " ORDER BY id",
                (incident_id,),
            )
            audit = history(conn, order.id) if order else []
            breaches = _frame(
                conn,
                "SELECT stage, due_at, detected_at FROM sla_breaches WHERE work_order_id = %s ORDER BY due_at",
                (order.id if order else "",),
            )
            device = None
            if record.kind.value == "device":
                found = _frame(
                    conn,
                    "SELECT id, type_code, district_code, grid_cell_code, status FROM devices WHERE id = %s",
                    (record.incident.source,),
                )
                device = None if found.empty else dict(found.iloc[0])
            series: dict[tuple[str, str], pd.DataFrame] = {}
            pairs = sorted({(e.device_id, e.metric) for e in record.incident.evidence})
            for device_id, metric in pairs[:4]:
                moments = [e.ts for e in record.incident.evidence if (e.device_id, e.metric) == (device_id, metric)]
                end = max(moments) + around
                if record.incident.cleared_at:
                    end = max(end, record.incident.cleared_at + timedelta(minutes=30))
                series[(device_id, metric)] = _frame(
                    conn,
                    """
                    SELECT ts, value FROM readings
                    WHERE device_id = %s AND metric = %s AND ts >= %s AND ts <= %s ORDER BY ts LIMIT 5000
                    """,
                    (device_id, metric, min(moments) - around, end),
                )
            children = _frame(
                conn,
                "SELECT id, title, severity, state, opened_at FROM incidents WHERE id = ANY(%s) ORDER BY opened_at",
                (list(record.children),),
            )
            crew_ids = sorted(
                {a.crew_id for a in audit if a.crew_id} | {a.actor.id for a in audit if a.actor.kind.value == "crew"}
            )
            names = dict(conn.execute("SELECT id, name FROM crews WHERE id = ANY(%s)", (crew_ids,)).fetchall())
        return CaseFile(
            record=record,
            timeline=timeline,
            work_order=order,
            audit=audit,
            breaches=breaches,
            decisions=decisions,
            device=device,
            series=series,
            children=children,
            crew_names={str(k): str(v) for k, v in names.items()},
        )

    # --- a crew's own page -------------------------------------------------------------------------------------
    def crew_tasks(self, crew_id: str, *, since: datetime) -> pd.DataFrame:
        """The orders this crew holds, and those it reported resolved since ``since``. Only this crew's."""
        with self.pool.connection() as conn:
            return _frame(
                conn,
                """
                SELECT w.id, w.title, w.state, w.priority, w.category_code, w.district_code, w.grid_cell_code,
                       ST_X(w.position) AS lon, ST_Y(w.position) AS lat, w.created_at, w.updated_at, w.ack_due_at,
                       w.arrive_due_at, w.resolve_due_at, i.condition, i.severity
                FROM work_orders w JOIN incidents i ON i.id = w.incident_id
                WHERE w.crew_id = %(crew)s AND (w.state = ANY(%(holds)s)
                      OR (w.state IN ('resolved', 'verifying') AND w.updated_at >= %(since)s))
                ORDER BY (w.state IN ('resolved', 'verifying')), w.priority, w.created_at
                """,
                {"crew": crew_id, "holds": CREW_HOLDS, "since": since},
            )

    def crew(self, crew_id: str) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            frame = _frame(
                conn,
                "SELECT id, name, department_code, status, ST_X(position) AS lon, ST_Y(position) AS lat, position_at"
                " FROM crews WHERE id = %s",
                (crew_id,),
            )
        return None if frame.empty else dict(frame.iloc[0])


__all__ = ["CaseFile", "CityQueries", "VitalSigns"]
