"""Field crews in PostgreSQL: the roster, each crew's position (history and current), duty and load.

A crew's ``status`` column holds only its duty: ``available`` or ``off_duty``. Whether it is ``busy`` is not
stored but derived when read, from the work orders it is working on (accepted, en route, on site), so it can
never disagree with them whoever moved an order (the dispatcher, the HTTP API, a crew). Its *load* is the number
of orders it holds (dispatched to it and not yet resolved), which crew choice weighs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from domain.geo import Position
from domain.organization import Crew, CrewStatus
from domain.work_orders import WITH_CREW, WorkOrderState

# Orders in these states make their crew busy (it is on the job); a dispatched, not yet accepted order does not.
_WORKING = [WorkOrderState.ACCEPTED.value, WorkOrderState.EN_ROUTE.value, WorkOrderState.ON_SITE.value]
_HOLDING = [state.value for state in WITH_CREW]


class UnknownCrewError(LookupError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewRegistration:
    """A crew to register or update. ``credential_hash`` None keeps the stored credential."""

    crew: Crew
    unit_code: str | None
    credential_hash: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewRecord:
    """A crew as dispatch sees it now: ``crew.status`` is effective (off duty, busy, or available)."""

    crew: Crew
    unit_code: str | None
    open_work_orders: int  # orders it holds: dispatched to it, accepted, en route, on site
    has_credential: bool


@dataclass(frozen=True, slots=True)
class UnitDepot:
    code: str
    department_code: str
    name: str
    depot: Position | None


def register_crews(conn: psycopg.Connection[Any], registrations: Sequence[CrewRegistration]) -> None:
    """Upsert crews in the caller's transaction. A new crew starts at its position (its depot); an existing
    crew keeps its last reported position."""
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO crews (id, department_code, unit_code, name, skills, status, position, position_at,
                               credential_hash)
            VALUES (%(id)s, %(department)s, %(unit)s, %(name)s, %(skills)s, %(status)s,
                    CASE WHEN %(lon)s::float8 IS NULL THEN NULL
                         ELSE ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) END,
                    %(position_at)s, %(hash)s)
            ON CONFLICT (id) DO UPDATE SET department_code = EXCLUDED.department_code,
                unit_code = EXCLUDED.unit_code, name = EXCLUDED.name, skills = EXCLUDED.skills,
                position = COALESCE(crews.position, EXCLUDED.position),
                position_at = COALESCE(crews.position_at, EXCLUDED.position_at),
                credential_hash = COALESCE(EXCLUDED.credential_hash, crews.credential_hash)
            """,
            [
                {
                    "id": r.crew.id,
                    "department": r.crew.department_code,
                    "unit": r.unit_code,
                    "name": r.crew.name,
                    "skills": sorted(r.crew.skills),
                    "status": CrewStatus.OFF_DUTY.value
                    if r.crew.status is CrewStatus.OFF_DUTY
                    else CrewStatus.AVAILABLE.value,
                    "lon": r.crew.position.lon if r.crew.position else None,
                    "lat": r.crew.position.lat if r.crew.position else None,
                    "position_at": r.crew.position_at,
                    "hash": r.credential_hash,
                }
                for r in registrations
            ],
        )


def existing_crew_ids(conn: psycopg.Connection[Any], ids: Iterable[str]) -> set[str]:
    rows = conn.execute("SELECT id FROM crews WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {str(row[0]) for row in rows}


def unit_depots(conn: psycopg.Connection[Any]) -> dict[str, UnitDepot]:
    """The departments' units (loaded from the city pack) with their depots."""
    rows = conn.execute(
        "SELECT code, department_code, name, ST_X(depot), ST_Y(depot) FROM department_units ORDER BY code"
    ).fetchall()
    return {
        str(r[0]): UnitDepot(str(r[0]), str(r[1]), str(r[2]), Position(r[3], r[4]) if r[3] is not None else None)
        for r in rows
    }


_SELECT = """
SELECT c.id, c.department_code, c.unit_code, c.name, c.skills, c.status, ST_X(c.position) AS lon,
       ST_Y(c.position) AS lat, c.position_at, c.credential_hash IS NOT NULL AS has_credential,
       count(w.id) FILTER (WHERE w.state = ANY(%(holding)s)) AS holding,
       count(w.id) FILTER (WHERE w.state = ANY(%(working)s)) AS working
FROM crews c
LEFT JOIN work_orders w ON w.crew_id = c.id AND w.state = ANY(%(holding)s)
"""


def _record(row: dict[str, Any]) -> CrewRecord:
    if row["status"] == CrewStatus.OFF_DUTY.value:
        status = CrewStatus.OFF_DUTY
    elif row["working"]:
        status = CrewStatus.BUSY
    else:
        status = CrewStatus.AVAILABLE
    crew = Crew(
        id=row["id"],
        department_code=row["department_code"],
        name=row["name"],
        skills=frozenset(row["skills"]),
        status=status,
        position=Position(row["lon"], row["lat"]) if row["lon"] is not None else None,
        position_at=row["position_at"],
    )
    return CrewRecord(
        crew=crew,
        unit_code=row["unit_code"],
        open_work_orders=int(row["holding"]),
        has_credential=row["has_credential"],
    )


def list_crews(
    conn: psycopg.Connection[Any], *, department_code: str | None = None, unit_code: str | None = None
) -> list[CrewRecord]:
    """Crews (of a department, or of one unit) with their effective status, position and load, by id."""
    clauses = []
    params: dict[str, Any] = {"holding": _HOLDING, "working": _WORKING}
    if department_code is not None:
        clauses.append("c.department_code = %(department)s")
        params["department"] = department_code
    if unit_code is not None:
        clauses.append("c.unit_code = %(unit)s")
        params["unit"] = unit_code
    sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + " GROUP BY c.id ORDER BY c.id"
    with conn.cursor(row_factory=dict_row) as cur:
        return [_record(row) for row in cur.execute(sql, params)]


def get_crew(conn: psycopg.Connection[Any], crew_id: str) -> CrewRecord | None:
    params = {"holding": _HOLDING, "working": _WORKING, "id": crew_id}
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + " WHERE c.id = %(id)s GROUP BY c.id", params).fetchone()
    return _record(row) if row else None


def record_crew_position(
    conn: psycopg.Connection[Any], crew_id: str, at: datetime, position: Position, work_order_id: str | None = None
) -> bool:
    """Add a position report to the history and move the crew there unless it already reported a later one.

    Redeliveries are the caller's to drop (by message id); two reports of one crew for the same instant (the
    history is keyed by crew and time, to the millisecond on the wire) keep the one applied last.
    """
    conn.execute(
        """
        INSERT INTO crew_positions (ts, crew_id, position, work_order_id)
        VALUES (%s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s)
        ON CONFLICT (crew_id, ts) DO UPDATE SET position = EXCLUDED.position, work_order_id = EXCLUDED.work_order_id
        """,
        (at, crew_id, position.lon, position.lat, work_order_id),
    )
    moved = conn.execute(
        """
        UPDATE crews SET position = ST_SetSRID(ST_MakePoint(%s, %s), 4326), position_at = %s
        WHERE id = %s AND (position_at IS NULL OR position_at <= %s) RETURNING id
        """,
        (position.lon, position.lat, at, crew_id, at),
    ).fetchone()
    return moved is not None


def crew_track(
    conn: psycopg.Connection[Any], crew_id: str, *, since: datetime, until: datetime
) -> list[tuple[datetime, Position, str | None]]:
    """A crew's reported positions in [since, until), oldest first (for drawing its way on a map)."""
    rows = conn.execute(
        """
        SELECT ts, ST_X(position), ST_Y(position), work_order_id FROM crew_positions
        WHERE crew_id = %s AND ts >= %s AND ts < %s ORDER BY ts
        """,
        (crew_id, since, until),
    ).fetchall()
    return [(r[0], Position(r[1], r[2]), r[3]) for r in rows]


def set_crew_duty(conn: psycopg.Connection[Any], crew_id: str, *, on_duty: bool) -> None:
    """Put a crew on or off duty (an off-duty crew is never chosen; the orders it holds stay with it)."""
    status = CrewStatus.AVAILABLE.value if on_duty else CrewStatus.OFF_DUTY.value
    updated = conn.execute("UPDATE crews SET status = %s WHERE id = %s RETURNING id", (status, crew_id)).fetchone()
    if updated is None:
        raise UnknownCrewError(f"crew {crew_id} does not exist")
