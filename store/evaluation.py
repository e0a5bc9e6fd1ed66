"""Evaluation (评价) as SQL over the audit log and the recorded SLA breaches; the definitions are in
``domain.evaluation``. One query per call, grouped by department or district, for the API and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from domain.evaluation import EvaluationRow, EvaluationScope, StageFigures
from domain.sla import SlaStage

_GROUP_COLUMN = {EvaluationScope.DEPARTMENT: "department_code", EvaluationScope.DISTRICT: "district_code"}

_QUERY = """
WITH cases AS (
    SELECT id, {group} AS key, created_at, state FROM work_orders
    WHERE created_at >= %(since)s AND created_at < %(until)s AND {group} IS NOT NULL
      AND (%(only)s::text IS NULL OR {group} = %(only)s)
), firsts AS (
    SELECT e.work_order_id,
           min(e.at) FILTER (WHERE e.action = 'accept') AS accepted_at,
           min(e.at) FILTER (WHERE e.action = 'arrive') AS arrived_at,
           min(e.at) FILTER (WHERE e.action = 'resolve') AS resolved_at,
           bool_or(e.action = 'start_verification') AS verified,
           bool_or(e.action = 'fail_verification') AS reopened
    FROM work_order_events e JOIN cases c ON c.id = e.work_order_id
    GROUP BY e.work_order_id
), breached AS (
    SELECT b.work_order_id,
           bool_or(b.stage = 'acknowledge') AS acknowledge, bool_or(b.stage = 'arrive') AS arrive,
           bool_or(b.stage = 'resolve') AS resolve, count(*) AS breaches
    FROM sla_breaches b JOIN cases c ON c.id = b.work_order_id
    GROUP BY b.work_order_id
), joined AS (
    SELECT c.key, c.state,
           extract(epoch FROM f.accepted_at - c.created_at) AS acknowledge_s,
           extract(epoch FROM f.arrived_at - c.created_at) AS arrive_s,
           extract(epoch FROM f.resolved_at - c.created_at) AS resolve_s,
           COALESCE(b.acknowledge, false) AS acknowledge_late, COALESCE(b.arrive, false) AS arrive_late,
           COALESCE(b.resolve, false) AS resolve_late,
           COALESCE(f.verified, false) AS verified, COALESCE(f.reopened, false) AS reopened,
           COALESCE(b.breaches, 0) AS breaches
    FROM cases c LEFT JOIN firsts f ON f.work_order_id = c.id LEFT JOIN breached b ON b.work_order_id = c.id
)
SELECT key, count(*) AS cases,
       count(*) FILTER (WHERE state = 'closed') AS closed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       {stages},
       count(*) FILTER (WHERE verified) AS verified,
       count(*) FILTER (WHERE reopened) AS reopened,
       sum(breaches) AS breaches
FROM joined GROUP BY key ORDER BY key
"""

_STAGE = """
       count({s}_s) AS {s}_reached,
       count(*) FILTER (WHERE {s}_s IS NOT NULL AND NOT {s}_late) AS {s}_on_time,
       count(*) FILTER (WHERE {s}_s IS NOT NULL OR {s}_late) AS {s}_judged,
       avg({s}_s) AS {s}_mean,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY {s}_s) AS {s}_p90"""


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def evaluate(
    conn: psycopg.Connection[Any],
    scope: EvaluationScope,
    *,
    since: datetime,
    until: datetime,
    key: str | None = None,
) -> list[EvaluationRow]:
    """One row per department (or district) with cases registered in ``[since, until)``, by code; ``key`` limits
    it to one. Definitions: ``domain.evaluation``."""
    if until <= since:
        raise ValueError(f"the period must not be empty: since {since.isoformat()} until {until.isoformat()}")
    stages = ",".join(_STAGE.format(s=stage.value) for stage in SlaStage)
    query = sql.SQL(_QUERY.replace("{stages}", stages)).format(group=sql.Identifier(_GROUP_COLUMN[scope]))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, {"since": since, "until": until, "only": key}).fetchall()
    return [
        EvaluationRow(
            scope=scope,
            key=row["key"],
            since=since,
            until=until,
            cases=row["cases"],
            closed=row["closed"],
            cancelled=row["cancelled"],
            closure_rate=_rate(row["closed"], row["cases"] - row["cancelled"]),
            stages={
                stage: StageFigures(
                    reached=row[f"{stage.value}_reached"],
                    on_time_rate=_rate(row[f"{stage.value}_on_time"], row[f"{stage.value}_judged"]),
                    mean_s=_seconds(row[f"{stage.value}_mean"]),
                    p90_s=_seconds(row[f"{stage.value}_p90"]),
                )
                for stage in SlaStage
            },
            reopen_rate=_rate(row["reopened"], row["verified"]),
            breaches=int(row["breaches"]),
        )
        for row in rows
    ]
