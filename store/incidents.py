"""Incidents in PostgreSQL: the projection of the ``incidents`` topic, and the queries that read it back.

The projection (:func:`apply_incident_event`) is idempotent and order-tolerant, because delivery is at least once
and events of related incidents travel on different partitions:

* an event is applied to the incident row only if its ``seq`` is higher than the stored one, so a replay or a
  duplicate changes nothing, and an older event arriving late cannot undo a newer one;
* evidence, the incident's timeline (``incident_events``) and correlation links are append-only inserts that
  ignore what is already there;
* ``parent_id`` is never taken from device events (the device engine does not know it): it comes from
  ``correlated`` events through ``incident_correlations``, where every incident has its parent slot. The child's
  projection and its parent's ``correlated`` event upsert the same slot, so in concurrent transactions one waits
  for the other, and the child gets its parent in whichever order they commit (callers that project in batches
  should retry a batch that PostgreSQL aborts as a deadlock, as with any row-locking writer);
* a person's acknowledgement (``incident_acknowledgements``) outlives engine events that do not know of it yet.

Positions: device incidents take their device's position, composite and correlation incidents the centre of their
grid cell (or district); reported incidents carry their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from domain.categories import Severity
from domain.geo import Position
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind, area_key, format_time
from domain.incidents import Evidence, Incident, IncidentState
from store.work_orders import enqueue

INCIDENT_ACKS_TOPIC = "incident.acks"

_UPSERT = """
INSERT INTO incidents (
    id, rule_id, rule_version, source, category_code, severity, state, title, condition, position,
    grid_cell_code, district_code, parent_id, opened_at, updated_at, cleared_at, closed_at,
    acknowledged_at, acknowledged_by, kind, flapping, seq, detail)
VALUES (
    %(id)s, %(rule_id)s, %(rule_version)s, %(source)s, %(category)s, %(severity)s, %(state)s, %(title)s,
    %(condition)s,
    COALESCE(
        CASE WHEN %(lon)s::float8 IS NULL THEN NULL ELSE ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) END,
        CASE WHEN %(kind)s = 'device' THEN (SELECT position FROM devices WHERE id = %(source)s) END,
        (SELECT ST_Centroid(geom) FROM grid_cells WHERE code = %(grid_cell)s),
        (SELECT ST_PointOnSurface(geom) FROM districts WHERE code = %(district)s)),
    %(grid_cell)s, %(district)s,
    %(parent_id)s,
    %(opened_at)s, %(updated_at)s, %(cleared_at)s, %(closed_at)s,
    COALESCE((SELECT acknowledged_at FROM incident_acknowledgements WHERE incident_id = %(id)s), %(ack_at)s),
    COALESCE((SELECT acknowledged_by FROM incident_acknowledgements WHERE incident_id = %(id)s), %(ack_by)s),
    %(kind)s, %(flapping)s, %(seq)s, %(detail)s)
ON CONFLICT (id) DO UPDATE SET
    severity = EXCLUDED.severity, state = EXCLUDED.state, title = EXCLUDED.title, condition = EXCLUDED.condition,
    rule_version = EXCLUDED.rule_version, updated_at = EXCLUDED.updated_at, cleared_at = EXCLUDED.cleared_at,
    closed_at = EXCLUDED.closed_at,
    acknowledged_at = COALESCE(incidents.acknowledged_at, EXCLUDED.acknowledged_at),
    acknowledged_by = COALESCE(incidents.acknowledged_by, EXCLUDED.acknowledged_by),
    flapping = EXCLUDED.flapping, seq = EXCLUDED.seq, detail = EXCLUDED.detail,
    parent_id = COALESCE(incidents.parent_id, EXCLUDED.parent_id),
    grid_cell_code = COALESCE(EXCLUDED.grid_cell_code, incidents.grid_cell_code),
    district_code = COALESCE(EXCLUDED.district_code, incidents.district_code)
WHERE incidents.seq < EXCLUDED.seq
RETURNING id
"""


def apply_incident_event(conn: psycopg.Connection[Any], event: IncidentEvent) -> bool:
    """Project one incident event in the caller's transaction. True if it was new (not seen before)."""
    incident = event.incident
    # The parent slot first: it serialises this projection with a concurrent `correlated` event naming it.
    slot = conn.execute(
        """
        INSERT INTO incident_correlations (child_id) VALUES (%s)
        ON CONFLICT (child_id) DO UPDATE SET child_id = EXCLUDED.child_id
        RETURNING parent_id
        """,
        (incident.id,),
    ).fetchone()
    params = {
        "parent_id": slot[0] if slot else None,
        "id": incident.id,
        "rule_id": incident.rule_id,
        "rule_version": incident.rule_version,
        "source": incident.source,
        "category": incident.category_code,
        "severity": incident.severity.value,
        "state": incident.state.value,
        "title": incident.title,
        "condition": incident.condition,
        "lon": incident.position.lon if incident.position else None,
        "lat": incident.position.lat if incident.position else None,
        "grid_cell": incident.grid_cell,
        "district": incident.district,
        "opened_at": incident.opened_at,
        "updated_at": incident.updated_at,
        "cleared_at": incident.cleared_at,
        "closed_at": incident.closed_at,
        "ack_at": incident.acknowledged_at,
        "ack_by": incident.acknowledged_by,
        "kind": event.kind.value,
        "flapping": event.flapping,
        "seq": event.seq,
        "detail": event.detail,
    }
    conn.execute(_UPSERT, params)
    with conn.cursor() as cur:
        if incident.evidence:
            cur.executemany(
                """
                INSERT INTO incident_evidence (incident_id, device_id, metric, ts, value) VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING
                """,
                [(incident.id, e.device_id, e.metric, e.ts, e.value) for e in incident.evidence],
            )
        if event.type is IncidentEventType.CORRELATED and event.children:
            cur.executemany(
                """
                INSERT INTO incident_correlations (child_id, parent_id, correlated_at) VALUES (%s, %s, %s)
                ON CONFLICT (child_id) DO UPDATE
                    SET parent_id = EXCLUDED.parent_id, correlated_at = EXCLUDED.correlated_at
                    WHERE incident_correlations.parent_id IS NULL
                """,
                [(child, incident.id, event.at) for child in sorted(event.children)],  # one lock order for all
            )
            cur.execute(
                "UPDATE incidents SET parent_id = %s WHERE id = ANY(%s) AND parent_id IS NULL",
                (incident.id, list(event.children)),
            )
        new = cur.execute(
            """
            INSERT INTO incident_events (incident_id, seq, type, at, severity, state, detail)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (incident_id, seq) DO NOTHING
            RETURNING seq
            """,
            (
                incident.id,
                event.seq,
                event.type.value,
                event.at,
                incident.severity.value,
                incident.state.value,
                event.detail,
            ),
        ).fetchone()
    return new is not None


# --- reading it back ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentRecord:
    """An incident as stored, with what the projection adds to the engine's snapshot."""

    incident: Incident
    kind: IncidentKind
    flapping: bool
    seq: int
    detail: str
    projected_at: datetime
    children: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentTimelineEntry:
    seq: int
    type: IncidentEventType
    at: datetime
    severity: Severity
    state: IncidentState
    detail: str


_SELECT = """
SELECT i.id, i.rule_id, i.rule_version, i.source, i.category_code, i.severity, i.state, i.title, i.condition,
       ST_X(i.position) AS lon, ST_Y(i.position) AS lat, i.grid_cell_code, i.district_code, i.parent_id,
       i.opened_at, i.updated_at, i.cleared_at, i.closed_at, i.acknowledged_at, i.acknowledged_by,
       i.kind, i.flapping, i.seq, i.detail, i.projected_at
FROM incidents i
"""


def _incident(row: dict[str, Any], evidence: Sequence[Evidence] = ()) -> Incident:
    return Incident(
        id=row["id"],
        rule_id=row["rule_id"],
        rule_version=row["rule_version"],
        source=row["source"],
        category_code=row["category_code"],
        severity=Severity(row["severity"]),
        state=IncidentState(row["state"]),
        title=row["title"],
        condition=row["condition"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        position=Position(row["lon"], row["lat"]) if row["lon"] is not None else None,
        grid_cell=row["grid_cell_code"],
        district=row["district_code"],
        parent_id=row["parent_id"],
        cleared_at=row["cleared_at"],
        closed_at=row["closed_at"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        evidence=tuple(evidence),
    )


def _record(row: dict[str, Any], evidence: Sequence[Evidence] = (), children: Sequence[str] = ()) -> IncidentRecord:
    return IncidentRecord(
        incident=_incident(row, evidence),
        kind=IncidentKind(row["kind"]),
        flapping=row["flapping"],
        seq=row["seq"],
        detail=row["detail"],
        projected_at=row["projected_at"],
        children=tuple(children),
    )


def get_incident(conn: psycopg.Connection[Any], incident_id: str) -> IncidentRecord | None:
    """One incident with its evidence (the readings behind it, oldest first) and its children's ids."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + " WHERE i.id = %s", (incident_id,)).fetchone()
        if row is None:
            return None
        evidence = [
            Evidence(device_id=r["device_id"], metric=r["metric"], ts=r["ts"], value=r["value"])
            for r in cur.execute(
                "SELECT device_id, metric, ts, value FROM incident_evidence WHERE incident_id = %s ORDER BY ts, "
                "device_id, metric",
                (incident_id,),
            )
        ]
        children = [
            r["id"]
            for r in cur.execute(
                """
                SELECT id FROM incidents WHERE parent_id = %(id)s
                UNION SELECT child_id FROM incident_correlations WHERE parent_id = %(id)s
                ORDER BY 1
                """,
                {"id": incident_id},
            )
        ]
    return _record(row, evidence, children)


def incident_timeline(conn: psycopg.Connection[Any], incident_id: str) -> list[IncidentTimelineEntry]:
    rows = conn.execute(
        "SELECT seq, type, at, severity, state, detail FROM incident_events WHERE incident_id = %s ORDER BY seq",
        (incident_id,),
    ).fetchall()
    return [
        IncidentTimelineEntry(
            seq=r[0],
            type=IncidentEventType(r[1]),
            at=r[2],
            severity=Severity(r[3]),
            state=IncidentState(r[4]),
            detail=r[5],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentFilter:
    states: Sequence[IncidentState] = ()
    district: str | None = None
    category_code: str | None = None  # a code or a family ("drainage")
    min_severity: Severity | None = None
    top_level_only: bool = False
    since: datetime | None = None
    limit: int = 100
    offset: int = 0


def _where(where: IncidentFilter) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if where.states:
        clauses.append("i.state = ANY(%(states)s)")
        params["states"] = [state.value for state in where.states]
    if where.district:
        clauses.append("i.district_code = %(district)s")
        params["district"] = where.district
    if where.category_code:
        clauses.append("(i.category_code = %(category)s OR i.category_code LIKE %(family)s)")
        params["category"] = where.category_code
        params["family"] = where.category_code + ".%"
    if where.min_severity is not None:
        clauses.append("i.severity = ANY(%(severities)s)")
        params["severities"] = [s.value for s in Severity if s >= where.min_severity]
    if where.top_level_only:
        clauses.append("i.parent_id IS NULL")
    if where.since is not None:
        clauses.append("i.opened_at >= %(since)s")
        params["since"] = where.since
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def list_incidents(conn: psycopg.Connection[Any], where: IncidentFilter = IncidentFilter()) -> list[IncidentRecord]:
    """Newest first, without evidence (ask :func:`get_incident` for one incident's evidence)."""
    condition, params = _where(where)
    params.update(limit=where.limit, offset=where.offset)
    sql = _SELECT + condition + " ORDER BY i.opened_at DESC, i.id LIMIT %(limit)s OFFSET %(offset)s"
    with conn.cursor(row_factory=dict_row) as cur:
        return [_record(row) for row in cur.execute(sql, params)]


def count_incidents(conn: psycopg.Connection[Any], where: IncidentFilter = IncidentFilter()) -> int:
    """How many incidents :func:`list_incidents` would return without its limit and offset."""
    condition, params = _where(where)
    row = conn.execute("SELECT count(*) FROM incidents i" + condition, params).fetchone()  # noqa: S608 - fixed clauses
    return int(row[0]) if row else 0


class IncidentNotFoundError(LookupError):
    pass


class IncidentClosedError(ValueError):
    """A closed incident cannot be acknowledged."""


def acknowledge_incident(
    conn: psycopg.Connection[Any], incident_id: str, *, by: str, at: datetime, note: str = ""
) -> bool:
    """Record a person's acknowledgement and tell the engine (through the outbox) in the caller's transaction.

    True if this was the first acknowledgement; a repeated one changes nothing and tells nothing.
    """
    row = conn.execute(
        "SELECT state, kind, source, grid_cell_code, district_code FROM incidents WHERE id = %s FOR UPDATE",
        (incident_id,),
    ).fetchone()
    if row is None:
        raise IncidentNotFoundError(f"incident {incident_id} does not exist")
    state, kind, source, grid_cell, district = row
    if state == IncidentState.CLOSED.value:
        raise IncidentClosedError(f"incident {incident_id} is closed; it can no longer be acknowledged")
    first = conn.execute(
        """
        INSERT INTO incident_acknowledgements (incident_id, acknowledged_by, acknowledged_at, note)
        VALUES (%s, %s, %s, %s) ON CONFLICT (incident_id) DO NOTHING RETURNING incident_id
        """,
        (incident_id, by, at, note),
    ).fetchone()
    if first is None:
        return False
    conn.execute(
        "UPDATE incidents SET acknowledged_at = %s, acknowledged_by = %s WHERE id = %s AND acknowledged_at IS NULL",
        (at, by, incident_id),
    )
    routing_key = source if kind == IncidentKind.DEVICE.value else area_key(grid_cell, district)
    payload = {
        "incident_id": incident_id,
        "kind": kind,
        "source": source,
        "grid_cell": grid_cell,
        "district": district,
        "by": by,
        "at": format_time(at),
    }
    enqueue(conn, INCIDENT_ACKS_TOPIC, routing_key or incident_id, json.dumps(payload).encode())
    return True
